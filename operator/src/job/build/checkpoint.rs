//! Pure: where an attempt writes its checkpoints and what it may resume from.
//!
//! An attempt on a provider cut off from the hub cannot be stopped at once: its workers
//! may run on, and write checkpoints, after the hub has ended it and placed the next
//! attempt elsewhere. No object store lets the hub refuse those writes, so they are
//! fenced by layout instead: each attempt writes only under its own prefix,
//! `<checkpoint.uri>/attempt-<N>/`, which no other attempt ever writes, and a later
//! attempt is told which earlier prefixes to read and when each attempt ended — the
//! time the hub stopped counting it (for a lost provider its last heartbeat). A
//! checkpoint written under an earlier prefix after that time comes from a fenced
//! attempt and is not resumed from. So a cut-off attempt can never overwrite its
//! successor's checkpoints, and a successor never resumes from what it wrote after it
//! was fenced.

use gpufed_api::ComputeJob;
use gpufed_api::job_status::{AttemptRecord, ComputeJobStatus};
use serde::Serialize;

/// The checkpoint location shared by every attempt (`checkpoint.uri` as written).
pub const URI_VAR: &str = "GPUFED_CHECKPOINT_URI";
/// This attempt's own prefix: the only place it writes checkpoints.
pub const DIR_VAR: &str = "GPUFED_CHECKPOINT_DIR";
/// The newest earlier prefix to resume from (absent on a first run).
pub const RESUME_DIR_VAR: &str = "GPUFED_CHECKPOINT_RESUME_DIR";
/// Every earlier prefix to resume from, newest first, with each attempt's end: JSON.
pub const RESUME_VAR: &str = "GPUFED_CHECKPOINT_RESUME";

/// At most this many earlier attempts are listed (newest first). An attempt whose gang
/// ran wrote what its successors resume from; older ones only matter when every newer
/// one ended before its first checkpoint.
pub const MAX_RESUME_POINTS: usize = 8;

/// An earlier attempt's prefix and when the hub ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumePoint {
    /// The attempt's number.
    pub attempt: u32,
    /// Its prefix, `<checkpoint.uri>/attempt-<N>/`.
    pub dir: String,
    /// When it ended (RFC 3339): a checkpoint written there later is not resumed from.
    pub ended_at: String,
}

/// The prefix attempt `attempt` writes under: `uri` with one slash, `attempt-<N>/`.
pub fn attempt_dir(uri: &str, attempt: u32) -> String {
    format!("{}/attempt-{attempt}/", uri.trim_end_matches('/'))
}

/// The earlier attempts before `attempt` whose whole gang ran (only those can have
/// written a checkpoint), newest first, at most [`MAX_RESUME_POINTS`].
pub fn resume_points(uri: &str, status: Option<&ComputeJobStatus>, attempt: u32) -> Vec<ResumePoint> {
    let mut ran: Vec<&AttemptRecord> = status
        .map(|s| s.attempts.iter())
        .into_iter()
        .flatten()
        .filter(|r| r.attempt < attempt && r.running_time.is_some())
        .collect();
    ran.sort_by_key(|r| std::cmp::Reverse(r.attempt));
    ran.dedup_by_key(|r| r.attempt);
    ran.into_iter()
        .take(MAX_RESUME_POINTS)
        .map(|r| ResumePoint {
            attempt: r.attempt,
            dir: attempt_dir(uri, r.attempt),
            ended_at: r.end_time.clone(),
        })
        .collect()
}

/// The checkpoint variables of attempt `attempt`'s workers (none without a checkpoint).
pub fn env(job: &ComputeJob, attempt: u32) -> Vec<(&'static str, String)> {
    let Some(c) = &job.spec.checkpoint else {
        return Vec::new();
    };
    let mut vars = vec![(URI_VAR, c.uri.clone()), (DIR_VAR, attempt_dir(&c.uri, attempt))];
    let points = resume_points(&c.uri, job.status.as_ref(), attempt);
    if let Some(newest) = points.first() {
        vars.push((RESUME_DIR_VAR, newest.dir.clone()));
        // A list of plain strings and numbers always serializes.
        vars.push((RESUME_VAR, serde_json::to_string(&points).unwrap_or_default()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_api::job_status::AttemptOutcome;

    fn record(attempt: u32, ran: bool, end: &str) -> AttemptRecord {
        AttemptRecord {
            attempt,
            provider: "p".into(),
            outcome: AttemptOutcome::ProviderLost,
            message: String::new(),
            reason: None,
            gpu_seconds: 0,
            gpus: Some(1),
            gpu_uuids: Vec::new(),
            running_time: ran.then(|| "2026-12-03T10:00:00Z".to_owned()),
            price_per_gpu_hour: "1".into(),
            end_time: end.into(),
            removed: false,
            preempted_by: None,
        }
    }

    fn status(records: Vec<AttemptRecord>) -> ComputeJobStatus {
        ComputeJobStatus {
            attempts: records,
            ..Default::default()
        }
    }

    #[test]
    fn each_attempt_has_its_own_prefix_whatever_the_uri_ends_with() {
        for uri in ["s3://b/run", "s3://b/run/", "s3://b/run//"] {
            assert_eq!(attempt_dir(uri, 3), "s3://b/run/attempt-3/", "{uri}");
        }
        assert_ne!(attempt_dir("pvc://ckpt/x", 1), attempt_dir("pvc://ckpt/x", 11));
        assert!(!attempt_dir("pvc://ckpt/x", 11).starts_with(&attempt_dir("pvc://ckpt/x", 1)));
    }

    #[test]
    fn a_successor_resumes_from_earlier_attempts_that_ran_newest_first_with_their_fence() {
        let st = status(vec![
            record(1, true, "2026-12-03T10:05:00Z"),
            record(2, false, "2026-12-03T10:06:00Z"),
            record(3, true, "2026-12-03T10:09:00Z"),
        ]);
        let points = resume_points("s3://b/run/", Some(&st), 4);
        let got: Vec<(u32, &str, &str)> = points
            .iter()
            .map(|p| (p.attempt, p.dir.as_str(), p.ended_at.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "s3://b/run/attempt-3/", "2026-12-03T10:09:00Z"),
                (1, "s3://b/run/attempt-1/", "2026-12-03T10:05:00Z"),
            ],
            "attempt 2 never ran, so it wrote nothing to resume from"
        );
    }

    #[test]
    fn an_attempt_never_resumes_from_itself_or_a_later_one() {
        let st = status(vec![
            record(1, true, "t1"),
            record(2, true, "t2"),
            record(3, true, "t3"),
        ]);
        let points = resume_points("s3://b/run", Some(&st), 2);
        assert_eq!(points.iter().map(|p| p.attempt).collect::<Vec<_>>(), vec![1]);
        assert!(resume_points("s3://b/run", None, 1).is_empty());
    }

    #[test]
    fn the_list_is_bounded_and_keeps_the_newest() {
        let st = status((1..=20).map(|a| record(a, true, "t")).collect());
        let points = resume_points("s3://b/run", Some(&st), 21);
        assert_eq!(points.len(), MAX_RESUME_POINTS);
        assert_eq!(points[0].attempt, 20);
        assert_eq!(points[MAX_RESUME_POINTS - 1].attempt, 13);
    }

    #[test]
    fn the_resume_list_is_json_a_worker_can_read() {
        let points = vec![ResumePoint {
            attempt: 2,
            dir: "gs://b/r/attempt-2/".into(),
            ended_at: "2026-12-03T10:00:00Z".into(),
        }];
        let text = serde_json::to_string(&points).expect("serializes");
        let back: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(back[0]["attempt"], 2);
        assert_eq!(back[0]["dir"], "gs://b/r/attempt-2/");
        assert_eq!(back[0]["endedAt"], "2026-12-03T10:00:00Z");
    }
}
