//! Preemption in the placement round. The engine may place a job that fits nowhere by
//! evicting running attempts of strictly lower priority (only a job whose
//! `spec.placement.preemptLowerPriority` is set, and by default only work of its own
//! namespace: [`Preemption`]). The round does not place that job yet, because the victims'
//! GPUs are busy until their pods are gone. It marks each victim's placement `preempted`
//! (fenced by the victim's resourceVersion, so a victim that finished or changed meanwhile
//! is left alone), and the victim's job controller ends that attempt `Preempted` — billed
//! up to then, its pods fenced like a lost attempt's, the job queued again without using
//! up an attempt. While any victim is still marked, the job sits out the rounds
//! ([`crate::mapping::evictions`]), so it never evicts twice for the same room;
//! once they are gone, the next round places it where they ran.

use std::sync::Arc;
use std::time::Instant;

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus::False;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::HeldRoom;
use gpufed_api::job_status::Preemption as Mark;
use gpufed_placement as pl;
use kube::ResourceExt;
use tokio::sync::Mutex;

use super::Written;
use crate::context::Context;
use crate::mapping;

/// Condition reason (`Placed=False`) of a job waiting for the work it evicts to stop.
pub const PREEMPTING: &str = "Preempting";

/// Whose running work a job with `preemptLowerPriority` may evict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Preemption {
    /// Nobody's: the flag is ignored and such a job waits like any other.
    Off,
    /// Its own namespace's (tenant's) work only.
    #[default]
    Namespace,
    /// Any namespace's work: one tenant's priority outranks another's.
    Any,
}

impl Preemption {
    /// The engine's configuration for this policy.
    pub fn engine_config(self) -> pl::Config {
        pl::Config {
            preemption: self != Preemption::Off,
            preempt_across_namespaces: self == Preemption::Any,
            ..pl::Config::default()
        }
    }
}

/// Carries out a placement that evicts running work: marks each victim still live, then
/// says on the job what it waits for and the room it holds meanwhile. Returns how many
/// victims were marked now.
pub(super) async fn evict(
    ctx: &Context,
    jobs: &mapping::JobIndex<'_>,
    p: &pl::Placement,
    held: Option<HeldRoom>,
    now: i64,
    written: &Mutex<Written>,
) -> usize {
    let by_id = |id: &str| jobs.get(id);
    let Some(job) = by_id(&p.job) else { return 0 };
    let now_text = crate::time::format(now);
    let mark = Mark {
        by: p.job.clone(),
        priority: job.spec.priority,
        time: now_text.clone(),
    };
    let mut marked = 0;
    for victim in p.evicts.iter().filter_map(|id| by_id(id)) {
        if write_mark(ctx, victim, &mark, "priority", written).await {
            marked += 1;
            tracing::info!(job = %mapping::job_id(victim), for_job = %p.job, provider = %p.provider, "evicting for a job of higher priority");
        }
    }
    if let Err(e) = write_waiting(ctx, job, p, held, &now_text).await {
        tracing::info!(job = %p.job, error = %e, "preempting reason and held room not written");
    }
    marked
}

/// Writes [`waiting_status`]. The round's copy of a job is often one write behind (its
/// own reconcile just wrote conditions), and the job sits out the rounds that follow, so
/// a conflict is retried once on the job read again — while it still queues with the
/// same spec: the held room is what a new leader would hold.
async fn write_waiting(
    ctx: &Context,
    job: &ComputeJob,
    p: &pl::Placement,
    held: Option<HeldRoom>,
    now: &str,
) -> crate::error::Result<()> {
    let Some(status) = waiting_status(job, p, held.clone(), now) else {
        return Ok(());
    };
    match crate::job::write_status(ctx, job, &status).await {
        Err(crate::error::Error::Conflict(_)) if ctx.leadership.is_leader() => {
            let Some(fresh) = super::write::reread_queued(ctx, job).await? else {
                return Ok(());
            };
            match waiting_status(&fresh, p, held, now) {
                Some(status) => crate::job::write_status(ctx, &fresh, &status).await.map(drop),
                None => Ok(()),
            }
        }
        other => other.map(drop),
    }
}

/// The status of a job whose placement `p` evicts work: `Placed=False/Preempting` saying
/// what it waits for, and the room it holds meanwhile; `None` when it says so already.
pub fn waiting_status(
    job: &ComputeJob,
    p: &pl::Placement,
    held: Option<HeldRoom>,
    now: &str,
) -> Option<gpufed_api::ComputeJobStatus> {
    let message = waiting_message(p);
    let current = job.status.as_ref();
    let said = current
        .and_then(|s| conditions::find(&s.conditions, types::PLACED))
        .is_some_and(|c| c.reason == PREEMPTING && c.message == message);
    if said && current.and_then(|s| s.held.as_ref()) == held.as_ref() {
        return None;
    }
    let mut status = current.cloned().unwrap_or_default();
    let cond = conditions::condition(
        types::PLACED,
        False,
        PREEMPTING,
        message,
        job.metadata.generation,
        now,
    );
    conditions::set(&mut status.conditions, cond);
    status.held = held;
    Some(status)
}

/// Marks `victim`'s live attempt evicted by `mark` (fenced by its resourceVersion),
/// counted under `cause` in `gpufed_evictions_total`; whether it was written. Not written:
/// no live attempt, one already marked, or a write that failed (the next round decides
/// again).
pub(super) async fn write_mark(
    ctx: &Context,
    victim: &Arc<ComputeJob>,
    mark: &Mark,
    cause: &'static str,
    written: &Mutex<Written>,
) -> bool {
    let Some(status) = marked_status(victim, mark) else {
        return false;
    };
    match crate::job::write_status(ctx, victim, &status).await {
        Ok(_) => {
            ctx.metrics
                .evictions_total
                .get_or_create(&crate::metrics::EvictionLabel { cause })
                .inc();
            // The next round, within milliseconds, must see the mark even if the store
            // does not yet: as a placement just written.
            let mut copy = (**victim).clone();
            copy.status = Some(status);
            let uid = victim.uid().unwrap_or_default();
            written.lock().await.insert(uid, (Instant::now(), Arc::new(copy)));
            true
        }
        Err(e) => {
            tracing::info!(job = %mapping::job_id(victim), by = %mark.by, error = %e, "eviction not written; next round decides again");
            false
        }
    }
}

/// The victim's status with its live attempt marked evicted by `mark`; `None` when it has
/// no live attempt or one already marked (by this job or another).
pub fn marked_status(victim: &ComputeJob, mark: &Mark) -> Option<gpufed_api::ComputeJobStatus> {
    if !mapping::is_live(victim) {
        return None;
    }
    let mut status = victim.status.clone()?;
    let placement = status.placement.as_mut()?;
    if placement.preempted.is_some() {
        return None;
    }
    placement.preempted = Some(mark.clone());
    Some(status)
}

/// Whether a victim's eviction mark still stands: its preemptor (looked up by the mark's
/// `by`; `None` when it is gone) still exists, still waits for placement and still
/// outranks the victim. One deleted, suspended, finished or lowered in the moment between
/// the round's mark and the victim's controller acting on it no longer needs the room, so
/// the victim keeps running and the mark is dropped.
pub fn mark_stands(preemptor: Option<&ComputeJob>, victim: &ComputeJob) -> bool {
    preemptor.is_some_and(|p| mapping::is_queued(p) && p.spec.priority > victim.spec.priority)
}

/// What a job that evicts work waits for, in its `Placed` condition.
pub fn waiting_message(p: &pl::Placement) -> String {
    format!(
        "evicting lower-priority work on {}: {}; placed once it has stopped",
        p.provider,
        p.evicts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, placed: bool, marked: bool) -> ComputeJob {
        let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": name, "namespace": "team", "uid": name, "resourceVersion": "7"},
            "spec": {"workers": 1, "gpusPerWorker": 1, "maxPricePerGpuHour": "2.00",
                     "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}}
        }))
        .expect("job");
        if placed {
            j.status = Some(gpufed_api::ComputeJobStatus {
                placement: Some(gpufed_api::job_status::Placement {
                    attempt: 1,
                    provider: "a".into(),
                    gpus: 1,
                    price_per_gpu_hour: "1.00".into(),
                    placed_time: "2026-01-01T00:00:00Z".into(),
                    preempted: marked.then(|| Mark {
                        by: "team/other".into(),
                        priority: 900,
                        time: "2026-01-01T00:00:00Z".into(),
                    }),
                    ..Default::default()
                }),
                phase: Some(gpufed_api::job_status::JobPhase::Running),
                ..Default::default()
            });
        }
        j
    }

    fn mark() -> Mark {
        Mark {
            by: "team/urgent".into(),
            priority: 500,
            time: "2026-01-01T00:01:00Z".into(),
        }
    }

    #[test]
    fn only_a_live_unmarked_attempt_is_marked() {
        let status = marked_status(&job("v", true, false), &mark()).expect("marked");
        let p = status.placement.expect("placement kept");
        assert_eq!(p.preempted, Some(mark()));
        assert_eq!(p.attempt, 1, "the attempt itself is untouched");
        assert_eq!(
            marked_status(&job("q", false, false), &mark()),
            None,
            "queued: nothing to evict"
        );
        assert_eq!(
            marked_status(&job("m", true, true), &mark()),
            None,
            "already evicted for another job: its mark stands"
        );
        let mut done = job("d", true, false);
        if let Some(s) = done.status.as_mut() {
            s.phase = Some(gpufed_api::job_status::JobPhase::Succeeded);
        }
        assert_eq!(marked_status(&done, &mark()), None, "finished: nothing to evict");
    }

    #[test]
    fn a_mark_stands_only_while_its_preemptor_waits_and_outranks_the_victim() {
        let victim = job("v", true, true);
        let mut preemptor = job("other", false, false);
        preemptor.spec.priority = 900;
        assert!(
            mark_stands(Some(&preemptor), &victim),
            "queued, priority 900 over 100"
        );
        assert!(!mark_stands(None, &victim), "deleted: gone from the store");
        let mut deleting = preemptor.clone();
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:05Z".parse().expect("time"),
        ));
        assert!(!mark_stands(Some(&deleting), &victim), "being deleted");
        let mut suspended = preemptor.clone();
        suspended.spec.suspend = true;
        assert!(!mark_stands(Some(&suspended), &victim), "suspended");
        let placed = job("other", true, false);
        assert!(
            !mark_stands(Some(&placed), &victim),
            "placed meanwhile (a round that could not see the mark)"
        );
        let mut lowered = preemptor.clone();
        lowered.spec.priority = victim.spec.priority;
        assert!(!mark_stands(Some(&lowered), &victim), "no longer outranks it");
    }

    #[test]
    fn a_waiting_job_says_what_it_waits_for_and_what_it_holds_once() {
        let p = pl::Placement {
            job: "team/other".into(),
            provider: "a".into(),
            model: "A100".into(),
            workers: Vec::new(),
            price: 1,
            evicts: vec!["team/v".into()],
        };
        let held = HeldRoom {
            provider: "a".into(),
            nodes: vec![gpufed_api::job_status::HeldNode {
                node: "n1".into(),
                gpus: 2,
                ..Default::default()
            }],
        };
        let mut j = job("other", false, false);
        let st = waiting_status(&j, &p, Some(held.clone()), "2026-01-01T00:00:00Z").expect("first round");
        assert_eq!(st.held.as_ref(), Some(&held));
        let c = conditions::find(&st.conditions, types::PLACED).expect("Placed");
        assert_eq!(
            (c.reason.as_str(), c.message.contains("team/v")),
            (PREEMPTING, true)
        );
        j.status = Some(st);
        assert_eq!(
            waiting_status(&j, &p, Some(held.clone()), "2026-01-01T00:00:09Z"),
            None,
            "said already: no write"
        );
        // Said by a leader that kept no room in the status: written again, with it.
        let mut bare = j.clone();
        if let Some(s) = bare.status.as_mut() {
            s.held = None;
        }
        let st =
            waiting_status(&bare, &p, Some(held.clone()), "2026-01-01T00:00:09Z").expect("the room kept");
        assert_eq!(st.held, Some(held));
    }

    #[test]
    fn policies_map_onto_the_engine() {
        assert!(!Preemption::Off.engine_config().preemption);
        let ns = Preemption::Namespace.engine_config();
        assert!(ns.preemption && !ns.preempt_across_namespaces);
        let any = Preemption::Any.engine_config();
        assert!(any.preemption && any.preempt_across_namespaces);
        assert_eq!(Preemption::default(), Preemption::Namespace);
    }
}
