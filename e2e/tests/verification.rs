//! GPU verification end to end on real API servers: the operator challenges every GPU
//! node through each member's `gpufed-challenge` ConfigMap and reads the answers from the
//! nodes' signed reports. The test plays each node's device plugin with the trust crate's
//! CPU reference (claiming H100s, not `--simulate`, so the hub's checks are what decides):
//! an honest provider verifies; a provider replaying old work is caught (ChallengeFailed),
//! gets no new jobs, and a `verifiedOnly` job lands on the honest one.

mod common;
mod opsupport;
mod trustsupport;

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gpufed_api::GpuProvider;
use gpufed_api::conditions::{find, types};
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use opsupport::{Operator, job, job_until, submit};
use trustsupport::{BANDS, MODEL, fake_plugin_seeing, honest_and_liar, until_verified, verified};

/// Submits a job of one 2-GPU H100 worker that requires verified GPUs.
async fn submit_verified_only(hub: &kube::Client, name: &str) {
    let models = serde_json::json!({"models": [MODEL.replace(' ', "-")]});
    let mut j = job(name, 1, 2, models, "5.00", 2);
    j["spec"]["placement"]["verifiedOnly"] = true.into();
    submit(hub, "default", &j).await;
}

/// Waits (90 s at most) until the job is placed; its provider.
async fn placed_on(hub: &kube::Client, name: &str) -> Option<String> {
    let placed = job_until(hub, "default", name, "placed", Duration::from_secs(90), |j| {
        j.status.as_ref().and_then(|s| s.placement.as_ref()).is_some()
    })
    .await;
    placed.status.and_then(|s| s.placement).map(|p| p.provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_providers_verify_and_liars_are_caught() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // The liar is cheaper: without verification it would win every job.
    let Some((env, hub, plugins)) = honest_and_liar("verify", &Default::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bands = dir.path().join("bands.yaml");
    std::fs::write(&bands, BANDS).expect("bands file");
    let op = Operator::start_with(
        hub.clone(),
        "verify-op",
        &[
            "--challenge-bands".into(),
            bands.display().to_string(),
            "--verify-interval".into(),
            "30s".into(),
            "--challenge-timeout".into(),
            "30s".into(),
        ],
    );
    let honest = until_verified(
        &hub,
        "honest",
        ("True", "ChallengesPassed"),
        Duration::from_secs(90),
    )
    .await;
    let st = honest.status.expect("status");
    let v = st.verification.expect("verification");
    assert_eq!((v.verified_gpus, v.failed_gpus), (8, 0), "{v:?}");
    assert_eq!(
        v.verified_nodes.len(),
        1,
        "its one node serves verified-only jobs: {v:?}"
    );
    assert!(
        st.reputation
            .is_some_and(|r| r.score.parse::<f64>().is_ok_and(|s| s > 50.0))
    );
    // Each node's key is pinned in the hub at first sight (a new leader holds nodes to it).
    let pins = Api::<ConfigMap>::namespaced(hub.clone(), "gpufed-system")
        .get("gpufed-node-keys-honest")
        .await
        .expect("the honest provider's pinned node keys");
    let pinned = pins.data.unwrap_or_default();
    assert_eq!(pinned.len(), 1, "one node, one key: {pinned:?}");
    assert!(
        pinned.values().all(|k| k.len() == 44),
        "base64 ed25519 keys: {pinned:?}"
    );
    assert_eq!(
        pins.metadata.owner_references.unwrap_or_default()[0].kind,
        "GpuProvider",
        "goes with its provider"
    );
    let liar = until_verified(
        &hub,
        "liar",
        ("False", "ChallengeFailed"),
        Duration::from_secs(90),
    )
    .await;
    let v = liar.status.expect("status").verification.expect("verification");
    assert_eq!(v.verified_gpus, 0);
    assert_eq!(v.failed_gpus, 8);
    assert!(v.verified_nodes.is_empty(), "{v:?}");
    assert!(
        v.failures
            .iter()
            .all(|f| f.reason == "WrongDigest" || f.reason == "BadOpening"),
        "{:?}",
        v.failures
    );
    // A verified-only job, cheaper on the liar: it must land on the honest provider.
    submit_verified_only(&hub, "needs-real-gpus").await;
    assert_eq!(
        placed_on(&hub, "needs-real-gpus").await.as_deref(),
        Some("honest")
    );
    // The challenge ConfigMap holds only open sessions; the nodes' requests were written
    // by the operator's field manager.
    let member = env
        .federation()
        .and_then(|f| f.cluster("honest"))
        .expect("honest")
        .client()
        .await
        .expect("client");
    let cm = Api::<ConfigMap>::default_namespaced(member)
        .get("gpufed-challenge")
        .await
        .expect("challenge ConfigMap");
    let managers: Vec<String> = cm
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, vec!["gpufed-operator".to_owned()]);
    for p in plugins {
        p.abort();
    }
    op.stop().await;
    drop(env);
}

/// The device plugin's own publisher (in `--simulate` mode) answers the hub's challenges
/// over the real API servers, woken by its watch of the challenge ConfigMap (it would
/// poll only every 10 minutes): the hub checks every digest (a wrong one would be
/// `WrongDigest`) and still never counts a simulated GPU as verified. Between two 5 s
/// heartbeats the hub reads only the nodes' reports, from its watch of the member's nodes
/// (`kind="watched"` probes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_plugin_answers_challenges_and_simulated_gpus_never_verify() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("verify-sim").member("sim", vec![GpuPool::h100_nvlink("s", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    opsupport::setup(fed, &hub, &[]).await;
    let member = fed.cluster("sim").expect("sim").client().await.expect("client");
    let node = GpuPool::h100_nvlink("s", 1).node_names()[0].clone();
    let (stop, publisher) = trustsupport::simulated_publisher(member, node, "sim", 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let bands = dir.path().join("bands.yaml");
    std::fs::write(&bands, BANDS).expect("bands file");
    let admin = opsupport::free_admin_addr();
    let op = Operator::start_tuned(
        hub.clone(),
        "verify-sim-op",
        &[("--heartbeat-interval", "5s")],
        &[
            "--challenge-bands".into(),
            bands.display().to_string(),
            "--admin-addr".into(),
            admin.to_string(),
        ],
    );
    trustsupport::all_eight_simulated(&hub, "sim", Duration::from_secs(60)).await;
    let metrics = opsupport::reqwest_metrics(admin).await;
    let probes = |kind: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("gpufed_member_probes_total{{kind=\"{kind}\"}} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    // The member's node watch is current here, so the reports come from it (`watched`),
    // not from a list of the nodes (`reports`, the fallback).
    assert!(
        probes("watched") >= 1 && probes("whole") >= 1,
        "reports-only probes while the challenge was open, whole ones each heartbeat: {}",
        opsupport::lines_with(&metrics, "member_probes")
    );
    // Every commitment's round trip as the hub saw it, for sizing a band's slack.
    let (mean, count) = trustsupport::mean_round_trip(&metrics);
    assert!(
        count >= 1.0 && mean >= 0.0,
        "the commitment's round trip is exported: {}",
        opsupport::lines_with(&metrics, "round_trip")
    );
    eprintln!("challenge round trip, push mode, the plugin's own publisher: {mean:.3} s (mean of {count})");
    let _ = stop.send(true);
    let _ = publisher.await;
    op.stop().await;
    drop(env);
}

/// `--verify-before-start`: a `verifiedOnly` job submitted when its node last passed a
/// challenge longer ago than that waits, says why, and runs there once the node has passed
/// a new challenge — which the job's arrival started, long before the node was due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_only_job_starts_only_after_a_fresh_challenge() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("verify-fresh").member("honest", vec![GpuPool::h100_nvlink("f", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    opsupport::setup(fed, &hub, &[("honest", "2.00")]).await;
    let member = fed
        .cluster("honest")
        .expect("honest")
        .client()
        .await
        .expect("client");
    let nonces = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let plugin = fake_plugin_seeing(member, Arc::new(AtomicBool::new(true)), nonces.clone());
    let seen = || nonces.lock().map(|n| n.len()).unwrap_or(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let bands = dir.path().join("bands.yaml");
    std::fs::write(&bands, BANDS).expect("bands file");
    // Challenged hourly (the default): only a job can make a second challenge happen here.
    let op = Operator::start_with(
        hub.clone(),
        "verify-fresh-op",
        &[
            "--challenge-bands".into(),
            bands.display().to_string(),
            "--verify-before-start".into(),
            "4s".into(),
        ],
    );
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    gpufed_e2e::wait::until("honest verified", Duration::from_secs(90), || async {
        let p = providers.get("honest").await?;
        Ok((verified(&p) == Some(("True".into(), "ChallengesPassed".into()))).then_some(()))
    })
    .await
    .expect("the honest provider verifies");
    let first = seen();
    assert!(first >= 1, "the first challenge was seen");
    // Let the pass grow older than --verify-before-start.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(seen(), first, "nothing else is due for an hour");
    submit_verified_only(&hub, "needs-fresh-gpus").await;
    let waiting = job_until(
        &hub,
        "default",
        "needs-fresh-gpus",
        "waiting for the node's new challenge",
        Duration::from_secs(30),
        |j| {
            let placed = j.status.as_ref().and_then(|s| find(&s.conditions, types::PLACED));
            placed.is_some_and(|c| {
                c.reason == "AwaitingVerification" && c.message.contains("passes a new challenge")
            })
        },
    )
    .await;
    assert!(waiting.status.and_then(|s| s.placement).is_none());
    assert_eq!(
        placed_on(&hub, "needs-fresh-gpus").await.as_deref(),
        Some("honest")
    );
    assert!(
        seen() > first,
        "the node was challenged again before the job was placed"
    );
    plugin.abort();
    op.stop().await;
    drop(env);
}
