//! The registry of member clusters: one `kube::Client` per provider, built from the
//! kubeconfig in the provider's Secret and rebuilt when that Secret's content changes
//! (rotation interrupts nothing: running pods live in the member cluster, and the next
//! request simply uses the new credentials). The Secret is read again at most every
//! `secret_recheck` (a heartbeat), not on every member request: in a burst of jobs those
//! reads were a third of the operator's requests to the hub.

mod kubeconfig;
mod prepared;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpufed_api::GpuProvider;
use gpufed_api::provider::ConnectionMode;
use k8s_openapi::api::core::v1::Secret;
use kube::config::KubeConfigOptions;
use kube::{Api, Client, Config};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::member::Link;
use crate::member::wakes::{ProviderTrigger, ReportWakes};
use crate::member::watch::{JobTrigger, MemberCache};
use prepared::Prepared;

/// `Reachable=False` reason of a provider whose member did not answer (or answered wrong).
pub const REASON_UNREACHABLE: &str = "Unreachable";
/// `Reachable=False` reason: the operator may not read the provider's kubeconfig Secret
/// (403: e.g. it lies outside the namespace the installation lets the operator read,
/// `providerSecretsNamespace`).
pub const REASON_SECRET_FORBIDDEN: &str = "SecretForbidden";
/// `Reachable=False` reason: the provider's kubeconfig Secret, or its key, does not exist.
pub const REASON_SECRET_NOT_FOUND: &str = "SecretNotFound";
/// `Reachable=False` reason: the kubeconfig in the provider's Secret does not parse, or
/// asks for what the operator refuses ([`kubeconfig::refused`]).
pub const REASON_INVALID_KUBECONFIG: &str = "InvalidKubeconfig";

/// Why the way to a provider's member cluster could not be made: the error, and the
/// `Reachable=False` reason the provider's status gives it. An [`Error::Hub`] is the
/// hub's own failure (5xx, 429, transport): nothing is known of the provider then.
#[derive(Debug)]
pub struct LinkError {
    /// The `Reachable=False` reason (`REASON_*`).
    pub reason: &'static str,
    /// What failed.
    pub error: Error,
}

impl From<Error> for LinkError {
    fn from(error: Error) -> Self {
        Self {
            reason: REASON_UNREACHABLE,
            error,
        }
    }
}

#[derive(Clone)]
struct Member {
    client: Client,
    /// Watches of the member's pods and nodes (dropped, so stopped, with the client).
    cache: Arc<MemberCache>,
    fingerprint: [u8; 32],
    /// The Secret reference the client was built from, and when it was last read.
    source: (String, String, String),
    checked: Instant,
}

/// Clients for the member clusters, keyed by provider name.
#[derive(Clone)]
pub struct Members {
    hub: Client,
    timeout: Duration,
    members: Arc<RwLock<BTreeMap<String, Member>>>,
    /// Pull-mode providers whose agent namespace is prepared, by name.
    prepared: Arc<RwLock<BTreeMap<String, Prepared>>>,
    health: crate::member::pull::HubHealth,
    agent_pace: crate::member::pull::AgentPace,
    secret_recheck: Duration,
    /// Where changes of a member's gpufed pods are sent (the job controller).
    trigger: Option<JobTrigger>,
    /// Providers waiting for their nodes' reports, woken by their member's node watch.
    report_wakes: ReportWakes,
    /// Held while a provider's member client is built from its Secret, by provider.
    building: Arc<std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Members {
    /// An empty registry; `timeout` bounds every member request.
    pub fn new(hub: Client, timeout: Duration) -> Self {
        Self {
            hub,
            timeout,
            members: Arc::default(),
            prepared: Arc::default(),
            health: crate::member::pull::HubHealth::new(crate::time::now()),
            agent_pace: crate::member::pull::AgentPace {
                interval_seconds: 10,
                challenge_poll_millis: 1000,
            },
            secret_recheck: Duration::from_secs(5),
            trigger: None,
            report_wakes: ReportWakes::default(),
            building: Arc::default(),
        }
    }

    /// How long one member request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reconciles a push-mode provider (through `trigger`) as soon as one of its nodes
    /// publishes a new signed report while it waits for one.
    pub fn with_provider_trigger(mut self, trigger: ProviderTrigger) -> Self {
        self.report_wakes = ReportWakes::new(trigger);
        self
    }

    /// Which providers wait for their nodes' reports, and their pending wakes.
    pub fn report_wakes(&self) -> &ReportWakes {
        &self.report_wakes
    }

    /// Sends the job of every changed gpufed pod in a push member to `trigger`.
    pub fn with_job_trigger(mut self, trigger: JobTrigger) -> Self {
        self.trigger = Some(trigger);
        self
    }

    /// Reconciles these jobs now (the job controller's trigger; nothing without one).
    pub fn wake_jobs(
        &self,
        jobs: impl IntoIterator<Item = kube::runtime::reflector::ObjectRef<gpufed_api::ComputeJob>>,
    ) {
        if let Some(t) = &self.trigger {
            for j in jobs {
                let _ = t.unbounded_send(j);
            }
        }
    }

    /// How long a member client is used without reading its kubeconfig Secret again
    /// (a rotation is picked up within this time).
    pub fn with_secret_recheck(mut self, every: Duration) -> Self {
        self.secret_recheck = every;
        self
    }

    /// How often pull-mode agents are told to report (seconds, at least 1), and to report
    /// their nodes' signed reports alone while a challenge is open.
    pub fn with_agent_interval(mut self, interval: Duration, challenge_poll: Duration) -> Self {
        self.agent_pace = crate::member::pull::AgentPace {
            interval_seconds: interval.as_secs().max(1),
            challenge_poll_millis: u64::try_from(challenge_poll.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        };
        self
    }

    /// The way to the provider's member cluster: a client (push) or, in pull mode, its
    /// prepared agent namespace on the hub.
    pub async fn link(&self, provider: &GpuProvider) -> Result<Link> {
        self.link_checked(provider).await.map_err(|e| e.error)
    }

    /// [`Self::link`], saying why it failed in the provider's terms ([`LinkError`]).
    pub async fn link_checked(&self, provider: &GpuProvider) -> Result<Link, LinkError> {
        let name = provider.metadata.name.clone().unwrap_or_default();
        match provider.spec.mode {
            ConnectionMode::Push => {
                let (client, cache) = self.client(provider).await?;
                Ok(Link::Push {
                    client,
                    cache: Some(cache),
                    provider: name,
                })
            }
            ConnectionMode::Pull => {
                // Switched from push: the old client's watches would run on (and on
                // revoked credentials, retry every few seconds) for good.
                if self.members.read().await.contains_key(&name) {
                    self.members.write().await.remove(&name);
                }
                let key = (
                    provider.metadata.uid.clone().unwrap_or_default(),
                    provider.metadata.generation.unwrap_or(0),
                );
                let entry = self.prepared.read().await.get(&name).cloned();
                if Prepared::due(entry.as_ref(), &key, Instant::now()) {
                    let ensured = crate::member::pull::ensure(&self.hub, provider, self.agent_pace).await;
                    self.prepared_again(&name, key, entry.as_ref(), ensured).await?;
                }
                Ok(Link::Pull(crate::member::pull::PullLink::new(
                    self.hub.clone(),
                    &name,
                    self.health.clone(),
                    self.agent_pace,
                )))
            }
        }
    }

    /// The client for a provider and its watches, (re)built from its kubeconfig Secret
    /// when needed.
    async fn client(&self, provider: &GpuProvider) -> Result<(Client, Arc<MemberCache>), LinkError> {
        let name = provider.metadata.name.clone().unwrap_or_default();
        let Some(secret_ref) = provider.spec.kubeconfig_secret_ref.as_ref() else {
            return Err(
                Error::InvalidSpec("spec.kubeconfigSecretRef is required in Push mode".into()).into(),
            );
        };
        let source = (
            secret_ref.namespace.clone(),
            secret_ref.name.clone(),
            secret_ref.key.clone(),
        );
        if let Some(m) = self.members.read().await.get(&name)
            && m.source == source
            && m.checked.elapsed() < self.secret_recheck
        {
            return Ok((m.client.clone(), m.cache.clone()));
        }
        // One (re)build at a time per provider: concurrent reconciles would each read the
        // Secret and start a member cache (a list and watch of every node), all but one
        // dropped. Per provider, so one slow Secret read or exec plugin holds no other.
        let lock = match self.building.lock() {
            Ok(mut locks) => locks.entry(name.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let _building = lock.lock().await;
        if let Some(m) = self.members.read().await.get(&name)
            && m.source == source
            && m.checked.elapsed() < self.secret_recheck
        {
            return Ok((m.client.clone(), m.cache.clone()));
        }
        let secrets: Api<Secret> = Api::namespaced(self.hub.clone(), &secret_ref.namespace);
        let unusable = |reason, message: String| LinkError {
            reason,
            error: Error::member(&name, message),
        };
        let at = format!("{}/{}", secret_ref.namespace, secret_ref.name);
        // A 403 is the provider's configuration (a Secret the operator is not let read),
        // not an outage of the hub: said in its status, and its view dropped, as for a
        // Secret that does not exist.
        let secret = match secrets.get_opt(&secret_ref.name).await {
            Ok(secret) => secret,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(unusable(
                    REASON_SECRET_FORBIDDEN,
                    format!(
                        "the operator may not read Secret {at} (spec.kubeconfigSecretRef; it reads Secrets only in the namespace its installation grants, providerSecretsNamespace): {}",
                        s.message
                    ),
                ));
            }
            Err(e) => return Err(Error::hub("kubeconfig Secret", e).into()),
        };
        let secret = secret.ok_or_else(|| {
            unusable(
                REASON_SECRET_NOT_FOUND,
                format!("Secret {at} not found (spec.kubeconfigSecretRef)"),
            )
        })?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&secret_ref.key))
            .map(|b| b.0.clone())
            .ok_or_else(|| {
                unusable(
                    REASON_SECRET_NOT_FOUND,
                    format!(
                        "Secret {at} has no key {:?} (spec.kubeconfigSecretRef)",
                        secret_ref.key
                    ),
                )
            })?;
        let invalid = |error| LinkError {
            reason: REASON_INVALID_KUBECONFIG,
            error,
        };
        let kubeconfig = kubeconfig::parse(&name, &bytes).map_err(invalid)?;
        let fingerprint: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(m) = self.members.write().await.get_mut(&name)
            && m.fingerprint == fingerprint
        {
            m.source = source;
            m.checked = Instant::now();
            return Ok((m.client.clone(), m.cache.clone()));
        }
        let client = self
            .build(&name, &kubeconfig, self.timeout)
            .await
            .map_err(invalid)?;
        // Watches idle for minutes: their client waits past the server's watch timeout
        // (290 s) instead of the request timeout.
        let watch_client = self
            .build(&name, &kubeconfig, Duration::from_secs(330))
            .await
            .map_err(invalid)?;
        let cache = Arc::new(MemberCache::start(
            &watch_client,
            self.trigger.clone(),
            &name,
            self.report_wakes.clone(),
        ));
        let rotated = self.members.write().await.insert(
            name.clone(),
            Member {
                client: client.clone(),
                cache: cache.clone(),
                fingerprint,
                source,
                checked: Instant::now(),
            },
        );
        if rotated.is_some() {
            tracing::info!(provider = %name, "kubeconfig Secret changed: member client rebuilt");
        }
        Ok((client, cache))
    }

    async fn build(
        &self,
        provider: &str,
        kubeconfig: &kube::config::Kubeconfig,
        read_timeout: Duration,
    ) -> Result<Client> {
        let mut config = Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::member(provider, format!("kubeconfig: {e}")))?;
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(read_timeout);
        config.write_timeout = Some(self.timeout);
        Client::try_from(config).map_err(|e| Error::member(provider, format!("client: {e}")))
    }

    /// The providers this registry holds anything for.
    pub async fn known(&self) -> Vec<String> {
        let mut known: Vec<String> = self.members.read().await.keys().cloned().collect();
        known.extend(self.prepared.read().await.keys().cloned());
        known.sort();
        known.dedup();
        known
    }

    /// Drops the client (and so the watches) of a deleted provider.
    pub async fn forget(&self, provider: &str) {
        if let Ok(mut locks) = self.building.lock() {
            locks.remove(provider);
        }
        self.members.write().await.remove(provider);
        self.prepared.write().await.remove(provider);
        self.health.forget(provider);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
