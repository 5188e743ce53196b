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
    // The package's directory as cargo gives it at run time: a test binary built in a shared
    // target dir from another checkout still finds this checkout's files.
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
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

/// Log lines of this test process, captured by [`capture_tracing`].
static CAPTURED: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Tee;

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut c) = CAPTURED.lock() {
            c.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a global subscriber at `debug` (what an operator turns on to investigate)
/// that keeps every line in memory for [`captured_logs`], instead of [`init_tracing`].
pub fn capture_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info",
        ))
        .with_ansi(false)
        .with_writer(|| Tee)
        .try_init();
}

/// Everything logged since [`capture_tracing`].
pub fn captured_logs() -> String {
    CAPTURED
        .lock()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .unwrap_or_default()
}

/// The last `n` captured log lines that `keep` selects, for a timeout's panic message.
pub fn log_tail(keep: impl Fn(&str) -> bool, n: usize) -> String {
    let logs = captured_logs();
    // The tests' own API calls share the captured log; only the operator's are wanted.
    let ours = |l: &str| !l.contains("kube_client::client::builder") || l.contains("reconcil");
    let lines: Vec<&str> = logs.lines().filter(|l| ours(l) && keep(l)).collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    // All of it, for what the filter did not foresee (kept after the run).
    if logs.is_empty() {
        return tail;
    }
    let path = std::env::temp_dir().join(format!("gpufed-e2e-captured-{}.log", std::process::id()));
    match std::fs::write(&path, logs.as_bytes()) {
        Ok(()) => format!("{tail}\n(every captured line: {})", path.display()),
        Err(_) => tail,
    }
}

/// The secret material in a kubeconfig: bearer tokens and client keys (base64 and the
/// PEM body lines), each as `(what, needle)`.
pub fn kubeconfig_secrets(path: &std::path::Path) -> Vec<(String, String)> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).expect("kubeconfig");
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let mut out = Vec::new();
    for user in doc["users"].as_array().into_iter().flatten() {
        let u = &user["user"];
        if let Some(t) = u["token"].as_str() {
            out.push(("bearer token".to_owned(), t.to_owned()));
        }
        if let Some(k) = u["client-key-data"].as_str() {
            out.push(("client key (base64)".to_owned(), k.chars().take(48).collect()));
            let pem = base64::engine::general_purpose::STANDARD
                .decode(k)
                .unwrap_or_default();
            for line in String::from_utf8_lossy(&pem)
                .lines()
                .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
            {
                out.push(("client key (PEM)".to_owned(), line.to_owned()));
            }
        }
    }
    out
}

/// Fails naming the secret and where it appeared.
pub fn assert_no_secrets(place: &str, haystack: &str, secrets: &[(String, String)]) {
    for (what, needle) in secrets {
        assert!(!needle.is_empty(), "empty needle for {what}");
        assert!(!haystack.contains(needle.as_str()), "{what} appears in {place}");
    }
}
