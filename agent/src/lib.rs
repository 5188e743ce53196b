//! gpufed pull-mode agent. Runs inside a provider's cluster that the hub cannot reach
//! (NAT, no inbound access, no admin credentials handed out) and connects out:
//! - registers with a bootstrap token and renews its narrowly scoped hub identity
//!   ([`identity`]);
//! - every interval ([`sync`]): reports inventory, signed node reports and heartbeat,
//!   passes challenges on to the device plugins, applies the Assignments the hub gave
//!   its provider (after checking them, [`accept`]), reports their pods, and removes what
//!   the hub withdrew;
//! - relays challenges at once, both ways ([`relay`]), so a pull-mode provider's
//!   challenge round trip costs what a push-mode one's does;
//! - never touches running pods because the hub is unreachable: it just waits.
#![forbid(unsafe_code)]

pub mod accept;
pub mod identity;
pub mod relay;
pub mod status;
pub mod sync;
mod withdraw;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gpufed_operator::cli::parse_duration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use identity::{Due, HubEndpoint, Identity, IdentityStore};

/// Flags of `gpufed-agent` (each also readable from the environment).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "gpufed-agent", version, about = "gpufed pull-mode agent")]
pub struct Args {
    /// The GpuProvider this cluster is.
    #[arg(long, env = "GPUFED_PROVIDER")]
    pub provider: String,
    /// The hub's API server, e.g. `https://hub.example.com:6443`.
    #[arg(long, env = "GPUFED_HUB_SERVER")]
    pub hub_server: String,
    /// The hub's CA bundle (PEM).
    #[arg(long, env = "GPUFED_HUB_CA_FILE")]
    pub hub_ca_file: PathBuf,
    /// File with the registration token `<id>.<secret>` (`kubectl gpufed provider token`).
    /// Needed only until the agent holds an identity.
    #[arg(long, env = "GPUFED_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Secret (in the agent's namespace of this cluster) that keeps the hub identity.
    #[arg(long, env = "GPUFED_IDENTITY_SECRET", default_value = "gpufed-agent-identity")]
    pub identity_secret: String,
    /// Lifetime of each hub token the agent requests (at least 10m).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Renew the hub token this long after it was issued (default, and at most: half its lifetime).
    #[arg(long, value_parser = parse_duration)]
    pub renew_after: Option<Duration>,
    /// Report interval until the hub's agent config says otherwise.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Bound on each request to the hub.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub hub_timeout: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "GPUFED_LOG_JSON")]
    pub log_json: bool,
}

/// Runs the agent with the in-cluster (or KUBECONFIG) member client until SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let member = Client::try_default()
        .await
        .context("connecting to this cluster's API server")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    run_with(member, args, rx).await
}

struct Session {
    endpoint: HubEndpoint,
    store: IdentityStore,
    identity: Option<Identity>,
    hub: Option<Client>,
    /// How many hub clients were built (each identity gets its own).
    clients: u64,
    /// The hub refused the identity held (401): the stored one is not loaded again, the
    /// agent registers anew with the bootstrap token.
    rejected: bool,
    /// A round failed with a 401, from the hub or from this cluster: the next
    /// [`Session::hub`] asks the hub whether it still takes the token.
    check_token: bool,
    /// Failed registrations in a row, and when the next may be tried
    /// ([`identity::register_backoff`]).
    register_failures: u32,
    register_after: Option<tokio::time::Instant>,
    args: Args,
}

impl Session {
    fn bootstrap_token(&self) -> anyhow::Result<String> {
        let path = self.args.bootstrap_token_file.as_ref().ok_or_else(|| {
            anyhow::anyhow!("no hub identity and no --bootstrap-token-file to register with")
        })?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--bootstrap-token-file {}", path.display()))?;
        let token = gpufed_api::pull::BootstrapToken::parse(&text)
            .map_err(|e| anyhow::anyhow!("--bootstrap-token-file: {e}"))?;
        Ok(token.bearer())
    }

    /// A hub client with a valid identity: loaded, registered or renewed as due. An
    /// identity the hub refuses (401) is dropped for a new registration: its timestamps
    /// alone would keep the agent using it, silent, until it expired.
    async fn hub(&mut self) -> anyhow::Result<Client> {
        if std::mem::take(&mut self.check_token) && self.identity.is_some() {
            // The 401 may have come from this cluster: only the hub's own answer drops
            // the identity (the bootstrap token may be long gone).
            let probe = Api::<ConfigMap>::default_namespaced(self.current_client().await?)
                .get_opt(gpufed_api::pull::AGENT_CONFIGMAP)
                .await;
            if let Err(e) = probe.map_err(anyhow::Error::from)
                && identity::unauthorized(&e)
            {
                self.reject(&e);
            }
        }
        if self.identity.is_none() && !self.rejected {
            self.identity = self.store.load().await.context("reading the stored identity")?;
        }
        let now = gpufed_operator::time::now();
        let renew_after = self.args.renew_after.unwrap_or(self.args.token_ttl.mul_f64(0.5));
        let ttl = self.args.token_ttl.max(Duration::from_secs(600));
        match identity::due(self.identity.as_ref(), now, renew_after, Duration::from_secs(60)) {
            Due::Keep => {}
            Due::Renew => {
                let current = self.current_client().await?;
                match self.endpoint.request_token(&current, ttl, now).await {
                    Ok(id) => self.adopt(id, "renewed").await?,
                    Err(e) if identity::unauthorized(&e) => {
                        self.reject(&e);
                        self.register(now, ttl).await?;
                    }
                    // The old token is still good: try again next round.
                    Err(e) => tracing::warn!(error = %e, "cannot renew the hub identity yet"),
                }
            }
            Due::Register => self.register(now, ttl).await?,
        }
        self.current_client().await
    }

    /// Drops the identity the hub refused, for [`Session::register`].
    fn reject(&mut self, e: &anyhow::Error) {
        tracing::warn!(error = %format!("{e:#}"), "the hub refuses the agent's identity; registering again");
        self.identity = None;
        self.hub = None;
        self.rejected = true;
    }

    /// Registers with the bootstrap token, no sooner than the backoff after a failure.
    /// Until one succeeds, the stored identity stays the one used (`rejected` is cleared
    /// on failure): a 401 may be a passing refusal (the hub rolling its keys), and the
    /// bootstrap token is often long expired — dropping the identity for good would cut
    /// the agent off until someone restarts it.
    async fn register(&mut self, now: i64, ttl: Duration) -> anyhow::Result<()> {
        if let Some(at) = self.register_after
            && tokio::time::Instant::now() < at
        {
            self.rejected = false;
            let wait = at.saturating_duration_since(tokio::time::Instant::now());
            anyhow::bail!("registering again in {}s", wait.as_secs().max(1));
        }
        let registered = async {
            let bootstrap = self.endpoint.client(&self.bootstrap_token()?).await?;
            self.endpoint
                .request_token(&bootstrap, ttl, now)
                .await
                .context("registering with the bootstrap token (expired or revoked?)")
        }
        .await;
        match registered {
            Ok(id) => self.adopt(id, "registered").await,
            Err(e) => {
                self.rejected = false;
                self.register_failures = self.register_failures.saturating_add(1);
                let wait = identity::register_backoff(self.register_failures);
                self.register_after = Some(tokio::time::Instant::now() + wait);
                Err(e)
            }
        }
    }

    async fn adopt(&mut self, id: Identity, what: &str) -> anyhow::Result<()> {
        self.store.save(&id).await.context("storing the hub identity")?;
        tracing::info!(expires = %gpufed_operator::time::format(id.expires_at), "hub identity {what}");
        self.identity = Some(id);
        self.hub = None;
        self.rejected = false;
        (self.register_failures, self.register_after) = (0, None);
        Ok(())
    }

    async fn current_client(&mut self) -> anyhow::Result<Client> {
        if let Some(c) = &self.hub {
            return Ok(c.clone());
        }
        let token = self
            .identity
            .as_ref()
            .map(|i| i.token.clone())
            .ok_or_else(|| anyhow::anyhow!("no hub identity"))?;
        let client = self.endpoint.client(&token).await?;
        self.hub = Some(client.clone());
        self.clients += 1;
        Ok(client)
    }
}

/// Runs the agent against `member` until `shutdown` turns true. Errors of one round are
/// logged and the next round retries; the agent never stops for the hub's sake.
pub async fn run_with(member: Client, args: Args, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let ca_pem = std::fs::read(&args.hub_ca_file)
        .with_context(|| format!("--hub-ca-file {}", args.hub_ca_file.display()))?;
    let endpoint = HubEndpoint {
        server: args.hub_server.clone(),
        ca_pem,
        namespace: gpufed_api::pull::agent_namespace(&args.provider),
        timeout: args.hub_timeout,
    };
    let mut session = Session {
        store: IdentityStore::new(&member, &args.identity_secret),
        endpoint,
        identity: None,
        hub: None,
        clients: 0,
        rejected: false,
        check_token: false,
        register_failures: 0,
        register_after: None,
        args: args.clone(),
    };
    let mut state = sync::State::new(args.interval);
    tracing::info!(provider = %args.provider, hub = %args.hub_server, "gpufed-agent started");
    let changed = Arc::new(Notify::new());
    let challenged = Arc::new(Notify::new());
    let reported = Arc::new(Notify::new());
    let node_watch = tokio::spawn(relay::wake_on_new_reports(member.clone(), reported.clone()));
    let mut watches: Option<(u64, Watches)> = None;
    let mut next_full = tokio::time::Instant::now();
    let mut wake = Wake::Assignments;
    loop {
        let full = tokio::time::Instant::now() >= next_full;
        match session.hub().await {
            Ok(hub) => {
                // A new identity gets new watches; the old ones' streams end with it.
                if watches.as_ref().is_none_or(|(g, _)| *g != session.clients) {
                    watches = Some((
                        session.clients,
                        Watches::start(&hub, changed.clone(), challenged.clone()),
                    ));
                }
                let result = match (full, wake) {
                    (true, _) => sync::round(&hub, &member, &mut state).await,
                    (false, Wake::Assignments) => sync::assignments_round(&hub, &member, &mut state).await,
                    (false, Wake::Challenges) => relay::relay_challenges(&hub, &member, &mut state).await,
                    (false, Wake::Reports) => relay::reports_round(&hub, &member, &mut state).await,
                };
                if let Err(e) = result {
                    session.check_token |= identity::unauthorized(&e);
                    tracing::warn!(error = %format!("{e:#}"), "sync round failed; retrying next round");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "no hub identity yet"),
        }
        if full {
            next_full = tokio::time::Instant::now() + state.interval();
        }
        let fast = state.fast_every().map(|d| tokio::time::Instant::now() + d);
        tokio::select! {
            _ = tokio::time::sleep_until(next_full) => {}
            // New or withdrawn work is acted on at once, not at the next report.
            _ = changed.notified() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                wake = Wake::Assignments;
            }
            // A challenge request (or its open seed) goes on to the nodes at once.
            _ = challenged.notified() => wake = Wake::Challenges,
            _ = tokio::time::sleep_until(fast.unwrap_or(next_full)), if fast.is_some() => wake = Wake::Reports,
            // A node answered a challenge: its commitment goes to the hub at once.
            _ = reported.notified(), if fast.is_some() => wake = Wake::Reports,
            _ = shutdown.changed() => {
                drop(watches);
                node_watch.abort();
                tracing::info!("gpufed-agent stopping; running pods are left alone");
                return Ok(());
            }
        }
    }
}

/// What woke the loop between two whole rounds.
#[derive(Clone, Copy)]
enum Wake {
    /// An Assignment changed.
    Assignments,
    /// The hub's challenge requests changed.
    Challenges,
    /// A challenge is open: time to report the nodes' reports.
    Reports,
}

/// The agent's watches of the hub, stopped when dropped.
struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Watches {
    fn start(hub: &Client, assignments: Arc<Notify>, challenges: Arc<Notify>) -> Self {
        use gpufed_api::pull::CHALLENGE_CONFIGMAP;
        use kube::runtime::watcher::Config;
        Self(vec![
            tokio::spawn(wake_on_changes(
                kube::Api::<gpufed_api::Assignment>::default_namespaced(hub.clone()),
                Config::default(),
                assignments,
                "assignment",
            )),
            // By name: the agent may read that one ConfigMap only.
            tokio::spawn(wake_on_changes(
                kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::default_namespaced(hub.clone()),
                Config::default().fields(&format!("metadata.name={CHALLENGE_CONFIGMAP}")),
                challenges,
                "challenge",
            )),
        ])
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Wakes the loop on every change of what `api` and `config` watch.
async fn wake_on_changes<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
    wake: Arc<Notify>,
    what: &str,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::StreamExt as _;
    let mut events = std::pin::pin!(kube::runtime::watcher(api, config));
    while let Some(event) = events.next().await {
        match event {
            Ok(kube::runtime::watcher::Event::Apply(_) | kube::runtime::watcher::Event::Delete(_)) => {
                wake.notify_one()
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "{what} watch interrupted; rounds continue");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
