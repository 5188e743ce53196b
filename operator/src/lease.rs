//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Only the leader runs controllers. Every Lease write is a `replace` carrying the
//! resourceVersion it read, so two candidates can never both win a round (the loser gets
//! 409). A leader that cannot renew for a whole lease duration — a frozen process, a
//! partition — stops counting itself leader by its own clock before anyone else may take
//! over; its object writes are also fenced by resourceVersion preconditions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{Mutex, watch};

/// Name of the Lease object.
pub const LEASE_NAME: &str = "gpufed-operator";

/// Shared view of leadership.
#[derive(Clone, Debug)]
pub struct Leadership {
    leader: Arc<AtomicBool>,
    /// Leadership terms begun by this process: 0 before the first.
    term: Arc<std::sync::atomic::AtomicU64>,
    renewed: Arc<std::sync::Mutex<Option<Instant>>>,
    duration: Duration,
    changes: watch::Sender<bool>,
}

impl Leadership {
    fn new(duration: Duration) -> Self {
        let (changes, _) = watch::channel(false);
        Self {
            leader: Arc::default(),
            term: Arc::default(),
            renewed: Arc::default(),
            duration,
            changes,
        }
    }

    /// Whether this replica holds the Lease now: it won the last round and renewed it
    /// less than a lease duration ago by its own monotonic clock.
    pub fn is_leader(&self) -> bool {
        let fresh = self
            .renewed
            .lock()
            .map(|r| r.is_some_and(|t| t.elapsed() < self.duration))
            .unwrap_or(false);
        self.leader.load(Ordering::SeqCst) && fresh
    }

    /// The number of leadership terms this process has begun (each acquisition of the
    /// Lease after not holding it starts one): state kept from an earlier term may be
    /// stale, another replica having led in between.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// A receiver that sees every change of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    /// Ends leadership whose renewal has gone stale (flagged, no longer fresh), telling
    /// subscribers; returns whether it did.
    fn end_lapsed(&self) -> bool {
        let lapsed = self.leader.load(Ordering::SeqCst) && !self.is_leader();
        if lapsed {
            self.set(false, None);
        }
        lapsed
    }

    fn set(&self, leader: bool, renewed_at: Option<Instant>) {
        if let Ok(mut r) = self.renewed.lock() {
            *r = renewed_at;
        }
        if leader && !self.leader.load(Ordering::SeqCst) {
            self.term.fetch_add(1, Ordering::SeqCst);
        }
        self.leader.store(leader, Ordering::SeqCst);
        self.changes
            .send_if_modified(|v| std::mem::replace(v, leader) != leader);
    }
}

/// Runs the election for `identity` until `shutdown` fires, then releases the Lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
    leadership: Leadership,
    lock: Mutex<()>,
}

impl Elector {
    /// An elector for the Lease in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, identity: String, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
            duration,
            leadership: Leadership::new(duration),
            lock: Mutex::new(()),
        }
    }

    /// The shared leadership view.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// One election round: acquire or renew if possible. Returns whether we lead.
    pub async fn round(&self) -> bool {
        let _guard = self.lock.lock().await;
        let started = Instant::now();
        let won = match self.try_acquire().await {
            Ok(won) => won,
            Err(e) => {
                tracing::warn!(error = %e, "lease round failed");
                false
            }
        };
        // Leadership that was not renewed within the lease duration has lapsed (another
        // replica may have led since): say so, and tell subscribers, before this round's
        // result — otherwise a lapse followed by a re-acquisition would look unbroken.
        if self.leadership.end_lapsed() {
            tracing::warn!(identity = %self.identity, leader = false, "leadership lapsed: not renewed within the lease duration");
        }
        let was = self.leadership.is_leader();
        self.leadership.set(won, won.then_some(started));
        if won != was {
            tracing::info!(identity = %self.identity, leader = won, "leadership changed");
        }
        won
    }

    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.api.get_opt(LEASE_NAME).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, secs, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.identity;
        let renewed = spec
            .renew_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
        let expired = holder.is_empty() || now.as_second() > renewed.as_second() + ttl;
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
        // `replace` carries the resourceVersion we read: a concurrent winner makes it 409.
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
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

    /// Renews every third of the lease duration until `shutdown` turns true, then
    /// releases the Lease so a successor need not wait for it to expire.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let period = self.duration / 3;
        loop {
            self.round().await;
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.release().await;
    }

    async fn release(&self) {
        let _guard = self.lock.lock().await;
        if !self.leadership.is_leader() {
            return;
        }
        self.leadership.set(false, None);
        if let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
                Ok(_) => tracing::info!("lease released"),
                Err(e) => tracing::warn!(error = %e, "lease release failed; it will expire"),
            }
        }
    }
}

/// Runs `term` once per leadership term of this process, until `shutdown`: the settlement
/// and stake tasks open their journals when they become leader and stop when they are not.
/// A term that fails is logged and a new one starts after at most 5 s (or at once when
/// leadership changes).
pub async fn per_term<F, Fut, E>(
    leadership: &Leadership,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut term: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut changes = leadership.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if leadership.is_leader()
            && let Err(e) = term(shutdown.clone()).await
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
mod tests {
    use super::*;

    #[test]
    fn a_lapsed_leadership_is_ended_and_subscribers_see_it() {
        let l = Leadership::new(Duration::from_millis(20));
        let mut changes = l.subscribe();
        l.set(true, Some(Instant::now()));
        assert!(l.is_leader());
        assert!(changes.has_changed().unwrap_or(false));
        assert!(*changes.borrow_and_update());
        assert!(!l.end_lapsed(), "fresh leadership is not a lapse");
        std::thread::sleep(Duration::from_millis(40));
        assert!(!l.is_leader(), "not renewed within the duration");
        assert!(l.end_lapsed());
        assert!(!*changes.borrow_and_update(), "subscribers see the end");
        assert!(!l.end_lapsed(), "only once");
        assert_eq!(l.term(), 1);
        // Re-acquired: a new term, seen as a change.
        l.set(true, Some(Instant::now()));
        assert!(changes.has_changed().unwrap_or(false));
        assert_eq!(l.term(), 2, "a second term");
        l.set(true, Some(Instant::now()));
        assert_eq!(l.term(), 2, "a renewal is the same term");
    }
}
