//! Verification right before `verifiedOnly` work starts (docs/trust.md, "Verified
//! lately"). Verdicts live until their node's next round (`gpufed_trust::rounds`); a job
//! that requires verified GPUs should not start on a card last checked an hour ago — the
//! node may have been swapped for a cheaper machine that reuses its key, or its card may
//! have degraded.
//!
//! So when a placement round places a `verifiedOnly` job on a node whose last passed
//! challenge is older than `--verify-before-start`, the placement is not written: the
//! node is challenged at its provider's next heartbeat, and the job says it waits
//! (`Placed=False`, `AwaitingVerification`). Once the node passes, a later round places
//! the job for real; a node that fails is no longer verified, and the job goes elsewhere.

use std::time::Duration;

use gpufed_placement as pl;

use super::{Verifier, ms};

impl Verifier {
    /// When `node` of `provider` last finished a challenge that every one of its GPUs
    /// passed (ms), if its latest challenge was such.
    pub fn passed_at(&self, provider: &str, node: &str) -> Option<u64> {
        let nodes = self.nodes.lock().ok()?;
        let st = nodes
            .get(&(provider.to_owned(), node.to_owned()))
            .filter(|st| !st.absent)?;
        let passed = !st.verdicts.is_empty() && st.verdicts.iter().all(|v| v.passed());
        st.verdict_at_ms.filter(|_| passed)
    }

    /// [`defer_stale`] with this verifier's passes and `--verify-before-start`, now; the
    /// nodes it names are challenged at their next heartbeat.
    pub fn defer_stale(&self, snap: &pl::Snapshot, placements: &mut Vec<pl::Placement>) -> Deferred {
        let verified_only: std::collections::BTreeSet<&str> = snap
            .jobs
            .iter()
            .filter(|j| j.verified_only)
            .map(|j| j.id.as_str())
            .collect();
        let deferred = defer_stale(
            placements,
            |id| verified_only.contains(id),
            |p, n| self.passed_at(p, n),
            crate::time::now_millis(),
            self.cfg.before_start,
        );
        self.want_fresh(&deferred.nodes);
        deferred
    }

    /// Asks for a challenge of these `(provider, node)`s at their provider's next
    /// heartbeat, unless one is running (whose verdict is as fresh).
    pub fn want_fresh(&self, stale: &[(String, String)]) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        for key in stale {
            if let Some(st) = nodes.get_mut(key) {
                st.wanted = true;
            }
        }
    }
}

/// `Placed=False` reason of a `verifiedOnly` job whose placement waits for its nodes to
/// pass a new challenge.
pub const AWAITING_VERIFICATION: &str = "AwaitingVerification";

/// Placements held back this round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deferred {
    /// Job id and its `Placed=False` message.
    pub jobs: Vec<(String, String)>,
    /// `(provider, node)`s to challenge now.
    pub nodes: Vec<(String, String)>,
}

/// Pure: takes out of `placements` those of `verifiedOnly` jobs (`verified_only(id)`) on
/// a node whose last pass (`passed_at`) is more than `max_age` before `now_ms`; they wait
/// for a new challenge of those nodes. `max_age` zero: nothing waits.
///
/// Only the nodes such a job was placed on are challenged again, not every stale node:
/// a busy market always has some `verifiedOnly` job queued, and challenging the whole
/// fleet for it would make `--verify-before-start` the challenge interval.
pub fn defer_stale(
    placements: &mut Vec<pl::Placement>,
    verified_only: impl Fn(&str) -> bool,
    passed_at: impl Fn(&str, &str) -> Option<u64>,
    now_ms: u64,
    max_age: Duration,
) -> Deferred {
    let mut out = Deferred::default();
    if max_age.is_zero() {
        return out;
    }
    let max = ms(max_age);
    placements.retain(|p| {
        if !verified_only(&p.job) {
            return true;
        }
        let nodes: std::collections::BTreeSet<&str> = p.workers.iter().map(|w| w.node.as_str()).collect();
        let stale: Vec<&str> = nodes
            .into_iter()
            .filter(|n| passed_at(&p.provider, n).is_none_or(|t| now_ms.saturating_sub(t) > max))
            .collect();
        if stale.is_empty() {
            return true;
        }
        let (noun, verb) = if stale.len() == 1 { ("node", "passes") } else { ("nodes", "pass") };
        out.jobs.push((
            p.job.clone(),
            format!(
                "placed on provider {} once its {noun} {} {verb} a new challenge: verifiedOnly work starts only on GPUs verified within {}s (--verify-before-start)",
                p.provider,
                stale.join(", "),
                max_age.as_secs()
            ),
        ));
        let provider = &p.provider;
        out.nodes
            .extend(stale.into_iter().map(|n| (provider.clone(), n.to_owned())));
        false
    });
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "fresh_tests.rs"]
mod tests;
