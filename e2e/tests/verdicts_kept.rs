//! Verdicts outlive their leader (docs/trust.md, "A new leader resumes the rounds"): on
//! real API servers, an operator verifies an honest provider and catches a liar, then a
//! second operator replaces it. The second one keeps both verdicts from its first status
//! write and challenges no node before the round; a third, with a band changed, drops
//! them and challenges every node at once. A provider deleted and created again under its
//! name gets none of the old one's verdicts or pins.

mod common;
mod opsupport;
mod trustsupport;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use opsupport::Operator;
use trustsupport::{BANDS, bands_with_slack, honest_and_liar, until_verified, verified};

/// A `--verify-interval` whose next round is at least 10 minutes away: none starts during
/// the test, so every challenge it sees is a join (rounds lie on the Unix clock).
fn interval_without_a_round_soon() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let hours = (5..=8)
        .find(|h| h * 3600 - now % (h * 3600) > 600)
        .expect("two round clocks of 5 to 8 hours cannot both be within 10 minutes");
    format!("{hours}h")
}

fn operator(hub: &Client, identity: &str, bands: &std::path::Path, interval: &str) -> Operator {
    Operator::start_with(
        hub.clone(),
        identity,
        &[
            "--challenge-bands".into(),
            bands.display().to_string(),
            "--verify-interval".into(),
            interval.into(),
            "--challenge-timeout".into(),
            "30s".into(),
        ],
    )
}

/// Waits until the honest provider is verified and the liar caught.
async fn both_judged(hub: &Client) {
    let within = Duration::from_secs(90);
    until_verified(hub, "honest", ("True", "ChallengesPassed"), within).await;
    until_verified(hub, "liar", ("False", "ChallengeFailed"), within).await;
}

/// Watches both providers' status every 100 ms until `stop`: every moment the honest one
/// was not `Verified` with its node serving verified-only jobs, or the liar not
/// `ChallengeFailed`.
fn watch_for_flips(hub: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let providers: Api<GpuProvider> = Api::all(hub);
        let mut flips = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            for (name, want) in [("honest", "ChallengesPassed"), ("liar", "ChallengeFailed")] {
                let Ok(p) = providers.get(name).await else {
                    continue;
                };
                let reason = verified(&p).map(|(_, r)| r);
                let nodes = p
                    .status
                    .as_ref()
                    .and_then(|s| s.verification.as_ref())
                    .map_or(0, |v| v.verified_nodes.len());
                let serving = name == "liar" || nodes == 1;
                if reason.as_deref() != Some(want) || !serving {
                    flips.push(format!("{name}: {reason:?}, {nodes} verified nodes"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        flips
    })
}

/// The nonces each member's nodes were asked to answer so far.
fn asked(seen: &[Arc<Mutex<BTreeSet<String>>>; 2]) -> [usize; 2] {
    seen.each_ref().map(|s| s.lock().map_or(0, |s| s.len()))
}

/// Waits until both providers had a heartbeat at least 3 s after `since` (Unix seconds),
/// i.e. the new leader has stepped each a few times.
async fn heartbeats_after(hub: &Client, since: i64) {
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    gpufed_e2e::wait::until(
        "heartbeats of the new leader",
        Duration::from_secs(60),
        || async {
            let mut all = true;
            for name in ["honest", "liar"] {
                let p = providers.get(name).await?;
                let beat = p.status.and_then(|s| s.last_heartbeat_time);
                all &= beat.is_some_and(|b| gpufed_operator::time::parse(&b).is_some_and(|t| t >= since + 3));
            }
            Ok(all.then_some(()))
        },
    )
    .await
    .expect("the new leader probes both providers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_the_verdicts_and_challenges_no_node_before_the_round() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let seen: [Arc<Mutex<BTreeSet<String>>>; 2] = Default::default();
    let Some((env, hub, plugins)) = honest_and_liar("kept", &seen).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bands = dir.path().join("bands.yaml");
    std::fs::write(&bands, BANDS).expect("bands file");
    let interval = interval_without_a_round_soon();

    let first = operator(&hub, "kept-op-1", &bands, &interval);
    both_judged(&hub).await;
    // Both verdicts are in the hub, one record per node, owned by their provider.
    let cms = Api::<ConfigMap>::namespaced(hub.clone(), "gpufed-system");
    for (provider, node) in [("honest", "h-0"), ("liar", "l-0")] {
        let cm = gpufed_e2e::wait::until(
            &format!("{provider}'s kept verdicts"),
            Duration::from_secs(30),
            || async {
                Ok(cms
                    .get_opt(&format!("gpufed-verdicts-{provider}"))
                    .await?
                    .filter(|c| c.data.is_some()))
            },
        )
        .await
        .expect("kept verdicts");
        let data = cm.data.unwrap_or_default();
        let record: serde_json::Value = serde_json::from_str(data.get(node).map_or("", String::as_str))
            .unwrap_or_else(|e| panic!("{provider}: a record for {node}: {e}: {data:?}"));
        let gpus = record["verdicts"].as_array().map_or(0, Vec::len);
        assert_eq!(gpus, 8, "{provider}: {record}");
        let failed = record["verdicts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| !g["failure"].is_null())
            .count();
        assert_eq!(failed, if provider == "liar" { 8 } else { 0 }, "{record}");
        assert_eq!(
            cm.metadata.owner_references.unwrap_or_default()[0].kind,
            "GpuProvider"
        );
    }
    first.stop().await;
    let before = asked(&seen);

    // A new leader: from its first heartbeat on, nothing flips and nobody is asked again.
    let stop = Arc::new(AtomicBool::new(false));
    let flips = watch_for_flips(hub.clone(), stop.clone());
    let since = gpufed_operator::time::now();
    let second = operator(&hub, "kept-op-2", &bands, &interval);
    heartbeats_after(&hub, since).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let flips = flips.await.expect("watcher");
    assert_eq!(
        opsupport::lease_holder(&hub).await.as_deref(),
        Some("kept-op-2"),
        "the second operator leads"
    );
    assert!(
        flips.is_empty(),
        "the verdicts flipped under the new leader: {flips:?}"
    );
    assert_eq!(
        asked(&seen),
        before,
        "a node was challenged again before the round"
    );
    second.stop().await;

    // Bands changed (a wider slack): what the old bands judged says nothing now. Every
    // node is challenged at once; the honest one passes again, the liar fails again.
    let wider = dir.path().join("wider.yaml");
    std::fs::write(&wider, bands_with_slack(90_000)).expect("bands file");
    let third = operator(&hub, "kept-op-3", &wider, &interval);
    gpufed_e2e::wait::until(
        "new challenges under the new bands",
        Duration::from_secs(60),
        || async {
            let now = asked(&seen);
            Ok((now[0] > before[0] && now[1] > before[1]).then_some(()))
        },
    )
    .await
    .expect("every node challenged again");
    both_judged(&hub).await;

    // Deleted and created again under its name: another provider. What the leader knew of
    // the old one does not count for it — its node is challenged again at once, and
    // pinned afresh in a ConfigMap the new one owns.
    let before = asked(&seen);
    let new_uid = recreate(&hub, "honest").await;
    gpufed_e2e::wait::until(
        "the new provider's node challenged",
        Duration::from_secs(60),
        || async { Ok((asked(&seen)[0] > before[0]).then_some(())) },
    )
    .await
    .expect("the new provider's node was never challenged: the old verdicts counted for it");
    until_verified(
        &hub,
        "honest",
        ("True", "ChallengesPassed"),
        Duration::from_secs(90),
    )
    .await;
    gpufed_e2e::wait::until(
        "pins owned by the new provider",
        Duration::from_secs(30),
        || async {
            let cm = cms.get_opt("gpufed-node-keys-honest").await?;
            let owner = cm
                .as_ref()
                .and_then(|c| c.metadata.owner_references.as_ref()?.first().cloned());
            let pinned = cm.and_then(|c| c.data).is_some_and(|d| d.contains_key("h-0"));
            Ok((owner.is_some_and(|o| o.uid == new_uid) && pinned).then_some(()))
        },
    )
    .await
    .expect("the node pinned again for the new owner");
    third.stop().await;
    records_in_shards(&hub).await;
    for p in plugins {
        p.abort();
    }
    drop(env);
}

/// Deletes provider `name` and creates it again with the same spec; the new UID.
async fn recreate(hub: &Client, name: &str) -> String {
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let old = providers.get(name).await.expect("provider");
    providers.delete(name, &Default::default()).await.expect("delete");
    gpufed_e2e::wait::until("the provider gone", Duration::from_secs(30), || async {
        Ok(providers.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .expect("deleted");
    let again = GpuProvider::new(name, old.spec.clone());
    let created = providers
        .create(&kube::api::PostParams::default(), &again)
        .await
        .expect("created again");
    let uid = created.metadata.uid.expect("uid");
    assert_ne!(Some(&uid), old.metadata.uid.as_ref(), "another object");
    uid
}

/// The records of a provider of many nodes, split over several ConfigMaps on a real API
/// server (small shards here), read back whole; shards no longer needed are deleted.
async fn records_in_shards(hub: &Client) {
    use gpufed_operator::verification::{shards, verdicts};
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let spec = providers.get("honest").await.expect("provider").spec;
    let owner = providers
        .create(
            &kube::api::PostParams::default(),
            &GpuProvider::new("large", spec),
        )
        .await
        .expect("provider");
    let records = |n: usize| -> std::collections::BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("node-{i:04}"), format!("{i}:{}", "r".repeat(200))))
            .collect()
    };
    let ns = "gpufed-system";
    let cms = Api::<ConfigMap>::namespaced(hub.clone(), ns);
    let many = records(100);
    verdicts::save(hub, ns, &owner, &many, 4096, &|| true)
        .await
        .expect("saved in shards");
    let first = cms.get("gpufed-verdicts-large").await.expect("shard 0");
    let n = shards::count(&first);
    assert!(n >= 6, "about 22 KB in 4 KiB shards: {n}");
    assert!(
        cms.get_opt(&shards::name("gpufed-verdicts-large", n - 1))
            .await
            .expect("get")
            .is_some()
    );
    assert_eq!(
        verdicts::load(hub, ns, &owner).await.expect("load"),
        many,
        "read back whole"
    );

    let few = records(10);
    verdicts::save(hub, ns, &owner, &few, 4096, &|| true)
        .await
        .expect("saved");
    assert_eq!(verdicts::load(hub, ns, &owner).await.expect("load"), few);
    for i in 1..n {
        let name = shards::name("gpufed-verdicts-large", i);
        let left = cms.get_opt(&name).await.expect("get");
        assert_eq!(left.is_some(), i < shards::split(&few, 4096).len(), "{name}");
    }
}
