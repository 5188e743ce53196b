//! Helpers of `tests/cli.rs`: running the built binary, and the hub with the objects the
//! test starts from (a namespace, two providers with the status the operator would write).
#![allow(clippy::unwrap_used, dead_code)]

pub mod chain;
pub mod drain;
pub mod history;
pub mod rollout;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_e2e::crds::install_crds;
use gpufed_e2e::{FederationSpec, TestEnv};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kubectl-gpufed");
/// A valid payout wallet.
pub const WALLET: &str = "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP";
/// A valid settlement signature.
pub const SIG: &str =
    "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";

/// Now, whole seconds, RFC 3339.
pub fn now_text() -> String {
    k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
        .unwrap()
        .to_string()
}

/// A condition as the operator writes it.
pub fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": now_text()})
}

/// The binary with `--kubeconfig` and `args`, blind to the caller's KUBECONFIG.
pub fn command(kubeconfig: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    c
}

/// Runs the binary to completion.
pub async fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    command(kubeconfig, args).output().await.unwrap()
}

/// Bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
pub async fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = run(kubeconfig, args).await;
    assert!(
        out.status.success(),
        "kubectl-gpufed {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must fail with exit code 1; returns its stderr.
pub async fn fails(kubeconfig: &Path, args: &[&str]) -> String {
    let out = run(kubeconfig, args).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "kubectl-gpufed {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// JSON from a command's stdout.
pub async fn ok_json(kubeconfig: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(kubeconfig, args).await).unwrap()
}

/// Writes `status` through the job's status subresource, as the operator does.
pub async fn set_job_status(client: &Client, ns: &str, name: &str, status: Value) {
    Api::<ComputeJob>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

/// Attempt 2 of a 2 × 4 gang on `provider` at 1.8.
pub fn placement(provider: &str) -> Value {
    json!({"attempt": 2, "provider": provider, "gpus": 8, "pricePerGpuHour": "1.8",
           "workers": [{"rank": 0, "node": "n0"}, {"rank": 1, "node": "n0"}], "placedTime": now_text()})
}

/// The field managers of an object.
pub fn managers(meta: &kube::api::ObjectMeta) -> Vec<String> {
    meta.managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect()
}

pub fn h100_status(ready: bool) -> Value {
    let (status, reason, message) = if ready {
        ("True", "Serving", "8 of 8 GPUs free")
    } else {
        ("False", "HeartbeatLost", "no heartbeat for longer than 2m")
    };
    json!({
        "conditions": [cond("Ready", status, reason, message), cond("Reachable", status, reason, message),
                       cond("Verified", "True", "Verified", "")],
        "lastHeartbeatTime": now_text(),
        "inventory": {"nodes": 1, "gpus": 8, "allocatable": 8, "models": [
            {"model": "NVIDIA-H100-80GB-HBM3", "memoryMib": 81559, "computeCapability": "9.0",
             "count": 8, "allocatable": 8, "largestNvlinkDomain": 8}]},
        "verification": {"verifiedGpus": 8, "failedGpus": 0, "failures": [], "verifiedNodes": ["gpu-0"]},
        "reputation": {"score": "90", "jobsCompleted": 3, "jobsFailedByProvider": 0},
    })
}

pub async fn provider(client: &Client, name: &str, status: Value) {
    let api = Api::<GpuProvider>::all(client.clone());
    let p: GpuProvider = serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider", "metadata": {"name": name},
        "spec": {"kubeconfigSecretRef": {"namespace": "gpufed-system", "name": name},
                 "payoutWallet": WALLET, "region": "eu-west",
                 "prices": [{"model": "NVIDIA-H100-80GB-HBM3", "pricePerGpuHour": "2.5"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// A number that differs between runs, so names do not clash on a shared external cluster.
fn unique() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100_000)
        .unwrap_or(0)
}

/// The hub the test talks to and what it put there.
pub struct Hub {
    /// Keeps the control plane up.
    pub env: TestEnv,
    /// The hub's admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// A client for setup and for playing the operator.
    pub client: Client,
    /// The test's namespace.
    pub ns: String,
    /// A Ready provider with 8 free H100s at 2.5.
    pub good: String,
    /// A provider whose heartbeat is lost.
    pub lost: String,
    /// Scratch directory (kubeconfig variants).
    pub dir: PathBuf,
}

impl Hub {
    /// Starts the hub (or uses `GPUFED_E2E_KUBECONFIG`), installs the CRDs, creates the
    /// namespace and the two providers.
    pub async fn start() -> Self {
        let env = TestEnv::start(FederationSpec::new("kplugin"))
            .await
            .expect("hub starts");
        let kubeconfig = match &env {
            TestEnv::Local(f) => f.hub().kubeconfig().to_owned(),
            TestEnv::External { kubeconfig } => kubeconfig.clone(),
        };
        let client = env.hub_client().await.unwrap();
        // The package's directory as cargo gives it at run time: a test binary built in a shared
        // target dir from another checkout still finds this checkout's files.
        let crds = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../crds");
        install_crds(&client, &crds, Duration::from_secs(60))
            .await
            .expect("CRDs install");
        let suffix = format!("{}-{}", std::process::id(), unique());
        let ns = format!("kplugin-{suffix}");
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        let (good, lost) = (format!("kp-fits-{suffix}"), format!("kp-lost-{suffix}"));
        provider(&client, &good, h100_status(true)).await;
        provider(&client, &lost, h100_status(false)).await;
        let dir = std::env::temp_dir().join(format!("kplugin-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            env,
            kubeconfig,
            client,
            ns,
            good,
            lost,
            dir,
        }
    }

    /// The hub kubeconfig.
    pub fn k(&self) -> &Path {
        &self.kubeconfig
    }

    /// `submit NAME` of a 2 × 4 H100 NVLink gang limited to the test's providers, with
    /// `flags`, running `python train.py`.
    pub fn submit(&self, name: &str, flags: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "submit",
            name,
            "-n",
            &self.ns,
            "--image",
            "registry.example/trainer:1",
        ]
        .iter()
        .chain(&[
            "--workers",
            "2",
            "--gpus-per-worker",
            "4",
            "--model",
            "NVIDIA-H100-80GB-HBM3",
            "--min-memory",
            "80G",
            "--interconnect",
            "NVLink",
            "--max-price",
            "3",
            "--max-duration",
            "1h",
            "--provider",
        ])
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("{},{}", self.good, self.lost));
        args.extend(flags.iter().map(|s| (*s).to_owned()));
        args.extend(["--", "python", "train.py"].map(str::to_owned));
        args
    }

    /// A copy of the hub kubeconfig named `name`, edited by `edit`.
    pub fn kubeconfig_variant(&self, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut config: Value = serde_yaml::from_str(&std::fs::read_to_string(self.k()).unwrap()).unwrap();
        edit(&mut config);
        let path = self.dir.join(name);
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
        path
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `&str`s of owned arguments.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
