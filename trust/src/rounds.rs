//! Fleet-wide challenge rounds: when each node is challenged (docs/trust.md, "Rounds").
//!
//! The hub's clock proves that a node did its work within a band's round trip. Were every
//! node challenged at its own time (its join time plus multiples of the interval), one
//! real GPU could answer for many identities one after another, each alone within its
//! band: fabricated UUIDs and serials pass the uniqueness checks, and the clock never sees
//! two of them at once. So periodic challenges come in **rounds**: every known node of
//! every provider is challenged at the start of each interval of the fleet clock (Unix
//! milliseconds, so every hub replica agrees on it). A GPU that answers for `k` identities
//! must then do `k` workloads within one round trip.
//!
//! Three rules keep a node from stepping out of its round:
//! * a round challenge issued late (the member was unreachable, the node published no
//!   report, the hub was busy) runs on the round's clock: issued at most `grace` after the
//!   round started, whenever the hub got to it;
//! * a challenge started between rounds (a new node, new GPUs, a `verifiedOnly` job that
//!   wants a fresh verdict) that is still open when a round starts gives way to the round's;
//!   and only a node whose latest verdict passed gets one — a node that failed waits for
//!   the next round, whatever it changes;
//! * a verdict counts until the next round's challenge should have been judged (that
//!   round's start + `grace` + the challenge timeout), not for a fixed time after it: a
//!   node that skips a round is no longer verified.
//!
//! A node new to the hub is challenged at once, alone, and counts until the next round:
//! identities made afresh for every round are the remaining way around it, and each one
//! needs its own node key and its provider's bonded stake. A hub that holds passes
//! between rounds on probation ([`proven_after`]) closes that too: a GPU then counts
//! only once it has passed a round.
//!
//! Pure: the operator passes the clock in.

/// The round schedule: its period and how late a round challenge may be issued without
/// losing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rounds {
    /// Period, ms (`--verify-interval`); at least 1.
    pub interval_ms: u64,
    /// How long after a round's start its challenges may be issued on their own clock, ms
    /// (`--challenge-round-grace`): the hub's spread over the fleet.
    pub grace_ms: u64,
}

/// Why a node is challenged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The fleet-wide round.
    Round,
    /// A node new to this hub.
    Join,
    /// A node whose round began under the hub's previous leader and was not judged in it
    /// (`NodeSchedule::resumed`): challenged at once, on its own clock, like a join.
    Resumed,
    /// The node's report lists GPUs its last verdict does not cover.
    Changed,
    /// A `verifiedOnly` job waits for a fresher verdict.
    Wanted,
}

impl Why {
    /// The label value for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Why::Round => "round",
            Why::Join => "join",
            Why::Resumed => "resumed",
            Why::Changed => "changed",
            Why::Wanted => "wanted",
        }
    }
}

/// What the hub knows of one node's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSchedule {
    /// The node was judged before by this hub (false: new to it).
    pub judged: bool,
    /// Not judged by this leader, but by the previous one, and the round after that
    /// verdict began before this leader took over: challenged at once like a new node,
    /// and counted as [`Why::Resumed`], not as a join.
    pub resumed: bool,
    /// The start of its next round (the round after its last challenge's), ms.
    pub next_due_ms: u64,
    /// No GPU of its latest verdict failed (a node that listed none failed nothing).
    pub passed: bool,
    /// Its open challenge: when it was issued and why.
    pub open: Option<(u64, Why)>,
    /// Its report lists GPUs the last verdict does not cover.
    pub changed: bool,
    /// A `verifiedOnly` job wants a fresher verdict.
    pub wanted: bool,
}

impl Rounds {
    /// A schedule; an interval of zero counts as 1 ms.
    pub fn new(interval_ms: u64, grace_ms: u64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            grace_ms,
        }
    }

    /// The start of the round `now_ms` lies in.
    pub fn start_of(&self, now_ms: u64) -> u64 {
        now_ms - now_ms % self.interval_ms.max(1)
    }

    /// The start of the round after the one `t_ms` lies in.
    pub fn next_after(&self, t_ms: u64) -> u64 {
        self.start_of(t_ms).saturating_add(self.interval_ms.max(1))
    }

    /// Milliseconds from `now_ms` to the next round.
    pub fn until_next(&self, now_ms: u64) -> u64 {
        self.next_after(now_ms) - now_ms
    }

    /// Whether a round started after `then_ms` and by `now_ms`.
    pub fn crossed(&self, then_ms: u64, now_ms: u64) -> bool {
        self.start_of(now_ms) > then_ms
    }

    /// The clock a challenge started at `now_ms` for `why` runs on: a round's runs from
    /// at most `grace` after the round started, so issuing it late gains the node nothing.
    pub fn issued_at(&self, why: Why, now_ms: u64) -> u64 {
        match why {
            Why::Round => now_ms.min(self.start_of(now_ms).saturating_add(self.grace_ms)),
            Why::Join | Why::Resumed | Why::Changed | Why::Wanted => now_ms,
        }
    }

    /// When the node's next round is due, after a challenge issued at `issued_ms`.
    pub fn next_due(&self, issued_ms: u64) -> u64 {
        self.next_after(issued_ms)
    }

    /// Until when a verdict of a challenge issued at `issued_ms` counts: the next round's
    /// challenge should be judged by then.
    pub fn valid_until(&self, issued_ms: u64, timeout_ms: u64) -> u64 {
        self.next_after(issued_ms)
            .saturating_add(self.grace_ms)
            .saturating_add(timeout_ms)
    }

    /// Whether to (re)start the node's challenge at `now_ms`, and why. An open challenge
    /// continues, unless it started between rounds and a round has started since: then the
    /// round's replaces it (`Some(Round)`).
    pub fn decide(&self, node: &NodeSchedule, now_ms: u64) -> Option<Why> {
        if let Some((issued, why)) = node.open {
            return (why != Why::Round && self.crossed(issued, now_ms)).then_some(Why::Round);
        }
        if !node.judged {
            return Some(if node.resumed { Why::Resumed } else { Why::Join });
        }
        if now_ms >= node.next_due_ms {
            return Some(Why::Round);
        }
        // Between rounds only a node in good standing is challenged again: one that failed
        // would otherwise pick its own time by changing its report.
        if !node.passed {
            return None;
        }
        if node.changed {
            return Some(Why::Changed);
        }
        node.wanted.then_some(Why::Wanted)
    }
}

/// The GPUs of a node *proven* in a round, after a challenge started for `why` that the
/// GPUs `passed` passed: a round proves what passed it; a challenge between rounds proves
/// nothing new, and a proven GPU stays proven only if it passed again. A resumed round
/// proves nothing new either: the round's other nodes may have answered under the
/// previous leader already, so it is not at the same time as theirs. A hub with
/// probation (docs/trust.md, "Probation") counts only proven GPUs as verified.
pub fn proven_after<'a>(
    why: Why,
    passed: impl IntoIterator<Item = &'a str>,
    proven: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    passed
        .into_iter()
        .filter(|uuid| why == Why::Round || proven.contains(*uuid))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
#[path = "rounds_tests.rs"]
mod tests;
