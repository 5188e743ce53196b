//! A stand-in for the device plugin of every GPU node of a member cluster, answering the
//! hub's compute challenges (trust crate's CPU reference, claiming H100s, not simulated),
//! honestly or — while its switch says so — with a workload for another nonce (replayed
//! old work). Shared by the verification and trust-slashing e2e tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use gpufed_api::GpuProvider;
use gpufed_api::conditions::{find, types};
use gpufed_trust::protocol::{ChallengeRequest, Computed, answer};
use gpufed_trust::report::{InventoryReport, ReportGpu, sign};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

pub const MODEL: &str = "NVIDIA H100 80GB HBM3";
/// A data-center model's band is an `f64` one (docs/trust.md): the arithmetic travels from
/// the hub's bands through the member's challenge ConfigMap to the node and back in its
/// answer (a node computing `u32` instead would be `NotAnswered`, not verified).
pub const BANDS: &str = r#"
bands:
  - model: NVIDIA H100 80GB HBM3
    params: {rows: 32, depth: 8, cols: 8, samples: 12, arith: f64}
    minKernelMicros: 1000
    maxKernelMicros: 100000
    roundTripSlackMs: 60000
"#;

/// A provider's `Verified` condition as `(status, reason)`.
pub fn verified(p: &GpuProvider) -> Option<(String, String)> {
    let c = find(&p.status.as_ref()?.conditions, types::VERIFIED)?;
    Some((format!("{:?}", c.status), c.reason.clone()))
}

/// [`BANDS`] with another `roundTripSlackMs`.
pub fn bands_with_slack(slack_ms: u64) -> String {
    let bands = BANDS.replace(
        "roundTripSlackMs: 60000",
        &format!("roundTripSlackMs: {slack_ms}"),
    );
    assert_ne!(bands, BANDS, "BANDS states its slack");
    bands
}

/// Plays the device plugin of every GPU node of `member` until aborted: publishes a signed
/// report (8 H100s per node) answering the hub's current request, honestly while `honest`
/// holds, else with a workload for another nonce.
pub fn fake_plugin(member: Client, honest: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    fake_plugin_seeing(member, honest, Arc::default())
}

/// [`fake_plugin`], recording every challenge nonce it was asked to answer in `seen`.
pub fn fake_plugin_seeing(
    member: Client,
    honest: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(member.clone());
        let cms: Api<ConfigMap> = Api::default_namespaced(member.clone());
        let key = SigningKey::from_bytes(&[7; 32]);
        loop {
            let honest = honest.load(Ordering::SeqCst);
            let requests = cms
                .get_opt("gpufed-challenge")
                .await
                .ok()
                .flatten()
                .and_then(|c| c.data)
                .unwrap_or_default();
            for node in nodes
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let Some(name) = node.metadata.name.clone() else {
                    continue;
                };
                let uuids: Vec<String> = (0..8).map(|g| format!("GPU-{name}-{g}")).collect();
                let req: Option<ChallengeRequest> =
                    requests.get(&name).and_then(|t| serde_json::from_str(t).ok());
                if let (Some(r), Ok(mut seen)) = (&req, seen.lock()) {
                    seen.insert(r.nonce.clone());
                }
                let challenge = req.map(|r| {
                    let nonce = if honest {
                        r.nonce.clone()
                    } else {
                        "an-old-nonce".into()
                    };
                    let gpus: Vec<Computed> = uuids
                        .iter()
                        .filter_map(|u| Computed::on_cpu(&nonce, u, &r.params, 5_000))
                        .collect();
                    answer(&r, &gpus)
                });
                let report = InventoryReport {
                    node: name.clone(),
                    nonce: String::new(),
                    issued_at: 1,
                    driver_version: "580.159.04".into(),
                    cuda_version: "13.0".into(),
                    simulated: false,
                    gpus: uuids
                        .iter()
                        .map(|u| ReportGpu {
                            uuid: u.clone(),
                            model: MODEL.into(),
                            memory_mib: 81_559,
                            compute_capability: "9.0".into(),
                            serial: None,
                        })
                        .collect(),
                    challenge,
                };
                let Ok(signed) = sign(report, &key) else { continue };
                let body = serde_json::json!({"metadata": {"annotations": {
                    "gpufed.io/inventory-report": serde_json::to_string(&signed).unwrap_or_default()}}});
                let _ = nodes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The device plugin's own report publisher (`gpufed_device_plugin::node`) for `node` of
/// `member`, in `--simulate` mode with 8 H100s named `GPU-<prefix>-<g>`, signing with the
/// key of seed `[key; 32]`. It polls once at start, then only when its watch of the
/// challenge ConfigMap wakes it: a commitment and an opening can only come in time that
/// way. Send `true` to stop it, then await the handle.
pub fn simulated_publisher(
    member: Client,
    node: String,
    prefix: &str,
    key: u8,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let gpus: String = (0..8)
        .map(|g| {
            format!(
                "  - {{uuid: GPU-{prefix}-{g}, name: {MODEL}, memoryMib: 81559, computeCapability: \"9.0\"}}\n"
            )
        })
        .collect();
    let inv = gpufed_device_plugin::inventory::Inventory::from_simulate_str(&format!("gpus:\n{gpus}"))
        .expect("simulated inventory");
    assert!(inv.simulated);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(gpufed_device_plugin::node::run_publisher(
        gpufed_device_plugin::node::Publisher {
            client: member,
            node,
            namespace: "default".into(),
            inventory: inv,
            key: SigningKey::from_bytes(&[key; 32]),
            every: Duration::from_secs(600),
            pod_resources: None,
        },
        stop_rx,
    ));
    (stop, publisher)
}

/// The mean `gpufed_challenge_round_trip_seconds` of [`MODEL`] in an operator's metrics,
/// and how many commitments it averages: `(mean, count)`.
pub fn mean_round_trip(metrics: &str) -> (f64, f64) {
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "gpufed_challenge_round_trip_seconds_{name}{{model=\"{MODEL}\"}} "
                ))?
                .trim()
                .parse()
                .ok()
            })
            .unwrap_or(0.0)
    };
    let (count, sum) = (sample("count"), sample("sum"));
    (if count > 0.0 { sum / count } else { 0.0 }, count)
}

/// Waits (`within` at most) until all 8 GPUs of `provider` are judged and asserts each is
/// `Simulated` (correct digests, timing not judged, never verified); its `Verified`
/// condition says `NotVerified`.
pub async fn all_eight_simulated(hub: &Client, provider: &str, within: Duration) {
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let v = gpufed_e2e::wait::until("simulated GPUs judged", within, || async {
        let p = providers.get(provider).await?;
        let v = p.status.and_then(|s| s.verification);
        Ok(v.filter(|v| v.failed_gpus == 8))
    })
    .await
    .expect("the challenge completes");
    assert_eq!(v.verified_gpus, 0);
    assert!(
        v.failures.iter().all(|f| f.reason == "Simulated"),
        "correct digests, but simulated: {:?}",
        v.failures
    );
    let p = providers.get(provider).await.expect("provider");
    assert_eq!(verified(&p), Some(("False".into(), "NotVerified".into())));
}

/// Waits (`within` at most) until `name`'s `Verified` condition is `want` = (status,
/// reason); the provider then.
pub async fn until_verified(hub: &Client, name: &str, want: (&str, &str), within: Duration) -> GpuProvider {
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    gpufed_e2e::wait::until(&format!("{name} Verified={want:?}"), within, || async {
        let p = providers.get(name).await?;
        Ok((verified(&p) == Some((want.0.into(), want.1.into()))).then_some(p))
    })
    .await
    .expect("provider reaches the expected Verified condition")
}

/// A federation `name` of two members, `honest` and `liar` (one NVLink H100 node each,
/// `h-0` and `l-0`), registered as providers with the liar cheaper (without verification
/// it would win every job), each played by [`fake_plugin_seeing`] (honest, and replaying
/// old work) recording the nonces its nodes were asked in `seen[0]` and `seen[1]`. `None`
/// (having said SKIPPED) without the harness' own control planes.
pub async fn honest_and_liar(
    name: &str,
    seen: &[Arc<Mutex<BTreeSet<String>>>; 2],
) -> Option<(gpufed_e2e::TestEnv, Client, Vec<tokio::task::JoinHandle<()>>)> {
    use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
    let spec = FederationSpec::new(name)
        .member("honest", vec![GpuPool::h100_nvlink("h", 1)])
        .member("liar", vec![GpuPool::h100_nvlink("l", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return None;
    };
    let hub = env.hub_client().await.expect("hub");
    crate::opsupport::setup(fed, &hub, &[("honest", "2.00"), ("liar", "1.00")]).await;
    let mut plugins = Vec::new();
    for (i, (member, honest)) in [("honest", true), ("liar", false)].into_iter().enumerate() {
        let client = fed
            .cluster(member)
            .expect("member")
            .client()
            .await
            .expect("client");
        plugins.push(fake_plugin_seeing(
            client,
            Arc::new(AtomicBool::new(honest)),
            seen[i].clone(),
        ));
    }
    Some((env, hub, plugins))
}
