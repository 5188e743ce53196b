//! The registry of member clusters: one `kube::Client` per provider, built from the
//! kubeconfig in the provider's Secret and rebuilt when that Secret's content changes
//! (rotation interrupts nothing: running pods live in the member cluster, and the next
//! request simply uses the new credentials). The Secret is read again at most every
//! `secret_recheck` (a heartbeat), not on every member request: in a burst of jobs those
//! reads were a third of the operator's requests to the hub.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpufed_api::GpuProvider;
use gpufed_api::provider::ConnectionMode;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::member::Link;
use crate::member::wakes::{ProviderTrigger, ReportWakes};
use crate::member::watch::{JobTrigger, MemberCache};

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
    /// Pull-mode providers whose agent namespace is prepared: name → (uid, generation).
    prepared: Arc<RwLock<BTreeMap<String, (String, i64)>>>,
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
                if self.prepared.read().await.get(&name) != Some(&key) {
                    crate::member::pull::ensure(&self.hub, provider, self.agent_pace).await?;
                    self.prepared.write().await.insert(name.clone(), key);
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
    async fn client(&self, provider: &GpuProvider) -> Result<(Client, Arc<MemberCache>)> {
        let name = provider.metadata.name.clone().unwrap_or_default();
        let Some(secret_ref) = provider.spec.kubeconfig_secret_ref.as_ref() else {
            return Err(Error::InvalidSpec(
                "spec.kubeconfigSecretRef is required in Push mode".into(),
            ));
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
        let secret = secrets
            .get_opt(&secret_ref.name)
            .await
            .map_err(|e| Error::hub("kubeconfig Secret", e))?;
        let secret = secret.ok_or_else(|| {
            Error::member(
                &name,
                format!(
                    "Secret {}/{} not found (spec.kubeconfigSecretRef)",
                    secret_ref.namespace, secret_ref.name
                ),
            )
        })?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&secret_ref.key))
            .map(|b| b.0.clone())
            .ok_or_else(|| {
                Error::member(
                    &name,
                    format!(
                        "Secret {}/{} has no key {:?}",
                        secret_ref.namespace, secret_ref.name, secret_ref.key
                    ),
                )
            })?;
        let fingerprint: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(m) = self.members.write().await.get_mut(&name)
            && m.fingerprint == fingerprint
        {
            m.source = source;
            m.checked = Instant::now();
            return Ok((m.client.clone(), m.cache.clone()));
        }
        let client = self.build(&name, &bytes, self.timeout).await?;
        // Watches idle for minutes: their client waits past the server's watch timeout
        // (290 s) instead of the request timeout.
        let watch_client = self.build(&name, &bytes, Duration::from_secs(330)).await?;
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

    async fn build(&self, provider: &str, kubeconfig: &[u8], read_timeout: Duration) -> Result<Client> {
        let kubeconfig = parse_kubeconfig(provider, kubeconfig)?;
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
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

/// The kubeconfig in a provider's Secret. A parse error says where, never what: the YAML
/// parser quotes the source around the error, and the text around a typo in a kubeconfig
/// is a token or a key — which would reach the GpuProvider's status, logs and tenants'
/// job conditions.
fn parse_kubeconfig(provider: &str, bytes: &[u8]) -> Result<Kubeconfig> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::member(
            provider,
            format!("kubeconfig is not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    Kubeconfig::from_yaml(text).map_err(|_| {
        Error::member(
            provider,
            "kubeconfig is not a valid kubeconfig YAML document (contents not shown: they may hold credentials)",
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_kubeconfig_that_does_not_parse_is_reported_without_its_contents() {
        for bad in [
            &b"sekrit-token-123: [\n"[..],
            b"abc123secret",
            b"users: [{name: u, user: {token: sekrit-token-123}}]\n  bad: indent",
        ] {
            let e = super::parse_kubeconfig("p", bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("kubeconfig"), "{e}");
            assert!(!e.contains("sekrit") && !e.contains("abc123"), "leaked: {e}");
        }
        let e = super::parse_kubeconfig("p", b"\xff\xfe")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
