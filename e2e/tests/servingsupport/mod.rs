//! The serving test's vocabulary: the `llm` service's manifest, its status, replicas,
//! revisions and hub endpoints; its rollout phases are [`rollouts`].

pub mod rollouts;

use std::process::Command;
use std::time::Duration;

use gpufed_api::ComputeService;
use gpufed_api::serving::LABEL_SERVICE;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use crate::opsupport::object_until;

pub fn manifest(replicas: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm"},
        "spec": {"replicas": replicas, "gpusPerReplica": 1, "maxPricePerGpuHour": "1.00",
                 "port": {"port": 8000, "type": "NodePort"},
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 2},
                 "placement": {"verifiedOnly": false},
                 "template": {"spec": {"containers": [{"name": "server", "image": "registry.example.com/vllm:1"}]}}}
    })
}

/// The service `llm`'s ControllerRevisions (its revision history).
pub async fn service_revisions(api: &Api<ControllerRevision>) -> Vec<ControllerRevision> {
    let selector = format!("{LABEL_SERVICE}=llm");
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("revisions")
        .items
}

/// Revision numbers, in order.
pub fn numbers(revs: &[ControllerRevision]) -> Vec<i64> {
    let mut n: Vec<i64> = revs.iter().map(|r| r.revision).collect();
    n.sort_unstable();
    n
}

pub fn status(s: &ComputeService) -> gpufed_api::ComputeServiceStatus {
    s.status.clone().unwrap_or_default()
}

/// Ready replicas per provider, sorted.
pub fn ready_on(s: &ComputeService) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in status(s).replica_status.iter().filter(|r| r.ready) {
        *counts.entry(r.provider.clone().unwrap_or_default()).or_default() += 1;
    }
    counts.into_iter().collect()
}

pub async fn until(
    hub: &Client,
    ns: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ComputeService) -> bool,
) -> ComputeService {
    object_until(hub, ns, "llm", what, timeout, pred).await
}

/// The addresses behind the hub Service.
pub async fn hub_endpoints(hub: &Client, ns: &str) -> Vec<String> {
    let ep = Api::<Endpoints>::namespaced(hub.clone(), ns)
        .get_opt("llm")
        .await
        .expect("endpoints readable");
    let mut out: Vec<String> = ep
        .and_then(|e| e.subsets)
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let port = s.ports.as_ref().and_then(|p| p.first()).map_or(0, |p| p.port);
            s.addresses
                .unwrap_or_default()
                .into_iter()
                .map(move |a| format!("{}:{port}", a.ip))
        })
        .collect();
    out.sort();
    out
}

pub fn ready_addresses(s: &ComputeService) -> Vec<String> {
    let mut a: Vec<String> = status(s)
        .replica_status
        .iter()
        .filter(|r| r.ready)
        .filter_map(|r| r.address.clone())
        .collect();
    a.sort();
    a
}

pub fn kubectl_scale(kubeconfig: &std::path::Path, ns: &str, replicas: u32) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns, "scale", "computeservice/llm"])
        .arg(format!("--replicas={replicas}"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl scale failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The running serving pod of a replica in a member.
pub async fn serving_pod(member: &Client, replica: &str) -> Pod {
    let pods = Api::<Pod>::all(member.clone())
        .list(&ListParams::default().labels(&format!("gpufed.io/job-name={replica}")))
        .await
        .expect("pods");
    pods.items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .expect("the replica's pod")
}

/// The most replica jobs live at once (not retired, not finished, not deleted), sampled
/// every 100 ms until `done`.
pub async fn live_replicas_peak(
    jobs: Api<gpufed_api::ComputeJob>,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> usize {
    use gpufed_api::job_status::JobPhase;
    let selector = ListParams::default().labels(&format!("{LABEL_SERVICE}=llm"));
    let mut peak = 0;
    while !*done.borrow() {
        if let Ok(list) = jobs.list(&selector).await {
            let live = list
                .items
                .iter()
                .filter(|j| !j.spec.suspend && j.metadata.deletion_timestamp.is_none())
                .filter(|j| {
                    !matches!(
                        j.status.as_ref().and_then(|s| s.phase),
                        Some(JobPhase::Succeeded | JobPhase::Failed)
                    )
                })
                .count();
            peak = peak.max(live);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), done.changed()).await;
    }
    peak
}
