//! This process's view of its leadership: whether it leads now, in which term, and the
//! fence that work begun in a term checks before each write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

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
    pub(super) fn new(duration: Duration) -> Self {
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
    /// less than nine tenths of a lease duration ago by its own monotonic clock (the tenth
    /// is margin for clocks that run at slightly different rates: a candidate waits a
    /// whole duration after it last saw the record change).
    pub fn is_leader(&self) -> bool {
        let fresh = self
            .renewed
            .lock()
            .map(|r| r.is_some_and(|t| t.elapsed() < self.duration * 9 / 10))
            .unwrap_or(false);
        self.leader.load(Ordering::SeqCst) && fresh
    }

    /// Whether this replica still leads in `term`: a term that lapsed is over even when
    /// a later one has begun (state kept from it may be stale).
    pub fn holds(&self, term: u64) -> bool {
        self.is_leader() && self.term() == term
    }

    /// The number of leadership terms this process has begun (each acquisition of the
    /// Lease after not holding it starts one): state kept from an earlier term may be
    /// stale, another replica having led in between.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// The term this process leads in now, for work that must stop writing once it ends
    /// ([`Fence`]); take it only while leading.
    pub fn fence(&self) -> Fence {
        Fence {
            leadership: self.clone(),
            term: self.term(),
        }
    }

    /// A receiver that sees every change of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    /// Ends leadership whose renewal has gone stale (flagged, no longer fresh), telling
    /// subscribers; returns whether it did.
    pub(super) fn end_lapsed(&self) -> bool {
        let lapsed = self.leader.load(Ordering::SeqCst) && !self.is_leader();
        if lapsed {
            self.set(false, None);
        }
        lapsed
    }

    pub(super) fn set(&self, leader: bool, renewed_at: Option<Instant>) {
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

/// The leadership term a piece of work began in. A reconcile can take tens of seconds
/// (member requests, a challenge step): each of its writes checks [`Fence::holds`] first,
/// so none lands after the Lease lapsed — when a successor may lead — even if this
/// process has taken the Lease again since (a new term, whose state this work never saw).
#[derive(Clone, Debug)]
pub struct Fence {
    leadership: Leadership,
    term: u64,
}

impl Fence {
    /// Whether this process still leads in the term the work began in.
    pub fn holds(&self) -> bool {
        self.leadership.holds(self.term)
    }

    /// The term the work began in.
    pub fn term(&self) -> u64 {
        self.term
    }
}
