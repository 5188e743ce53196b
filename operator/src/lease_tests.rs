use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// A Lease kept in memory with the API server's optimistic concurrency: every write
/// needs the resourceVersion last written, and bumps it.
#[derive(Default)]
struct Memory {
    lease: std::sync::Mutex<Option<Lease>>,
    version: std::sync::atomic::AtomicU64,
    failing: AtomicBool,
    /// The next read never answers.
    hang_once: AtomicBool,
    hung: std::sync::atomic::AtomicU64,
}

impl Memory {
    fn holder(&self) -> Option<String> {
        let lease = self.lease.lock().ok()?.clone()?;
        lease.spec?.holder_identity
    }

    fn put(&self, mut lease: Lease, create: bool) -> Result<(), kube::Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(status(503));
        }
        let mut kept = self.lease.lock().map_err(|_| status(500))?;
        let current = kept.as_ref().and_then(|l| l.metadata.resource_version.clone());
        if create != current.is_none() || (!create && lease.metadata.resource_version != current) {
            return Err(status(409));
        }
        let next = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        lease.metadata.resource_version = Some(next.to_string());
        *kept = Some(lease);
        Ok(())
    }
}

fn status(code: u16) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure("test", "test")
            .with_code(code)
            .boxed(),
    )
}

impl LeaseStore for Arc<Memory> {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        if self.hang_once.swap(false, Ordering::SeqCst) {
            self.hung.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(status(503));
        }
        Ok(self.lease.lock().map_err(|_| status(500))?.clone())
    }
    async fn create(&self, lease: &Lease) -> Result<(), kube::Error> {
        self.put(lease.clone(), true)
    }
    async fn replace(&self, lease: &Lease) -> Result<(), kube::Error> {
        self.put(lease.clone(), false)
    }
}

fn elector(store: &Arc<Memory>, who: &str) -> Elector<Arc<Memory>> {
    Elector::with_store(store.clone(), who.to_owned(), Duration::from_secs(60))
}

#[tokio::test]
async fn a_failed_round_neither_ends_nor_restarts_a_term() {
    let store = Arc::new(Memory::default());
    let e = elector(&store, "a");
    assert!(e.round().await, "an absent Lease is taken");
    let l = e.leadership();
    assert_eq!(l.term(), 1);
    store.failing.store(true, Ordering::SeqCst);
    assert!(e.round().await, "a refused renewal does not end a fresh term");
    assert!(l.is_leader() && l.holds(1));
    store.failing.store(false, Ordering::SeqCst);
    assert!(e.round().await);
    assert_eq!(l.term(), 1, "the same term goes on after the API answers again");
}

#[tokio::test]
async fn a_holder_s_old_renew_time_does_not_expire_its_lease_for_a_newcomer() {
    // The holder's clock lags this candidate's by an hour (or this candidate's runs
    // ahead): its renewTime looks an hour old. The record is new to this candidate,
    // so it waits a whole duration of its own before taking it.
    let store = Arc::new(Memory::default());
    let old = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.to_owned()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("other".to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(old)),
            acquire_time: Some(MicroTime(old)),
            ..Default::default()
        }),
    };
    store.put(lease, true).unwrap();
    let e = elector(&store, "a");
    assert!(!e.round().await, "a Lease renewed by another clock is left alone");
    assert_eq!(store.holder().as_deref(), Some("other"));
    assert!(!e.round().await);
}

#[test]
fn a_record_expires_only_after_standing_unchanged_for_the_duration() {
    let ttl = Duration::from_secs(15);
    let t0 = Instant::now();
    let mut seen = Observed::default();
    assert!(!seen.expired("7".into(), ttl, t0), "first seen");
    assert!(!seen.expired("7".into(), ttl, t0 + Duration::from_secs(14)));
    assert!(
        !seen.expired("8".into(), ttl, t0 + Duration::from_secs(16)),
        "renewed: starts over"
    );
    assert!(!seen.expired("8".into(), ttl, t0 + Duration::from_secs(30)));
    assert!(seen.expired("8".into(), ttl, t0 + Duration::from_secs(31)));
}

#[tokio::test]
async fn the_lease_stays_held_until_the_controllers_drained() {
    let store = Arc::new(Memory::default());
    let e = Arc::new(elector(&store, "a"));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (drained, drained_rx) = watch::channel(false);
    let run = tokio::spawn({
        let e = e.clone();
        async move { e.run(shutdown_rx, drained_rx).await }
    });
    while !e.leadership().is_leader() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.holder().as_deref(),
        Some("a"),
        "released while the controllers still ran"
    );
    assert!(e.leadership().is_leader() && !run.is_finished());
    drained.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.holder(), None, "released once drained");
    assert!(!e.leadership().is_leader());
}

#[test]
fn a_term_that_lapsed_is_not_held_by_the_next() {
    let l = Leadership::new(Duration::from_secs(60));
    l.set(true, Some(Instant::now()));
    assert!(l.holds(1));
    l.set(false, None);
    l.set(true, Some(Instant::now()));
    assert!(l.is_leader() && !l.holds(1) && l.holds(2));
}

#[tokio::test(start_paused = true)]
async fn one_round_without_an_answer_does_not_end_the_term() {
    let store = Arc::new(Memory::default());
    let e = Arc::new(Elector::with_store(
        store.clone(),
        "a".to_owned(),
        Duration::from_secs(15),
    ));
    let l = e.leadership();
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let (_drained, drained_rx) = watch::channel(false);
    tokio::spawn({
        let e = e.clone();
        async move { e.run(shutdown_rx, drained_rx).await }
    });
    while !l.is_leader() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let changes = l.subscribe();
    store.hang_once.store(true, Ordering::SeqCst);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            l.is_leader(),
            "leadership went stale around a round without an answer"
        );
    }
    assert_eq!(store.hung.load(Ordering::SeqCst), 1, "a round hung");
    assert!(
        !changes.has_changed().unwrap_or(true),
        "subscribers saw no change"
    );
    assert_eq!(l.term(), 1);
}

#[tokio::test]
async fn two_replicas_given_the_same_identity_never_both_lead() {
    let store = Arc::new(Memory::default());
    let first = elector(&store, "op");
    let twin = elector(&store, "op");
    assert!(first.round().await);
    for _ in 0..3 {
        assert!(
            !twin.round().await,
            "a Lease held under its identity by another process is not its own"
        );
        assert!(first.round().await, "the holder renews as before");
    }
    assert!(first.leadership().is_leader() && !twin.leadership().is_leader());
    assert_eq!(store.holder().as_deref(), Some("op"), "the identity as given");
}

#[tokio::test]
async fn a_lease_renewed_by_a_holder_of_no_name_is_waited_out() {
    // An older replica started with an empty identity holds and renews the Lease.
    let store = Arc::new(Memory::default());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.to_owned()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    store.put(lease, true).unwrap();
    let e = elector(&store, "a");
    assert!(!e.round().await, "held, though by no name");
    // Released (no holder, no renewal): free at once.
    let released = Lease {
        spec: Some(LeaseSpec::default()),
        ..store.lease.lock().unwrap().clone().unwrap()
    };
    store.put(released, false).unwrap();
    assert!(e.round().await);
}

#[test]
fn a_fence_holds_only_in_the_term_it_was_taken_in() {
    let l = Leadership::new(Duration::from_secs(60));
    l.set(true, Some(Instant::now()));
    let fence = l.fence();
    assert!(fence.holds());
    // The Lease lapsed during the work and was taken again: a new term, not the fence's.
    l.set(false, None);
    assert!(!fence.holds());
    l.set(true, Some(Instant::now()));
    assert!(l.is_leader() && !fence.holds());
    assert!(l.fence().holds());
}
