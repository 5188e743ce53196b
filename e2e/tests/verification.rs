//! GPU verification end to end on real API servers: the operator challenges every GPU
//! node through each member's `gpufed-challenge` ConfigMap and reads the answers from the
//! nodes' signed reports. The test plays each node's device plugin with the trust crate's
//! CPU reference (claiming H100s, not `--simulate`, so the hub's checks are what decides):
//! an honest provider verifies; a provider replaying old work is caught (ChallengeFailed),
//! gets no new jobs, and a `verifiedOnly` job lands on the honest one.

mod common;
mod opsupport;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use gpufed_api::GpuProvider;
use gpufed_api::conditions::{find, types};
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use gpufed_trust::protocol::{ChallengeRequest, Computed, answer};
use gpufed_trust::report::{InventoryReport, ReportGpu, sign};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use opsupport::{Operator, job, job_until, submit};

const MODEL: &str = "NVIDIA H100 80GB HBM3";
const BANDS: &str = r#"
bands:
  - model: NVIDIA H100 80GB HBM3
    params: {rows: 32, depth: 8, cols: 8, samples: 12}
    minKernelMicros: 1000
    maxKernelMicros: 100000
    roundTripSlackMs: 60000
"#;

/// Plays the device plugin of every GPU node of a member until dropped: publishes a signed
/// report (8 H100s per node) answering the hub's current request. A liar answers with a
/// workload computed for another nonce (replayed old work).
fn fake_plugin(member: Client, honest: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(member.clone());
        let cms: Api<ConfigMap> = Api::default_namespaced(member.clone());
        let key = SigningKey::from_bytes(&[if honest { 1 } else { 2 }; 32]);
        loop {
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

fn verified(p: &GpuProvider) -> Option<(String, String)> {
    let c = find(&p.status.as_ref()?.conditions, types::VERIFIED)?;
    Some((format!("{:?}", c.status), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_providers_verify_and_liars_are_caught() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("verify")
        .member("honest", vec![GpuPool::h100_nvlink("h", 1)])
        .member("liar", vec![GpuPool::h100_nvlink("l", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    // The liar is cheaper: without verification it would win every job.
    opsupport::setup(fed, &hub, &[("honest", "2.00"), ("liar", "1.00")]).await;
    let plugins = [
        fake_plugin(
            fed.cluster("honest")
                .expect("honest")
                .client()
                .await
                .expect("client"),
            true,
        ),
        fake_plugin(
            fed.cluster("liar").expect("liar").client().await.expect("client"),
            false,
        ),
    ];
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
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let wait = |name: &'static str, want: (&'static str, &'static str)| {
        let providers = providers.clone();
        async move {
            gpufed_e2e::wait::until(
                &format!("{name} Verified={want:?}"),
                Duration::from_secs(90),
                || async {
                    let p = providers.get(name).await?;
                    Ok((verified(&p) == Some((want.0.into(), want.1.into()))).then_some(p))
                },
            )
            .await
            .expect("provider reaches the expected Verified condition")
        }
    };
    let honest = wait("honest", ("True", "ChallengesPassed")).await;
    let st = honest.status.expect("status");
    let v = st.verification.expect("verification");
    assert_eq!((v.verified_gpus, v.failed_gpus), (8, 0), "{v:?}");
    assert!(
        st.reputation
            .is_some_and(|r| r.score.parse::<f64>().is_ok_and(|s| s > 50.0))
    );
    let liar = wait("liar", ("False", "ChallengeFailed")).await;
    let v = liar.status.expect("status").verification.expect("verification");
    assert_eq!(v.verified_gpus, 0);
    assert_eq!(v.failed_gpus, 8);
    assert!(
        v.failures
            .iter()
            .all(|f| f.reason == "WrongDigest" || f.reason == "BadOpening"),
        "{:?}",
        v.failures
    );
    // A verified-only job, cheaper on the liar: it must land on the honest provider.
    let mut j = job(
        "needs-real-gpus",
        1,
        2,
        serde_json::json!({"models": [MODEL.replace(' ', "-")]}),
        "5.00",
        2,
    );
    j["spec"]["placement"]["verifiedOnly"] = true.into();
    submit(&hub, "default", &j).await;
    let placed = job_until(
        &hub,
        "default",
        "needs-real-gpus",
        "placed",
        Duration::from_secs(60),
        |j| j.status.as_ref().and_then(|s| s.placement.as_ref()).is_some(),
    )
    .await;
    assert_eq!(
        placed
            .status
            .and_then(|s| s.placement)
            .map(|p| p.provider)
            .as_deref(),
        Some("honest")
    );
    // The challenge ConfigMap holds only open sessions; the nodes' requests were written
    // by the operator's field manager.
    let member = fed
        .cluster("honest")
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
