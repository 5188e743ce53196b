//! Pull mode in tests: the agent ClusterRoles on the hub, Pull GpuProviders, bootstrap
//! tokens, the hub's address and CA as an agent sees them, and agents run in-process.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clap::Parser;
use gpufed_api::GpuProvider;
use gpufed_api::pull::BootstrapToken;
use gpufed_e2e::Federation;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Applies the chart's two agent ClusterRoles (from their Rust definition).
pub async fn install_agent_roles(hub: &Client) {
    let gvk = kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole");
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        hub.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "clusterroles"),
    );
    for role in gpufed_api::pull::cluster_roles() {
        let name = role["metadata"]["name"].as_str().expect("name").to_owned();
        api.patch(
            &name,
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(&role),
        )
        .await
        .expect("agent ClusterRole");
    }
}

/// Registers `member` as a Pull-mode provider (no kubeconfig anywhere on the hub).
pub async fn pull_provider(fed: &Federation, hub: &Client, member: &str, price: &str, grace: &str) {
    let mut models: Vec<String> = fed
        .simulator(member)
        .map(|s| s.config().pools.iter().map(|p| p.model.clone()).collect())
        .unwrap_or_default();
    models.sort();
    models.dedup();
    if models.is_empty() {
        models.push("NVIDIA-GeForce-RTX-4090".into());
    }
    let prices: Vec<serde_json::Value> = models
        .iter()
        .map(|m| serde_json::json!({"model": m, "pricePerGpuHour": price}))
        .collect();
    let provider = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": member},
        "spec": {"mode": "Pull", "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP",
                 "region": "home", "prices": prices, "heartbeatGracePeriod": grace}
    });
    Api::<GpuProvider>::all(hub.clone())
        .patch(
            member,
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(&provider),
        )
        .await
        .expect("pull provider");
}

/// Sets a provider's heartbeat grace period.
pub async fn set_grace(hub: &Client, provider: &str, grace: &str) {
    let patch = serde_json::json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": provider}, "spec": {"heartbeatGracePeriod": grace}});
    Api::<GpuProvider>::all(hub.clone())
        .patch(
            provider,
            &PatchParams::apply("gpufed-e2e-grace").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("grace period");
}

/// Mints a bootstrap token for `provider` on the hub, valid for an hour.
pub async fn mint_token(hub: &Client, provider: &str) -> BootstrapToken {
    let token = BootstrapToken::from_random(&rand::random::<[u8; 22]>());
    let expiry = gpufed_operator::time::format(gpufed_operator::time::now() + 3600);
    let secret = token.secret_manifest(provider, &expiry);
    Api::<Secret>::namespaced(hub.clone(), "kube-system")
        .patch(
            secret["metadata"]["name"].as_str().expect("name"),
            &PatchParams::apply("gpufed-e2e"),
            &Patch::Apply(&secret),
        )
        .await
        .expect("bootstrap token Secret");
    token
}

/// The hub's API server URL and CA bundle (PEM), from its kubeconfig.
pub fn hub_endpoint(fed: &Federation) -> (String, Vec<u8>) {
    let text = std::fs::read_to_string(fed.hub().kubeconfig()).expect("hub kubeconfig");
    let kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig yaml");
    let cluster = &kc["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("server").to_owned();
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().expect("CA data"))
        .expect("CA base64");
    (server, ca)
}

/// A hub client authenticated by a bearer token (an agent's or a bootstrap token).
pub async fn client_as(fed: &Federation, provider: &str, bearer: &str) -> Client {
    let (server, ca_pem) = hub_endpoint(fed);
    gpufed_agent::identity::HubEndpoint {
        server,
        ca_pem,
        namespace: gpufed_api::pull::agent_namespace(provider),
        timeout: Duration::from_secs(5),
    }
    .client(bearer)
    .await
    .expect("client")
}

/// The agent's stored identity (token, issuedAt) in its member cluster.
pub async fn stored_identity(member: &Client) -> Option<(String, i64)> {
    let secret = Api::<Secret>::default_namespaced(member.clone())
        .get_opt("gpufed-agent-identity")
        .await
        .ok()??;
    let data = secret.data?;
    let token = String::from_utf8(data.get("token")?.0.clone()).ok()?;
    let issued = String::from_utf8(data.get("issuedAt")?.0.clone())
        .ok()?
        .parse()
        .ok()?;
    Some((token, issued))
}

/// Files an agent reads: the hub CA and (optionally) its bootstrap token.
pub struct AgentFiles {
    /// Keeps the files alive.
    pub dir: tempfile::TempDir,
    /// The hub CA (PEM).
    pub ca: PathBuf,
    /// The bootstrap token.
    pub token: PathBuf,
}

impl AgentFiles {
    /// Writes the CA of `fed`'s hub and `token`.
    pub fn new(fed: &Federation, token: &BootstrapToken) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("hub-ca.pem");
        std::fs::write(&ca, hub_endpoint(fed).1).expect("CA file");
        let path = dir.path().join("token");
        std::fs::write(&path, token.bearer()).expect("token file");
        Self { dir, ca, token: path }
    }
}

/// An agent running in this test process.
pub struct Agent {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    /// Starts an agent for `provider` on `member`, reaching the hub at `server`; with the
    /// bootstrap token only if `token` is given. Renews its identity every 20 s.
    pub fn start(member: Client, provider: &str, server: &str, ca: &Path, token: Option<&Path>) -> Self {
        let mut args = vec![
            "gpufed-agent".to_owned(),
            format!("--provider={provider}"),
            format!("--hub-server={server}"),
            format!("--hub-ca-file={}", ca.display()),
            "--token-ttl=10m".into(),
            "--renew-after=20s".into(),
            "--interval=1s".into(),
            "--hub-timeout=3s".into(),
        ];
        if let Some(t) = token {
            args.push(format!("--bootstrap-token-file={}", t.display()));
        }
        let args = gpufed_agent::Args::parse_from(args);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(gpufed_agent::run_with(member, args, rx));
        Self { stop, task }
    }

    /// Mints a bootstrap token for `provider` on `fed`'s hub and starts its agent on
    /// `member` with it; the files it reads live as long as the returned [`AgentFiles`].
    pub async fn bootstrap(
        fed: &Federation,
        hub: &Client,
        member: Client,
        provider: &str,
    ) -> (Self, AgentFiles) {
        let token = mint_token(hub, provider).await;
        let files = AgentFiles::new(fed, &token);
        let (server, _) = hub_endpoint(fed);
        let agent = Self::start(member, provider, &server, &files.ca, Some(&files.token));
        (agent, files)
    }

    /// Stops it as SIGTERM would.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Kills it without any cleanup.
    pub fn kill(self) {
        self.task.abort();
    }
}
