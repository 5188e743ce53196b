//! Evidence that a provider abandoned running jobs (kind `abandoned-job`, docs/trust.md
//! "Evidence and slashing"): attempts the hub ended `ProviderLost` — the provider went
//! silent or NotReady past its grace period while the job ran.
//!
//! The hub cannot tell a provider that vanished from its own lost connectivity: when it
//! loses most of the fleet at once, the fault is most likely its own, and no provider is
//! to blame. So an attempt counts only if it ended
//! - while this process watched the fleet (after its first look: before that it cannot
//!   say how the rest of the fleet fared),
//! - not within [`MARGIN_SECS`] of a moment the fleet looked lost at large
//!   ([`fleet_lost`]), and
//! - within [`FRESH_SECS`] of now: evidence is taken promptly, while the fleet's state
//!   around the loss is still known to this process.
//!
//! A provider gets at most one such evidence per cooldown (as every kind), and the Stake's
//! dispute window lets an administrator overturn it.

use std::sync::Mutex;

use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::AttemptOutcome;
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_trust::evidence::{EVIDENCE_ABANDONED_JOB, Evidence, JobEvidence};
use kube::ResourceExt;

/// How recent an ended attempt must be to be taken as evidence (seconds).
pub const FRESH_SECS: i64 = 600;
/// How far from a fleet-wide loss an attempt must have ended (seconds).
pub const MARGIN_SECS: i64 = 300;

/// Whether the fleet looks lost at large: more than one provider unreachable, and more
/// than half of those the hub has judged — or the only one judged. One provider of two
/// lost is that provider's doing; both of two, six of ten, or the lone provider of a
/// federation of one may be the hub's.
pub fn fleet_lost<'a>(providers: impl IntoIterator<Item = &'a GpuProvider>) -> bool {
    let (mut judged, mut lost) = (0usize, 0usize);
    for p in providers {
        let Some(c) = p
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::REACHABLE))
        else {
            continue;
        };
        judged += 1;
        if c.status == ConditionStatus::False {
            lost += 1;
        }
    }
    // With one provider judged, its loss and the hub's look the same: never its fault.
    lost > 0 && (judged < 2 || (lost > 1 && lost * 2 > judged))
}

/// What this process saw of the fleet: since when, and when it looked lost at large.
#[derive(Debug, Default)]
pub struct LossWatch(Mutex<Watched>);

#[derive(Debug, Default)]
struct Watched {
    since: Option<i64>,
    /// Closed intervals (unix seconds) during which the fleet looked lost.
    lost: Vec<(i64, i64)>,
    last_look: Option<i64>,
}

impl LossWatch {
    /// Takes one look at the fleet (`providers`, read only if this is the first look in
    /// the second `now`: every provider's reconcile calls this).
    pub fn look(&self, now: i64, providers: impl FnOnce() -> Vec<std::sync::Arc<GpuProvider>>) {
        let Ok(mut w) = self.0.lock() else {
            return;
        };
        if w.last_look == Some(now) {
            return;
        }
        w.last_look = Some(now);
        w.since.get_or_insert(now);
        if fleet_lost(providers().iter().map(AsRef::as_ref)) {
            match w.lost.last_mut() {
                // Seen lost at the previous look too: the same episode goes on.
                Some((_, end)) if now - *end <= MARGIN_SECS => *end = now,
                _ => w.lost.push((now, now)),
            }
        }
        // Older episodes can no longer concern a fresh attempt.
        w.lost.retain(|(_, end)| now - end <= FRESH_SECS + MARGIN_SECS);
    }

    /// Forgets everything seen (a new leadership term: the fleet's state while another
    /// process led is unknown to this one).
    pub fn forget(&self) {
        if let Ok(mut w) = self.0.lock() {
            *w = Watched::default();
        }
    }

    /// Whether an attempt that ended at `end` may be taken as a provider's doing at `now`.
    pub fn attributable(&self, end: i64, now: i64) -> bool {
        let Ok(w) = self.0.lock() else {
            return false;
        };
        let watched = w.since.is_some_and(|since| end >= since);
        let fresh = end <= now && now - end <= FRESH_SECS;
        let near_loss = w
            .lost
            .iter()
            .any(|(start, stop)| end >= start - MARGIN_SECS && end <= stop + MARGIN_SECS);
        watched && fresh && !near_loss
    }
}

/// Evidence that `provider` abandoned the attempts of `jobs` it lost and `attributable`
/// admits (by end time); `None` when there are none. Dated by the last of them, so the
/// same attempts make the same document.
pub fn evidence<'a>(
    provider: &str,
    jobs: impl IntoIterator<Item = &'a ComputeJob>,
    attributable: impl Fn(i64) -> bool,
) -> Option<Evidence> {
    let mut out = Vec::new();
    let mut last = None;
    for job in jobs {
        let (Some(uid), Some(st)) = (job.metadata.uid.as_deref(), job.status.as_ref()) else {
            continue;
        };
        for a in &st.attempts {
            if a.provider != provider || a.outcome != AttemptOutcome::ProviderLost {
                continue;
            }
            let Some(end) = crate::time::parse(&a.end_time) else {
                continue;
            };
            if !attributable(end) {
                continue;
            }
            last = last.max(Some(end));
            out.push(JobEvidence {
                namespace: job.namespace().unwrap_or_default(),
                name: job.name_any(),
                uid: uid.to_owned(),
                attempt: a.attempt,
                ended_at: a.end_time.clone(),
                message: a.message.clone(),
            });
        }
    }
    Some(
        Evidence {
            kind: EVIDENCE_ABANDONED_JOB.to_owned(),
            provider: provider.to_owned(),
            observed_at: crate::time::format(last?),
            jobs: out,
            ..Default::default()
        }
        .capped(),
    )
}

#[cfg(test)]
#[path = "abandoned_tests.rs"]
mod tests;
