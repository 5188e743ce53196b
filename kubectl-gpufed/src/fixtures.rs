//! Test fixtures: objects as the operator writes them.
#![allow(clippy::unwrap_used)]

use gpufed_api::provider::GpuProviderStatus;
use gpufed_api::{ComputeJob, GpuProvider};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z, the creation time of every fixture.
pub const T0: i64 = 1_767_225_600;
/// [`T0`] as text.
pub const T0_TEXT: &str = "2026-01-01T00:00:00Z";

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": T0_TEXT})
}

/// A job of 2 workers × 4 GPUs at most 2.50 per GPU-hour, with `status` as given.
pub fn job(name: &str, namespace: &str, status: Option<Value>) -> ComputeJob {
    let mut v = json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "generation": 1, "creationTimestamp": T0_TEXT},
        "spec": {"workers": 2, "gpusPerWorker": 4, "maxPricePerGpuHour": "2.50",
                 "template": {"spec": {"containers": [{"name": "worker", "image": "x"}]}}}
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).unwrap()
}

/// A settlement transaction's signature.
pub const SIG: &str =
    "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";

/// A running job that failed over: attempt 1 lost with provider-a (7200 GPU-seconds at
/// 2.5), attempt 2 live on provider-b at 1.8 (3600 so far); 3 of 4 records settled (5).
pub fn failed_over(name: &str, namespace: &str) -> ComputeJob {
    job(
        name,
        namespace,
        Some(json!({
            "phase": "Running",
            "attempts": [{"attempt": 1, "provider": "provider-a", "outcome": "ProviderLost",
                          "message": "provider heartbeat lost", "gpuSeconds": 7200,
                          "pricePerGpuHour": "2.5", "endTime": "2026-01-01T01:00:00Z"}],
            "placement": {"attempt": 2, "provider": "provider-b", "gpus": 8, "pricePerGpuHour": "1.8",
                          "workers": [], "placedTime": "2026-01-01T01:05:00Z"},
            "usage": {"gpuSeconds": 10800, "cost": "6.8"},
            "billing": {"records": 4, "settledRecords": 3, "settledAmount": "5", "signatures": [SIG]},
        })),
    )
}

/// Ready, reachable and verified, with `total` H100s (8 per NVLink node) of which
/// `free` are free, heartbeat at [`T0`].
pub fn ready_h100_status(free: u32, total: u32) -> GpuProviderStatus {
    serde_json::from_value(json!({
        "conditions": [
            cond("Ready", "True", "Serving", "free"),
            cond("Reachable", "True", "Connected", "answers"),
            cond("Verified", "True", "Verified", ""),
        ],
        "lastHeartbeatTime": T0_TEXT,
        "inventory": {"nodes": total.div_ceil(8), "gpus": total, "allocatable": free, "models": [
            {"model": "NVIDIA-H100-80GB-HBM3", "memoryMib": 81559, "computeCapability": "9.0",
             "count": total, "allocatable": free, "largestNvlinkDomain": 8}
        ]},
        "verification": {"verifiedGpus": 6, "failedGpus": 2, "failures": [],
                         "verifiedNodes": (0..total.div_ceil(8)).map(|i| format!("node-{i}")).collect::<Vec<_>>()},
        "reputation": {"score": "92.5", "jobsCompleted": 10, "jobsFailedByProvider": 1},
    }))
    .unwrap()
}

/// Like [`ready_h100_status`] but with RTX 4090s (24 GiB, 8.9, no NVLink) on 2 nodes.
pub fn ready_rtx_status(free: u32, total: u32) -> GpuProviderStatus {
    let mut st = ready_h100_status(free, total);
    let inv = st.inventory.as_mut().unwrap();
    inv.nodes = 2;
    inv.models[0].model = "NVIDIA-GeForce-RTX-4090".into();
    inv.models[0].memory_mib = 24_564;
    inv.models[0].compute_capability = "8.9".into();
    inv.models[0].largest_nvlink_domain = 1;
    st
}

/// A provider in `eu-west` selling H100s at 2.5 and A100s at 1.2.
pub fn provider(name: &str, status: Option<GpuProviderStatus>) -> GpuProvider {
    let mut p: GpuProvider = serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": name, "generation": 1, "creationTimestamp": T0_TEXT},
        "spec": {"kubeconfigSecretRef": {"namespace": "gpufed-system", "name": format!("{name}-kubeconfig")},
                 "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu-west",
                 "prices": [{"model": "NVIDIA-H100-80GB-HBM3", "pricePerGpuHour": "2.5"},
                            {"model": "NVIDIA-A100-SXM4-40GB", "pricePerGpuHour": "1.2"}]}
    }))
    .unwrap();
    p.status = status;
    p
}
