//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Only the leader runs controllers. Every Lease write is a `replace` carrying the
//! resourceVersion it read, so two candidates can never both win a round (the loser gets
//! 409). A leader that cannot renew for a whole lease duration — a frozen process, a
//! partition — stops counting itself leader by its own clock before anyone else may take
//! over; its object writes are also fenced by resourceVersion preconditions.
//!
//! No two clocks are ever compared: a candidate judges another holder's Lease expired
//! only when the same record has stood unchanged for a whole lease duration by the
//! candidate's own monotonic clock (as client-go does), never by subtracting the holder's
//! `renewTime` from its own wall clock — a candidate whose clock runs ahead would take a
//! Lease that is being renewed.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{Mutex, watch};

mod leadership;

pub use leadership::{Fence, Leadership};

/// Name of the Lease object.
pub const LEASE_NAME: &str = "gpufed-operator";

/// Annotation on the Lease: a random nonce of the process that holds it. `holderIdentity`
/// stays the replica's identity, as given (`--identity`), but two processes given the
/// same identity (a copied manifest, a restarted container beside its stuck predecessor)
/// must not both count the Lease theirs: a Lease is ours only with our identity *and*
/// our nonce; any other holder's record is waited out like a stranger's.
pub const HOLDER_NONCE_ANNOTATION: &str = "gpufed.io/holder-nonce";

/// Where the Lease is kept: the API server, or memory in tests.
pub trait LeaseStore: Send + Sync {
    /// The Lease, if it exists.
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send;
    /// Creates the Lease (409 when another candidate created it first).
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Replaces the Lease, preconditioned on the resourceVersion it carries.
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<(), kube::Error>> + Send;
}

impl LeaseStore for Api<Lease> {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        self.get_opt(LEASE_NAME).await
    }
    async fn create(&self, lease: &Lease) -> Result<(), kube::Error> {
        Api::create(self, &PostParams::default(), lease).await.map(drop)
    }
    async fn replace(&self, lease: &Lease) -> Result<(), kube::Error> {
        Api::replace(self, LEASE_NAME, &PostParams::default(), lease)
            .await
            .map(drop)
    }
}

/// Another holder's Lease record as this candidate last saw it, and since when by this
/// candidate's monotonic clock.
#[derive(Debug, Default)]
struct Observed {
    record: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    /// Whether `record` has stood unchanged for `ttl` by this clock; a record seen for
    /// the first time (this candidate just started, or the holder renewed) starts over.
    fn expired(&mut self, record: String, ttl: Duration, now: Instant) -> bool {
        match self.since {
            Some(since) if self.record.as_ref() == Some(&record) => now.duration_since(since) >= ttl,
            _ => {
                self.record = Some(record);
                self.since = Some(now);
                false
            }
        }
    }
}

/// What identifies one write of the Lease: its resourceVersion, or (from a store that
/// keeps none) the holder and renew time.
fn record_of(lease: &Lease, spec: &LeaseSpec) -> String {
    lease.metadata.resource_version.clone().unwrap_or_else(|| {
        format!(
            "{}@{:?}",
            spec.holder_identity.as_deref().unwrap_or(""),
            spec.renew_time.as_ref().map(|t| t.0)
        )
    })
}

/// Runs the election for `identity` until `shutdown` fires, keeps a held Lease renewed
/// until the controllers have drained, then releases it.
pub struct Elector<S = Api<Lease>> {
    store: S,
    identity: String,
    /// This process's nonce ([`HOLDER_NONCE_ANNOTATION`]).
    nonce: String,
    duration: Duration,
    leadership: Leadership,
    /// One round at a time; what the last round saw of another holder.
    lock: Mutex<Observed>,
}

impl Elector {
    /// An elector for the Lease in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, identity: String, duration: Duration) -> Self {
        Self::with_store(Api::namespaced(client, namespace), identity, duration)
    }
}

impl<S: LeaseStore> Elector<S> {
    /// An elector over `store`.
    pub fn with_store(store: S, identity: String, duration: Duration) -> Self {
        Self {
            store,
            identity,
            nonce: format!("{:016x}", rand::random::<u64>()),
            duration,
            leadership: Leadership::new(duration),
            lock: Mutex::new(Observed::default()),
        }
    }

    /// The shared leadership view.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// One election round: acquire or renew if possible. Returns whether we lead.
    ///
    /// A round that fails (an API error, or no answer within a third of the lease
    /// duration) changes nothing: a leader stays leader until its last renewal goes
    /// stale by its own clock, so one slow or refused request during an API-server
    /// upgrade does not end a term (and start a new one, reopening every journal).
    pub async fn round(&self) -> bool {
        match self.round_outcome().await {
            Some(won) => won,
            None => self.leadership.is_leader(),
        }
    }

    /// One round: whether we won it, `None` when it failed.
    async fn round_outcome(&self) -> Option<bool> {
        let mut observed = self.lock.lock().await;
        self.lapse_check();
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.duration / 3, self.try_acquire(&mut observed)).await;
        // Leadership that was not renewed within the lease duration has lapsed (another
        // replica may have led since): say so, and tell subscribers, before this round's
        // result — otherwise a lapse followed by a re-acquisition would look unbroken.
        self.lapse_check();
        let won = match outcome {
            Ok(Ok(won)) => won,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease round failed; leadership stands until it goes stale");
                return None;
            }
            Err(_) => {
                tracing::warn!("lease round got no answer; leadership stands until it goes stale");
                return None;
            }
        };
        let was = self.leadership.is_leader();
        self.leadership.set(won, won.then_some(started));
        if won != was {
            tracing::info!(identity = %self.identity, leader = won, "leadership changed");
        }
        Some(won)
    }

    /// How long to wait before the next round: a third of the lease duration, or a tenth
    /// after a failed round — a round that timed out took a third already, and waiting
    /// another would let the leadership go stale (at nine tenths) before the next try.
    fn next_round(&self, outcome: Option<bool>) -> Duration {
        match outcome {
            Some(_) => self.duration / 3,
            None => self.duration / 10,
        }
    }

    fn lapse_check(&self) {
        if self.leadership.end_lapsed() {
            tracing::warn!(identity = %self.identity, leader = false, "leadership lapsed: not renewed within the lease duration");
        }
    }

    async fn try_acquire(&self, observed: &mut Observed) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.store.get().await?;
        let Some(mut lease) = existing else {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, secs, 0)),
            };
            self.stamp(&mut lease.metadata);
            return match self.store.create(&lease).await {
                Ok(()) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = self.is_ours(&lease);
        let ttl = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or_default(),
        );
        // Released (no holder, no renewal): free at once. A Lease renewed by a holder of
        // no name is held all the same, and waited out.
        let released = holder.is_empty() && spec.renew_time.is_none();
        let expired = released || observed.expired(record_of(&lease, &spec), ttl, Instant::now());
        if !ours && !expired {
            return Ok(false);
        }
        let acquired = if ours {
            spec.acquire_time.map(|t| t.0).unwrap_or(now)
        } else {
            now
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(acquired, now, secs, transitions));
        self.stamp(&mut lease.metadata);
        // `replace` carries the resourceVersion we read: a concurrent winner makes it 409.
        match self.store.replace(&lease).await {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `lease` is held by this process: our identity and our nonce.
    fn is_ours(&self, lease: &Lease) -> bool {
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        let nonce = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOLDER_NONCE_ANNOTATION));
        holder == Some(self.identity.as_str()) && nonce == Some(&self.nonce)
    }

    /// Marks a Lease this process writes as held by it ([`HOLDER_NONCE_ANNOTATION`]).
    fn stamp(&self, metadata: &mut ObjectMeta) {
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(HOLDER_NONCE_ANNOTATION.to_owned(), self.nonce.clone());
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, secs: i32, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Renews every third of the lease duration until `shutdown` turns true. A Lease
    /// held then stays renewed until `drained` turns true (the controllers finished what
    /// they were doing: a successor must not start beside them), and is then released so
    /// the successor need not wait for it to expire.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>, mut drained: watch::Receiver<bool>) {
        loop {
            let next = self.next_round(self.round_outcome().await);
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        let mut next = self.duration / 3;
        while self.leadership.is_leader() {
            let done = tokio::select! {
                _ = tokio::time::sleep(next) => false,
                _ = drained.wait_for(|d| *d) => true,
            };
            if done {
                break;
            }
            next = self.next_round(self.round_outcome().await);
        }
        self.release().await;
    }

    async fn release(&self) {
        let _guard = self.lock.lock().await;
        if !self.leadership.is_leader() {
            return;
        }
        self.leadership.set(false, None);
        if let Ok(Some(mut lease)) = self.store.get().await
            && self.is_ours(&lease)
            && let Some(spec) = lease.spec.as_mut()
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Some(a) = lease.metadata.annotations.as_mut() {
                a.remove(HOLDER_NONCE_ANNOTATION);
            }
            match self.store.replace(&lease).await {
                Ok(_) => tracing::info!("lease released"),
                Err(e) => tracing::warn!(error = %e, "lease release failed; it will expire"),
            }
        }
    }
}

/// Runs `term` once per leadership term of this process, until `shutdown`: the settlement
/// and stake tasks open their journals when they become leader and stop when they are not.
/// A term that fails is logged and a new one starts after at most 5 s (or at once when
/// leadership changes). `term` gets the term's number: its loops go on while
/// [`Leadership::holds`] it, so a lapse and a re-acquisition during one slow round end
/// the term rather than carry its state over another replica's.
pub async fn per_term<F, Fut, E>(
    leadership: &Leadership,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut term: F,
) where
    F: FnMut(watch::Receiver<bool>, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut changes = leadership.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if leadership.is_leader()
            && let Err(e) = term(shutdown.clone(), leadership.term()).await
        {
            tracing::warn!(error = %e, "{what} paused; retrying");
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "lease_tests.rs"]
mod tests;
