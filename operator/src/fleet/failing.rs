//! A streak of failed probes of one provider, and how long it has lasted.

/// A streak of failed probes of one provider by this process, within one leadership
/// term: when the first and the last of them ran (unix seconds), how many there were, and
/// how long after the last one the streak still counts (`cycle`). A successful probe ends
/// it; a probe failing in a later term starts a new one (the old streak's probes say
/// nothing of what happened while this process did not lead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failing {
    /// The leadership term ([`crate::lease::Leadership::term`]) of the streak.
    pub term: u64,
    /// When the first failed probe of the streak ran.
    pub first: i64,
    /// When the latest failed probe of the streak ran.
    pub last: i64,
    /// How many probes of the streak failed.
    pub probes: u32,
    /// One probe cycle (seconds: the heartbeat interval and the member timeout): by then
    /// the next probe has run and failed too, if the provider is still down.
    pub cycle: i64,
}

impl Failing {
    /// How long this process has seen the provider fail at `now` (seconds): from the
    /// first failed probe to `now`, but no further than one probe cycle past the latest
    /// one — so failing over does not wait for the next probe to come round (nor for a
    /// reconcile that failed after probing, and is retried later), while a streak whose
    /// probes stopped (the hub down, no probe running) stops counting. `0` with a single
    /// failed probe: one failure is no span.
    pub fn observed(&self, now: i64) -> i64 {
        if self.probes < 2 {
            return 0;
        }
        now.min(self.last.saturating_add(self.cycle.max(0)))
            .saturating_sub(self.first)
            .max(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "failing_tests.rs"]
mod tests;
