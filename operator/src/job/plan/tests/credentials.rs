//! Checkpoint credentials that cannot be read: a queued job waits unplaced and out of the
//! placement round, `Stalled=CheckpointCredentialsUnavailable`, holding no GPUs, until a
//! check reads them; one placed before the check ends its attempt before anything runs.
use super::*;

const WHY: &str = "Secret team/s3 (spec.checkpoint.credentialsSecret) does not exist";

fn with_secret(mut j: ComputeJob) -> ComputeJob {
    j.spec.checkpoint = Some(gpufed_api::job::Checkpoint {
        uri: "s3://bucket/run/".into(),
        credentials_secret: Some("s3".into()),
    });
    j
}

#[test]
fn a_queued_job_waits_out_of_placement_and_keeps_its_condition() {
    let j = with_secret(job(2));
    assert!(
        crate::mapping::is_queued(&j),
        "queued until a check says otherwise"
    );
    let mut p = plan(&j, &Member::NoAttempt, T0);
    assert!(p.wants_placement);
    await_credentials(&j, &mut p, WHY, T0);
    assert!(!p.wants_placement && !p.dispatch && p.status.placement.is_none());
    let c = stalled(&p.status);
    assert_eq!(
        (c.status, c.reason.as_str(), c.message.as_str()),
        (ConditionStatus::True, CREDENTIALS_UNAVAILABLE, WHY)
    );
    assert_eq!(
        cond(&p.status, "Ready"),
        Some((ConditionStatus::False, CREDENTIALS_UNAVAILABLE.into()))
    );
    let waiting = ComputeJob {
        status: Some(p.status.clone()),
        ..j.clone()
    };
    assert!(!crate::mapping::is_queued(&waiting), "the round passes it over");
    // The next check finds the same: the same status (no write, no Event) — the plan
    // removes Stalled, the check sets it back with its first transition time.
    let mut again = plan(&waiting, &Member::NoAttempt, T0 + 30);
    await_credentials(&waiting, &mut again, WHY, T0 + 30);
    assert_eq!(again.status, p.status);
    // A check that reads them: Stalled goes, the job asks for a placement again.
    let readable = plan(&waiting, &Member::NoAttempt, T0 + 60);
    assert!(readable.wants_placement && cond(&readable.status, "Stalled").is_none());
    let fixed = ComputeJob {
        status: Some(readable.status),
        ..j
    };
    assert!(crate::mapping::is_queued(&fixed));
}

#[test]
fn a_placed_attempt_without_them_ends_before_anything_runs_and_waits() {
    let j = with_secret(placed(job(2), 1, None));
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    assert!(p.dispatch);
    credentials_unavailable(&j, &mut p, WHY, T0 + 6);
    let st = &p.status;
    let a = ended_unstarted_and_waiting(&p);
    assert!(a.message.contains(WHY), "{}", a.message);
    assert_eq!(stalled(st).reason, CREDENTIALS_UNAVAILABLE);
    assert_eq!(
        cond(st, "Placed"),
        Some((ConditionStatus::False, CREDENTIALS_UNAVAILABLE.into()))
    );
    let waiting = ComputeJob {
        status: Some(p.status.clone()),
        ..j
    };
    assert!(!crate::mapping::is_queued(&waiting));
}
