use super::*;

fn api(code: u16, reason: &str, message: &str) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(message, reason)
            .with_code(code)
            .boxed(),
    )
}

#[test]
fn a_gang_that_ran_whole_is_not_refilled() {
    let pod = |rank: u32, phase: &str| AssignedPod {
        name: format!("w{rank}"),
        rank,
        phase: phase.into(),
        ..Default::default()
    };
    assert!(ran_whole(&[pod(0, "Running"), pod(1, "Succeeded")], 2));
    // Still being created or started: a missing pod is created (again).
    assert!(!ran_whole(&[pod(0, "Running")], 2));
    assert!(!ran_whole(&[pod(0, "Running"), pod(1, "Pending")], 2));
    assert!(!ran_whole(&[], 0));
}

#[test]
fn a_worker_lost_from_a_gang_that_ran_whole_is_never_made_again() {
    let pod = |rank: u32| AssignedPod {
        name: format!("w{rank}"),
        rank,
        phase: "Running".into(),
        ..Default::default()
    };
    // Round N: both ranks running, reported.
    let reported = AssignmentStatus {
        pods: vec![pod(0), pod(1)],
        ..Default::default()
    };
    // Round N+1: rank 1's pod is gone.
    let now = [pod(0)];
    let whole = ran_whole_since(&reported, Some(&now), 2);
    assert!(whole);
    assert!(!should_dispatch(false, true, whole));
    // Round N+2 (woken by its own status write): the pods reported lost rank 1, but the
    // status keeps that the gang ran whole.
    let next = AssignmentStatus {
        pods: now.to_vec(),
        ran_whole: whole,
        ..Default::default()
    };
    let whole = ran_whole_since(&next, Some(&now), 2);
    assert!(whole, "kept, not read from the pods last reported");
    assert!(!should_dispatch(false, true, whole));
    // A restarted agent: everything is fresh, still nothing is made again.
    assert!(!should_dispatch(true, true, whole));
    // What is dispatched: new work, and a gang still starting.
    assert!(should_dispatch(true, false, false));
    assert!(
        should_dispatch(true, false, true),
        "re-applying existing objects is harmless"
    );
    assert!(should_dispatch(false, true, false));
    assert!(!should_dispatch(false, false, false));
    let starting = AssignmentStatus {
        pods: vec![pod(0)],
        ..Default::default()
    };
    assert!(!ran_whole_since(&starting, Some(&now), 2));
    assert!(!ran_whole_since(&starting, None, 2), "unobservable: not whole");
}

#[test]
fn the_hub_s_pace_is_bounded_so_no_timer_overflows() {
    let mut cfg = AgentConfig {
        interval_seconds: u64::MAX,
        challenge_poll_millis: u64::MAX,
        ..Default::default()
    };
    let (every, poll) = pace(&cfg);
    assert_eq!(every, Duration::from_secs(pull::MAX_INTERVAL_SECONDS));
    assert_eq!(poll, Duration::from_millis(pull::MAX_CHALLENGE_POLL_MILLIS));
    assert!(tokio::time::Instant::now().checked_add(every + poll).is_some());
    cfg.interval_seconds = 0;
    cfg.challenge_poll_millis = 0;
    assert_eq!(pace(&cfg), (Duration::from_secs(1), Duration::ZERO));
    cfg.interval_seconds = 10;
    cfg.challenge_poll_millis = 1000;
    assert_eq!(pace(&cfg), (Duration::from_secs(10), Duration::from_secs(1)));
}

#[test]
fn an_invalid_answer_is_a_rejection_and_the_rest_is_retried() {
    let invalid = "Pod \"train-a1-w0\" is invalid: spec.containers[0].env[0].name: Invalid value: \"1X\"";
    assert_eq!(
        apply_failure(&api(422, "Invalid", invalid)),
        (reasons::REJECTED, invalid.to_owned()),
        "the API server's own answer, nothing around it"
    );
    let (reason, msg) = apply_failure(&api(400, "BadRequest", ""));
    assert_eq!(reason, reasons::REJECTED);
    assert!(!msg.is_empty(), "an empty answer still says something");
    let forbidden = "secrets \"gpufed-checkpoint\" is forbidden: User \"system:serviceaccount:gpufed:agent\" cannot patch resource \"secrets\"";
    assert_eq!(
        apply_failure(&api(403, "Forbidden", forbidden)),
        (reasons::FORBIDDEN, forbidden.to_owned()),
        "a missing permission is reported as such, for the hub to end the attempt in time"
    );
    let quota = "pods \"w0\" is forbidden: exceeded quota: gpufed";
    assert_eq!(
        apply_failure(&api(403, "Forbidden", quota)).0,
        reasons::APPLY_FAILED
    );
    for (code, r) in [
        (404, "NotFound"),
        (409, "Conflict"),
        (429, "TooManyRequests"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
    ] {
        let (reason, msg) = apply_failure(&api(code, r, "try later"));
        assert_eq!(reason, reasons::APPLY_FAILED, "{code}");
        assert!(msg.contains("try later"), "{msg}");
    }
    let (reason, _) = apply_failure(&kube::Error::LinesCodecMaxLineLengthExceeded);
    assert_eq!(reason, reasons::APPLY_FAILED, "a transport failure is retried");
}
