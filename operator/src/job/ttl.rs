//! `spec.ttlSecondsAfterFinished`: a finished job deletes itself, as Kubernetes' TTL
//! controller deletes a finished Job. The deletion runs the job's finalizer like any
//! other: its members are cleaned up and its usage is metered before it goes.

use std::time::Duration;

use gpufed_api::ComputeJob;
use gpufed_api::job_status::{ComputeJobStatus, JobPhase};
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::events;
use crate::context::Context;
use crate::error::{Error, Result};

/// What the TTL asks of a job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// No TTL, or the job has not finished.
    Never,
    /// Delete it now.
    Now,
    /// Look again in this many seconds.
    In(u64),
}

/// Whether `job` (with `status`, as just planned) is due for deletion at `now` (Unix
/// seconds), counting from its completion time — else, for a status that lacks one (the
/// operator always writes it), from its last attempt's end, else from its creation.
pub fn due(job: &ComputeJob, status: &ComputeJobStatus, now: i64) -> Due {
    let Some(ttl) = job.spec.ttl_seconds_after_finished else {
        return Due::Never;
    };
    if !matches!(status.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        return Due::Never;
    }
    let finished = status
        .completion_time
        .as_deref()
        .and_then(crate::time::parse)
        .or_else(|| {
            let ends = status
                .attempts
                .iter()
                .filter_map(|a| crate::time::parse(&a.end_time));
            ends.max()
        })
        .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()))
        .unwrap_or(now);
    let at = finished.saturating_add(i64::from(ttl));
    if now >= at {
        Due::Now
    } else {
        Due::In(u64::try_from(at - now).unwrap_or(u64::MAX))
    }
}

/// Enforces the TTL of a job whose status is `status`: deletes it when due (fenced by its
/// UID, so a job re-created under the same name is not touched) and says when to look
/// again; `None` when the TTL asks nothing.
pub async fn enforce(
    ctx: &Context,
    job: &ComputeJob,
    status: &ComputeJobStatus,
    now: i64,
) -> Result<Option<Action>> {
    match due(job, status, now) {
        Due::Never => Ok(None),
        Due::In(secs) => Ok(Some(Action::requeue(Duration::from_secs(secs.max(1))))),
        Due::Now => {
            let ns = job.namespace().unwrap_or_default();
            let api: Api<ComputeJob> = Api::namespaced(ctx.hub.clone(), &ns);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: job.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            let ttl = job.spec.ttl_seconds_after_finished.unwrap_or_default();
            ctx.reporter.publish(
                kube::Resource::object_ref(job, &()),
                vec![events::note(
                    false,
                    "TTLExpired",
                    "Delete",
                    format!("finished more than {ttl}s ago (spec.ttlSecondsAfterFinished): deleting"),
                )],
            );
            match api.delete(&job.name_any(), &params).await {
                Ok(_) => {}
                // Already gone, or another job of that name now: nothing of ours to delete.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(Error::hub("ComputeJob delete (ttlSecondsAfterFinished)", e)),
            }
            tracing::info!(ttl, "finished job deleted after its TTL");
            Ok(Some(Action::await_change()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ttl: Option<u32>) -> ComputeJob {
        let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": "j", "namespace": "team"},
            "spec": {"gpusPerWorker": 1, "maxPricePerGpuHour": "2",
                     "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}}
        }))
        .expect("job");
        j.spec.ttl_seconds_after_finished = ttl;
        j
    }

    fn status(phase: JobPhase, completed: Option<&str>) -> ComputeJobStatus {
        ComputeJobStatus {
            phase: Some(phase),
            completion_time: completed.map(str::to_owned),
            ..ComputeJobStatus::default()
        }
    }

    /// 2026-01-01T00:10:00Z.
    const NOW: i64 = 1_767_226_200;

    #[test]
    fn only_finished_jobs_with_a_ttl_are_due_counting_from_completion() {
        let done = status(JobPhase::Succeeded, Some("2026-01-01T00:09:00Z"));
        assert_eq!(due(&job(None), &done, NOW), Due::Never);
        assert_eq!(due(&job(Some(100)), &done, NOW), Due::In(40));
        assert_eq!(due(&job(Some(60)), &done, NOW), Due::Now);
        assert_eq!(due(&job(Some(0)), &done, NOW), Due::Now);
        let failed = status(JobPhase::Failed, Some("2026-01-01T00:00:00Z"));
        assert_eq!(due(&job(Some(600)), &failed, NOW), Due::Now);
        for phase in [
            JobPhase::Queued,
            JobPhase::Running,
            JobPhase::Recovering,
            JobPhase::Suspended,
        ] {
            assert_eq!(
                due(&job(Some(0)), &status(phase, None), NOW),
                Due::Never,
                "{phase:?}"
            );
        }
    }

    #[test]
    fn without_a_completion_time_the_last_attempt_or_the_creation_counts() {
        let mut j = job(Some(120));
        j.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().expect("time"),
        ));
        // Created 600 s ago: due.
        assert_eq!(due(&j, &status(JobPhase::Succeeded, None), NOW), Due::Now);
        let mut garbled = status(JobPhase::Succeeded, Some("yesterday"));
        garbled.attempts = serde_json::from_value(serde_json::json!([
            {"attempt": 1, "provider": "a", "outcome": "Failed", "message": "", "gpuSeconds": 0,
             "pricePerGpuHour": "1", "endTime": "2026-01-01T00:08:00Z"},
            {"attempt": 2, "provider": "b", "outcome": "Succeeded", "message": "", "gpuSeconds": 0,
             "pricePerGpuHour": "1", "endTime": "2026-01-01T00:09:30Z"}
        ]))
        .expect("attempts");
        assert_eq!(due(&j, &garbled, NOW), Due::In(90), "the later attempt's end");
        // Nothing to count from: a whole TTL from now, and never early.
        assert_eq!(
            due(&job(Some(30)), &status(JobPhase::Failed, None), NOW),
            Due::In(30)
        );
    }
}
