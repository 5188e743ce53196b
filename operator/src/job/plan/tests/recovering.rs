//! A job whose attempt ended and is retried stays `Recovering` until the next attempt is
//! placed: told apart from a new job, with the ended attempt's story in `Ready`.
use super::*;

fn failed_over() -> ComputeJob {
    let lost = Member::ProviderLost {
        last_heartbeat: T0 + 60,
    };
    let p = plan(&placed(job(1), 1, Some(T0)), &lost, T0 + 600);
    ComputeJob {
        status: Some(p.status),
        ..job(1)
    }
}

#[test]
fn a_retry_waiting_for_room_stays_recovering_and_is_not_rewritten() {
    let j = failed_over();
    let ended = j.status.clone().unwrap_or_default();
    assert_eq!(ended.phase, Some(JobPhase::Recovering));
    let ready = cond(&ended, types::READY);
    assert_eq!(
        ready.as_ref().map(|(s, r)| (*s, r.as_str())),
        Some((ConditionStatus::False, "Recovering"))
    );
    // Later reconciles while no provider has room: nothing changes, so nothing is written.
    for later in [T0 + 601, T0 + 3600] {
        let p = plan(&j, &Member::NoAttempt, later);
        assert_eq!(p.status, ended, "at {later}");
        assert!(p.wants_placement && !p.dispatch);
    }
}

#[test]
fn suspended_while_recovering_then_resumed_queues_as_a_new_wait() {
    let mut j = failed_over();
    j.spec.suspend = true;
    let p = plan(&j, &Member::NoAttempt, T0 + 700);
    assert_eq!(p.status.phase, Some(JobPhase::Suspended));
    assert!(!p.wants_placement);
    let mut resumed = ComputeJob {
        status: Some(p.status),
        ..job(1)
    };
    resumed.spec.suspend = false;
    let p = plan(&resumed, &Member::NoAttempt, T0 + 800);
    assert_eq!(p.status.phase, Some(JobPhase::Queued));
    assert_eq!(
        cond(&p.status, types::READY).map(|(_, r)| r),
        Some("Queued".into())
    );
}

#[test]
fn a_recovering_job_whose_stall_cleared_says_it_recovers_again() {
    // Its checkpoint credentials were unreadable for a while (Ready carried that reason);
    // readable again, Ready no longer quotes the stall.
    let mut j = failed_over();
    let st = j.status.as_mut().expect("a failed-over job has a status");
    let stale = gpufed_api::conditions::condition(
        types::READY,
        ConditionStatus::False,
        CREDENTIALS_UNAVAILABLE,
        "Secret team/ckpt does not exist",
        None,
        "2027-01-15T08:00:00Z",
    );
    gpufed_api::conditions::set(&mut st.conditions, stale);
    let p = plan(&j, &Member::NoAttempt, T0 + 700);
    assert_eq!(p.status.phase, Some(JobPhase::Recovering));
    assert_eq!(
        cond(&p.status, types::READY),
        Some((ConditionStatus::False, "Recovering".into()))
    );
}
