//! The health state machine's unit tests (a file of their own to keep health.rs short).
#![allow(clippy::unwrap_used)]

use super::*;

/// Two healthy GPUs, `GPU-a` and `GPU-b`, under a probation of `probation_s`.
pub(crate) fn book(probation_s: u64) -> HealthBook {
    let policy = HealthPolicy {
        probation: Duration::from_secs(probation_s),
        ..HealthPolicy::default()
    };
    HealthBook::new(["GPU-a".to_string(), "GPU-b".to_string()], policy)
}

/// A fault of `kind` on `uuid`.
pub(crate) fn fault(uuid: &str, kind: FaultKind) -> Fault {
    Fault {
        uuid: uuid.into(),
        kind,
    }
}

fn xid(uuid: &str, x: u64) -> Fault {
    fault(uuid, FaultKind::Xid(x))
}

fn reset(uuid: &str) -> Fault {
    fault(
        uuid,
        FaultKind::Reset("volatile uncorrected ECC count went down".into()),
    )
}

#[test]
fn critical_xid_makes_unhealthy_and_clean_probation_recovers() {
    let t0 = Instant::now();
    let mut b = book(60);
    // 74, an NVLink error: time-recoverable (94, a contained ECC error, is too as an XID,
    // but on real hardware its ECC count makes it wait for a reset).
    let tr = b.record(&xid("GPU-a", 74), t0).expect("transition");
    assert_eq!((tr.from, tr.to), (Health::Healthy, Health::Unhealthy));
    assert!(tr.cause.contains("XID 74"), "cause: {}", tr.cause);
    assert!(!tr.cause.contains("reset"), "cause: {}", tr.cause);
    assert_eq!(b.health("GPU-a"), Some(Health::Unhealthy));
    assert_eq!(b.health("GPU-b"), Some(Health::Healthy));
    assert!(
        b.tick(t0 + Duration::from_secs(59)).is_empty(),
        "still in probation"
    );
    let back = b.tick(t0 + Duration::from_secs(60));
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].from, back[0].to), (Health::Unhealthy, Health::Healthy));
    assert!(back[0].cause.contains("probation"));
    assert_eq!(b.health("GPU-a"), Some(Health::Healthy));
}

#[test]
fn repeated_fault_restarts_probation() {
    let t0 = Instant::now();
    let mut b = book(60);
    b.record(&xid("GPU-a", 74), t0);
    assert_eq!(
        b.record(&xid("GPU-a", 74), t0 + Duration::from_secs(50)),
        None,
        "no second transition"
    );
    assert!(
        b.tick(t0 + Duration::from_secs(100)).is_empty(),
        "probation restarted at t=50"
    );
    assert_eq!(b.tick(t0 + Duration::from_secs(110)).len(), 1);
}

#[test]
fn application_xids_and_unknown_gpus_change_nothing() {
    let t0 = Instant::now();
    let mut b = book(1);
    for x in APPLICATION_XIDS {
        assert_eq!(
            b.record(&xid("GPU-a", x), t0),
            None,
            "XID {x} is the application's fault"
        );
    }
    assert_eq!(b.record(&xid("GPU-zzz", 79), t0), None);
    assert_eq!(b.record(&reset("GPU-zzz"), t0), None);
    assert_eq!(b.health("GPU-a"), Some(Health::Healthy));
    assert_eq!(b.health("GPU-zzz"), None);
}

/// A fault that needs a reset does not clear by time: only reset evidence from the source
/// ends it, and the clean probation runs from that evidence.
#[test]
fn faults_that_need_a_reset_clear_only_after_one() {
    let t0 = Instant::now();
    let later = |s| t0 + Duration::from_secs(s);
    let kinds = [
        FaultKind::Xid(48),
        FaultKind::Xid(64),
        FaultKind::Xid(79),
        FaultKind::Xid(95),
        FaultKind::Xid(119),
        FaultKind::Xid(120),
        FaultKind::Xid(140),
        FaultKind::DoubleBitEcc { total: 2 },
        FaultKind::Lost("gone".into()),
    ];
    for kind in kinds {
        let mut b = book(10);
        let tr = b.record(&fault("GPU-a", kind.clone()), t0).unwrap();
        assert!(tr.cause.contains("needs a GPU reset"), "{kind}: {}", tr.cause);
        assert_eq!(b.awaiting_reset("GPU-a"), Some(kind.to_string().as_str()));
        // A day of silence: still unhealthy (the counter that showed a DBE never drops
        // without a reset, so nothing would ever report the fault again).
        assert!(b.tick(later(86_400)).is_empty(), "{kind} cleared by time");
        assert_eq!(b.health("GPU-a"), Some(Health::Unhealthy), "{kind}");
        // Reset evidence: the wait ends, the probation starts from it.
        assert_eq!(b.record(&reset("GPU-a"), later(86_400)), None);
        assert_eq!(b.awaiting_reset("GPU-a"), None);
        assert!(
            b.tick(later(86_409)).is_empty(),
            "{kind}: probation after the reset"
        );
        let back = b.tick(later(86_410));
        assert_eq!(back.len(), 1, "{kind}");
        assert!(
            back[0].cause.contains("GPU reset") && back[0].cause.contains("probation"),
            "{kind}: {}",
            back[0].cause
        );
        assert_eq!(b.health("GPU-a"), Some(Health::Healthy));
    }
}

#[test]
fn reset_evidence_without_a_fault_waiting_for_it_changes_nothing() {
    let t0 = Instant::now();
    let mut b = book(10);
    // A healthy GPU: nothing happens.
    assert_eq!(b.record(&reset("GPU-b"), t0), None);
    assert_eq!(b.health("GPU-b"), Some(Health::Healthy));
    // A time-recoverable fault: the reset does not restart or end its probation.
    b.record(&xid("GPU-a", 94), t0);
    b.record(&reset("GPU-a"), t0 + Duration::from_secs(5));
    assert_eq!(b.tick(t0 + Duration::from_secs(10)).len(), 1);
    // A needs-reset fault after the reset evidence: a new reset is needed.
    let t1 = t0 + Duration::from_secs(20);
    b.record(&xid("GPU-a", 48), t1);
    b.record(&reset("GPU-a"), t1 + Duration::from_secs(1));
    b.record(
        &fault("GPU-a", FaultKind::DoubleBitEcc { total: 1 }),
        t1 + Duration::from_secs(2),
    );
    assert!(b.tick(t1 + Duration::from_secs(1000)).is_empty());
    assert!(b.awaiting_reset("GPU-a").unwrap().contains("double-bit ECC"));
}

#[test]
fn a_time_recoverable_fault_during_a_reset_wait_does_not_end_it() {
    let t0 = Instant::now();
    let mut b = book(10);
    b.record(&xid("GPU-a", 79), t0);
    b.record(&xid("GPU-a", 94), t0 + Duration::from_secs(1));
    assert!(b.tick(t0 + Duration::from_secs(100)).is_empty());
    assert!(b.awaiting_reset("GPU-a").unwrap().contains("XID 79"));
}

#[test]
fn ignored_xids_never_need_a_reset() {
    let mut policy = HealthPolicy::default();
    policy.ignored_xids.insert(79);
    assert!(!policy.needs_reset(&FaultKind::Xid(79)));
    assert!(!policy.is_critical(&FaultKind::Xid(79)));
    assert!(!policy.needs_reset(&FaultKind::Xid(94)));
    assert!(policy.is_critical(&FaultKind::Xid(94)));
    assert!(!policy.is_critical(&FaultKind::Reset("x".into())));
}

/// A zero probation (a policy built in code; the flag refuses 0) must still show a fault:
/// [`PluginState::observe`](crate::service::PluginState::observe) records and ticks with
/// the same instant, which cleared every fault before kubelet saw it.
#[test]
fn a_fault_is_not_cleared_by_a_tick_at_the_same_instant() {
    let t0 = Instant::now();
    let mut b = book(0);
    assert!(b.record(&xid("GPU-a", 94), t0).is_some());
    assert!(b.tick(t0).is_empty(), "cleared in the instant it was recorded");
    assert_eq!(b.health("GPU-a"), Some(Health::Unhealthy));
    assert_eq!(b.tick(t0 + Duration::from_nanos(1)).len(), 1);
    // The same for the probation a reset starts.
    b.record(&xid("GPU-b", 48), t0);
    b.record(&reset("GPU-b"), t0 + Duration::from_secs(1));
    assert!(b.tick(t0 + Duration::from_secs(1)).is_empty());
    assert_eq!(b.tick(t0 + Duration::from_secs(2)).len(), 1);
}

fn answers(uuid: &str) -> Fault {
    fault(
        uuid,
        FaultKind::Answering("the lost GPU answers NVML again".into()),
    )
}

/// A GPU answering again shows a reset only of a GPU that fell off the bus: an XID 64 or
/// 119 GPU whose lookup failed once must not be cleared by the next lookup working.
#[test]
fn answering_again_ends_only_a_wait_for_a_gpu_that_fell_off_the_bus() {
    let t0 = Instant::now();
    for (first, ends) in [
        (FaultKind::Lost("gone".into()), true),
        (FaultKind::Xid(79), true),
        (FaultKind::Xid(64), false),
        (FaultKind::Xid(119), false),
        (FaultKind::DoubleBitEcc { total: 1 }, false),
    ] {
        let mut b = book(10);
        b.record(&fault("GPU-a", first.clone()), t0);
        b.record(&answers("GPU-a"), t0 + Duration::from_secs(1));
        assert_eq!(b.awaiting_reset("GPU-a").is_none(), ends, "{first}");
        // The ECC count going down ends any wait.
        b.record(&reset("GPU-a"), t0 + Duration::from_secs(2));
        assert_eq!(b.awaiting_reset("GPU-a"), None, "{first}");
    }
    // Lost after an XID 64: answering shows the bus is back, not that 64 was reset.
    let mut b = book(10);
    b.record(&xid("GPU-a", 64), t0);
    b.record(&fault("GPU-a", FaultKind::Lost("gone".into())), t0);
    b.record(&answers("GPU-a"), t0 + Duration::from_secs(1));
    assert!(b.awaiting_reset("GPU-a").is_some());
    assert!(b.tick(t0 + Duration::from_secs(100)).is_empty());
    assert!(!b.waits()["GPU-a"].answering_ends);
}
