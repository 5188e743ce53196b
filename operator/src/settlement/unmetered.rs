//! Usage the meter cannot journal, told on its ComputeJob: a Warning Event (reason from
//! [`Unmetered::reason`]) and a warning in the log when first found, again every
//! [`RETELL_SECS`] while it lasts (Events expire after an hour) — not once per round.
//!
//! Telling is all this adds: the usage itself is not dropped. The journal's metering
//! position did not move, so the meter tries it again every round; and the job is neither
//! deleted (`mapping::stopped_and_metered`) nor its history folded (`job::plan::history`)
//! while the journal lacks it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gpufed_api::ComputeJob;
use gpufed_settlement::Journal;
use kube::ResourceExt;
use tracing::warn;

use super::meter::{MeterConfig, Unmetered, unmeterable};
use crate::context::Context;
use crate::job::events::note;

/// How often a problem that lasts is told again.
pub const RETELL_SECS: i64 = 3600;

/// A problem: (job uid, attempt, provider, reason).
type Key = (String, u32, String, &'static str);

/// When each problem found was last told.
#[derive(Debug, Default)]
pub struct Told {
    at: BTreeMap<Key, i64>,
}

impl Told {
    /// Of `found` (every problem of this round), those to tell at `now`: not told yet, or
    /// last told [`RETELL_SECS`] ago. Problems no longer found are forgotten, so one that
    /// comes back is told at once.
    pub fn due<T>(&mut self, found: Vec<(Key, T)>, now: i64) -> Vec<T> {
        let mut kept = BTreeMap::new();
        let mut out = Vec::new();
        for (key, item) in found {
            let last = self.at.get(&key).copied();
            let when = match last {
                Some(t) if now.saturating_sub(t) < RETELL_SECS => t,
                _ => {
                    out.push(item);
                    now
                }
            };
            kept.insert(key, when);
        }
        self.at = kept;
        out
    }
}

/// How many attempts (job uid, attempt, provider) `found` holds problems of: one attempt
/// may have several (the `gpufed_settlement_unmetered_attempts` gauge).
fn attempts<T>(found: &[(Key, T)]) -> usize {
    let keys: BTreeSet<(&str, u32, &str)> = found
        .iter()
        .map(|((uid, attempt, provider, _), _)| (uid.as_str(), *attempt, provider.as_str()))
        .collect();
    keys.len()
}

/// The message of an Event about `u` (what waits, why, what happens to it).
pub fn message(u: &Unmetered) -> String {
    let what = if u.gpu_seconds > 0 {
        format!("{} GPU-seconds of attempt {}", u.gpu_seconds, u.attempt)
    } else {
        format!("the usage of running attempt {}", u.attempt)
    };
    format!(
        "{what} on provider {} cannot be metered: {}; metering retries every settlement round, \
         and the job is not deleted until its usage is metered",
        u.provider, u.message
    )
}

/// Every problem of `jobs` this round ([`unmeterable`]), keyed for [`Told`]. Takes the
/// round's heartbeats and clock, so a live slice the journal refuses is found too, not only
/// ended attempts and the live attempt's price.
fn problems<'a>(
    jobs: &'a [Arc<ComputeJob>],
    journal: &Journal,
    heartbeat: impl Fn(&str) -> Option<i64>,
    now: i64,
    cfg: &MeterConfig,
) -> Vec<(Key, (&'a Arc<ComputeJob>, Unmetered))> {
    jobs.iter()
        .flat_map(|job| {
            let uid = job.metadata.uid.clone().unwrap_or_default();
            unmeterable(job, journal, &heartbeat, now, cfg)
                .into_iter()
                .map(move |u| {
                    let key = (uid.clone(), u.attempt, u.provider.clone(), u.reason);
                    (key, (job, u))
                })
        })
        .collect()
}

/// Tells the usage of `jobs` that `journal` lacks and cannot be metered (see the module).
/// Run after the round's records are journaled, with the heartbeats and clock it metered
/// with.
pub(super) fn tell(
    ctx: &Context,
    told: &mut Told,
    journal: &Journal,
    jobs: &[Arc<ComputeJob>],
    heartbeat: impl Fn(&str) -> Option<i64>,
    now: i64,
    cfg: &MeterConfig,
) {
    let found = problems(jobs, journal, heartbeat, now, cfg);
    ctx.metrics
        .settlement_unmetered_attempts
        .set(i64::try_from(attempts(&found)).unwrap_or(i64::MAX));
    let due = told.due(found, now);
    for (job, u) in due {
        let msg = message(&u);
        warn!(namespace = ?job.namespace(), job = %job.name_any(), reason = u.reason, "{msg}");
        ctx.reporter.publish(
            kube::Resource::object_ref(job.as_ref(), &()),
            vec![note(true, u.reason, "Meter", msg)],
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::settlement::meter::PRICE_NOT_BILLABLE;

    fn key(uid: &str) -> Key {
        (uid.into(), 1, "p".into(), PRICE_NOT_BILLABLE)
    }

    #[test]
    fn a_problem_is_told_once_an_hour_while_it_lasts_and_again_when_it_returns() {
        let mut told = Told::default();
        assert_eq!(told.due(vec![(key("a"), "a")], 0), vec!["a"]);
        // Every round after: quiet, but for a new problem.
        assert_eq!(told.due(vec![(key("a"), "a"), (key("b"), "b")], 2), vec!["b"]);
        assert!(
            told.due(vec![(key("a"), "a"), (key("b"), "b")], RETELL_SECS - 1)
                .is_empty()
        );
        assert_eq!(
            told.due(vec![(key("a"), "a"), (key("b"), "b")], RETELL_SECS),
            vec!["a"]
        );
        // Fixed, then back: told at once.
        assert!(told.due(vec![(key("b"), "b")], RETELL_SECS + 1).is_empty());
        assert_eq!(told.due(vec![(key("a"), "a")], RETELL_SECS + 2), vec!["a"]);
    }

    #[test]
    fn a_refused_live_slice_is_a_problem_to_tell() {
        use crate::settlement::meter::USAGE_RECORD_REFUSED;
        use gpufed_api::job_status::{ComputeJobStatus, Placement};
        const T0: i64 = 1_700_000_000;
        let mut job: ComputeJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": "train", "namespace": "n".repeat(64), "uid": "uid-1"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                     "gpusPerWorker": 1, "maxPricePerGpuHour": "30"}
        }))
        .unwrap();
        let mut st = ComputeJobStatus {
            placement: Some(Placement {
                attempt: 1,
                provider: "dc-1".into(),
                gpus: 1,
                price_per_gpu_hour: "18".into(),
                workers: vec![],
                placed_time: crate::time::format(T0 - 5),
                running_time: Some(crate::time::format(T0)),
                node_unreachable_since: None,
                preempted: None,
            }),
            ..Default::default()
        };
        // A namespace longer than a DNS label: the live slice's record cannot name its
        // tenant, refused every round (the price alone is fine).
        let at = T0 + 3600;
        st.usage = Some(crate::job::plan::usage(&st, Some(at)));
        job.status = Some(st);
        let jobs = vec![Arc::new(job)];
        let cfg = MeterConfig {
            slice: 60,
            lag: 0,
            decimals: 18,
        };
        let found = problems(&jobs, &Journal::new(), |_| Some(at), at, &cfg);
        assert_eq!(found.len(), 1);
        let ((uid, attempt, provider, reason), (_, u)) = &found[0];
        assert_eq!(
            (uid.as_str(), *attempt, provider.as_str(), *reason),
            ("uid-1", 1, "dc-1", USAGE_RECORD_REFUSED)
        );
        assert_eq!(u.reason, USAGE_RECORD_REFUSED);
        // Without a heartbeat nothing live is due, so nothing is refused.
        assert!(problems(&jobs, &Journal::new(), |_| None, at, &cfg).is_empty());
    }

    #[test]
    fn the_gauge_counts_attempts_not_their_problems() {
        let other = |uid: &str, attempt| ((uid.to_string(), attempt, "p".to_string(), "Other"), ());
        let found = vec![(key("a"), ()), other("a", 1), other("a", 2), (key("b"), ())];
        assert_eq!(attempts(&found), 3);
        assert_eq!(attempts::<()>(&[]), 0);
    }

    #[test]
    fn the_message_says_what_waits_and_that_it_is_retried() {
        let u = Unmetered {
            attempt: 2,
            provider: "dc-1".into(),
            gpu_seconds: 400,
            reason: PRICE_NOT_BILLABLE,
            message: "price 20 per GPU-hour has no value".into(),
        };
        let m = message(&u);
        assert!(
            m.starts_with("400 GPU-seconds of attempt 2 on provider dc-1"),
            "{m}"
        );
        assert!(m.contains("price 20") && m.contains("retries"), "{m}");
        let live = Unmetered { gpu_seconds: 0, ..u };
        assert!(message(&live).starts_with("the usage of running attempt 2"));
    }
}
