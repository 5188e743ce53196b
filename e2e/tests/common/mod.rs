//! Helpers shared by the e2e test binaries.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Tests in one binary run one at a time: each starts its own control planes, and the
/// machine may have only two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Logs to the test output (`RUST_LOG` to change the filter).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Creates a namespace with a unique name (so tests can share an external cluster).
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("{prefix}-{}-{nanos}", std::process::id());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// A pod with one container asking for `gpus` of the simulated GPU resource.
pub fn gpu_pod(name: &str, gpus: u32, annotations: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "trainer",
                "image": "example.invalid/trainer:1",
                "resources": { "limits": { gpufed_e2e::nodesim::DEFAULT_GPU_RESOURCE: gpus.to_string() } },
            }],
        },
    }))
    .expect("pod JSON")
}
