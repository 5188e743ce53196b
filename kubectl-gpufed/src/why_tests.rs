use serde_json::json;

use super::*;
use crate::fixtures::{job, provider, ready_h100_status, ready_rtx_status};

/// 2026-01-01T00:10:00Z.
pub(super) const NOW: i64 = 1_767_226_200;

pub(super) fn queued() -> ComputeJob {
    job(
        "train",
        "team",
        Some(json!({
            "phase": "Queued",
            "conditions": [{"type": "Placed", "status": "False", "reason": "NoProviderFits",
                            "message": "0/2 providers fit: 1 not verified, 1 above max price 2.50",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        })),
    )
}

pub(super) fn reasons(r: &WhyReport) -> Vec<(&str, bool, &str)> {
    r.providers
        .iter()
        .map(|p| (p.provider.as_str(), p.fits, p.reason.as_str()))
        .collect()
}

#[test]
fn each_provider_gets_its_own_reason() {
    let fits = provider("a-fits", Some(ready_h100_status(16, 16)));
    let half_busy = provider("b-pricey", Some(ready_h100_status(8, 16)));
    let mut cheap_full = provider("c-busy", Some(ready_h100_status(0, 16)));
    cheap_full.spec.prices[0].price_per_gpu_hour = "1".into();
    let consumer = provider("d-rtx", Some(ready_rtx_status(4, 4)));
    let mut unverified = provider("e-unverified", Some(ready_h100_status(16, 16)));
    if let Some(st) = unverified.status.as_mut() {
        st.conditions.retain(|c| c.type_ != "Verified");
    }
    let mut lost = provider("f-lost", Some(ready_h100_status(16, 16)));
    if let Some(st) = lost.status.as_mut() {
        st.conditions[0].status = ConditionStatus::False;
        st.conditions[0].reason = "HeartbeatLost".into();
        st.conditions[0].message = "no heartbeat for longer than 2m".into();
    }
    let mut paused = provider("g-paused", Some(ready_h100_status(16, 16)));
    paused.spec.paused = true;
    let new = provider("h-new", None);
    let mut draining = provider("i-draining", Some(ready_h100_status(16, 16)));
    draining.spec.drain = true;
    let all = [
        new, paused, lost, unverified, consumer, cheap_full, half_busy, fits, draining,
    ];

    let r = explain(&queued(), &all, NOW);
    assert!(r.waiting);
    assert_eq!(r.summary, "queued: waiting for a provider");
    assert_eq!(r.phase, "Queued");
    assert_eq!(r.conditions[0].reason, "NoProviderFits");
    assert_eq!(
        reasons(&r),
        [
            (
                "a-fits",
                true,
                "fits now: 2 × 4 NVIDIA-H100-80GB-HBM3 at 2.25 per GPU-hour"
            ),
            ("b-pricey", false, "above max price 2.50"),
            ("c-busy", false, "lack 8 free suitable GPUs now"),
            ("d-rtx", false, "lack priced GPUs"),
            ("e-unverified", false, "not verified"),
            (
                "f-lost",
                false,
                "not Ready: HeartbeatLost: no heartbeat for longer than 2m"
            ),
            ("g-paused", false, "paused (spec.paused): takes no new jobs"),
            (
                "h-new",
                false,
                "not Ready: the operator has not reported on it yet"
            ),
            (
                "i-draining",
                false,
                "draining (spec.drain): takes no new jobs, its work moves elsewhere"
            ),
        ]
    );
    assert_eq!(r.providers[0].price_per_gpu_hour.as_deref(), Some("2.25"));
    assert_eq!(r.providers[0].model.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));

    let text = render(&r);
    assert!(
        text.starts_with("computejob team/train (Queued): queued: waiting for a provider\n"),
        "{text}"
    );
    assert!(text.contains("Placed      False    NoProviderFits"), "{text}");
    assert!(
        text.contains("b-pricey       no     above max price 2.50"),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["providers"][0]["pricePerGpuHour"], "2.25");
    assert!(json["providers"][1].get("model").is_none());
}

#[test]
fn job_constraints_are_reasons_too() {
    let mut j = queued();
    j.spec.placement.regions = vec!["us-east".into()];
    let r = explain(&j, &[provider("a", Some(ready_h100_status(16, 16)))], NOW);
    assert_eq!(reasons(&r), [("a", false, "outside the allowed regions")]);

    let mut j = queued();
    j.spec.gpu.min_memory = Some("100Gi".into());
    let r = explain(&j, &[provider("a", Some(ready_h100_status(16, 16)))], NOW);
    assert_eq!(reasons(&r), [("a", false, "lack 100 GiB VRAM")]);

    let mut j = queued();
    j.spec.workers = 3;
    let r = explain(&j, &[provider("a", Some(ready_h100_status(8, 8)))], NOW);
    assert_eq!(reasons(&r)[0].2, "too small for 12 suitable GPUs");

    let r = explain(&queued(), &[], NOW);
    assert!(r.providers.is_empty());
    assert!(render(&r).contains("no GpuProviders exist"));
    let r = explain_without_providers(&queued(), "listing gpuproviders.gpufed.io: forbidden".into());
    let text = render(&r);
    assert!(
        text.contains("  not run: listing gpuproviders.gpufed.io: forbidden"),
        "{text}"
    );
    assert!(text.contains("NoProviderFits"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["providersUnavailable"],
        "listing gpuproviders.gpufed.io: forbidden"
    );
}

#[test]
fn jobs_that_do_not_wait_say_so() {
    let placed = job(
        "train",
        "team",
        Some(json!({
            "phase": "Placed",
            "placement": {"attempt": 2, "provider": "a", "gpus": 8, "pricePerGpuHour": "2.25",
                          "workers": [], "placedTime": "2026-01-01T00:00:00Z"},
            "conditions": [{"type": "Ready", "status": "False", "reason": "Starting",
                            "message": "1 of 2 workers running on a",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        })),
    );
    let all = [provider("a", Some(ready_h100_status(16, 16)))];
    let r = explain(&placed, &all, NOW);
    assert!(!r.waiting && r.providers.is_empty());
    assert_eq!(
        r.summary,
        "placed on a (attempt 2), waiting for its workers: 1 of 2 workers running on a"
    );
    assert!(!render(&r).contains("PROVIDER"));

    let mut running = placed.clone();
    if let Some(st) = running.status.as_mut() {
        st.conditions[0].status = ConditionStatus::True;
    }
    assert_eq!(
        explain(&running, &all, NOW).summary,
        "not waiting: runs on a (attempt 2)"
    );

    // Preemption, both sides: the evicted job and the one waiting for its room.
    let mut evicted = running.clone();
    if let Some(p) = evicted.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(gpufed_api::job_status::Preemption {
            by: "team/urgent".into(),
            priority: 900,
            time: "2026-01-01T00:01:00Z".into(),
        });
    }
    assert_eq!(
        explain(&evicted, &all, NOW).summary,
        "being evicted from a (attempt 2) for team/urgent (priority 900): queued again once stopped"
    );
    let mut drained = running.clone();
    if let Some(p) = drained.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(gpufed_api::job_status::Preemption {
            by: "GpuProvider/a".into(),
            priority: 0,
            time: "2026-01-01T00:01:00Z".into(),
        });
    }
    assert_eq!(
        explain(&drained, &all, NOW).summary,
        "being evicted from a (attempt 2): the provider drains (spec.drain); queued again once stopped"
    );
    let mut refused = running.clone();
    if let Some(p) = refused.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(gpufed_api::job_status::Preemption {
            by: format!("{}a", gpufed_api::job_status::TENANCY_BY_PREFIX),
            priority: 0,
            time: "2026-01-01T00:01:00Z".into(),
        });
    }
    assert_eq!(
        explain(&refused, &all, NOW).summary,
        "being evicted from a (attempt 2): the provider no longer takes work from this namespace (spec.tenants); queued again once stopped"
    );
    let waiting = job(
        "urgent",
        "team",
        Some(json!({"phase": "Queued", "conditions": [
            {"type": "Placed", "status": "False", "reason": "Preempting",
             "message": "evicting lower-priority work on a: team/train; placed once it has stopped",
             "lastTransitionTime": "2026-01-01T00:01:00Z"}]})),
    );
    let r = explain(&waiting, &all, NOW);
    assert!(!r.waiting, "no provider table: it has its room");
    assert_eq!(
        r.summary,
        "waiting for the work it evicts to stop: evicting lower-priority work on a: team/train; placed once it has stopped"
    );
    // The room it holds meanwhile, as its status keeps it.
    let mut holding = waiting.clone();
    if let Some(s) = holding.status.as_mut() {
        s.held = Some(
            serde_json::from_value(json!({"provider": "a", "nodes": [
            {"node": "a-0", "gpus": 3}, {"node": "a-1", "gpus": 1, "cpuMillis": 8000}]}))
            .expect("held"),
        );
    }
    assert_eq!(
        explain(&holding, &all, NOW).summary,
        "waiting for the work it evicts to stop: evicting lower-priority work on a: team/train; placed once it has stopped; its room is held: 4 GPUs on a (a-0: 3, a-1: 1)"
    );
    let fresh = job(
        "verified",
        "team",
        Some(json!({"phase": "Queued", "conditions": [
            {"type": "Placed", "status": "False", "reason": "AwaitingVerification",
             "message": "placed on provider a once its node a-0 passes a new challenge",
             "lastTransitionTime": "2026-01-01T00:01:00Z"}]})),
    );
    let r = explain(&fresh, &all, NOW);
    assert!(!r.waiting, "no provider table: it has its room");
    assert_eq!(
        r.summary,
        "waiting for its nodes to pass a new GPU challenge: placed on provider a once its node a-0 passes a new challenge"
    );
    let held = job(
        "urgent-2",
        "team",
        Some(json!({"phase": "Queued", "conditions": [
            {"type": "Placed", "status": "False", "reason": "DisruptionBudget",
             "message": "0/1 providers fit: 1 could make room only by evicting below the disruption budget of team/llm",
             "lastTransitionTime": "2026-01-01T00:01:00Z"}]})),
    );
    let r = explain(&held, &all, NOW);
    assert!(r.waiting, "the provider table shows where it would fit");
    assert_eq!(
        r.summary,
        "queued: evicting lower-priority work would break a service's disruption budget, so it waits for room \
         (0/1 providers fit: 1 could make room only by evicting below the disruption budget of team/llm)"
    );
    let quota = job(
        "big",
        "team",
        Some(json!({"phase": "Queued", "conditions": [
            {"type": "Placed", "status": "False", "reason": "QuotaExceeded",
             "message": "quota exceeded: the namespace holds 2 of its 4 GPUs, this job needs 3",
             "lastTransitionTime": "2026-01-01T00:01:00Z"}]})),
    );
    let r = explain(&quota, &all, NOW);
    assert!(
        r.waiting,
        "the provider table shows where it would fit once the quota allows"
    );
    assert_eq!(
        r.summary,
        "queued: its namespace's ComputeQuota holds it until the namespace's other work ends or the \
         quota is raised (quota exceeded: the namespace holds 2 of its 4 GPUs, this job needs 3); \
         where it would fit otherwise:"
    );
    let no_credentials = job(
        "ckpt",
        "team",
        Some(json!({"phase": "Queued", "conditions": [
            {"type": "Stalled", "status": "True", "reason": "CheckpointCredentialsUnavailable",
             "message": "Secret team/s3 (spec.checkpoint.credentialsSecret) does not exist",
             "lastTransitionTime": "2026-01-01T00:01:00Z"}]})),
    );
    let r = explain(&no_credentials, &all, NOW);
    assert!(!r.waiting, "no provider table: no provider helps");
    assert_eq!(
        r.summary,
        "not placed: its checkpoint credentials cannot be read (Secret team/s3 (spec.checkpoint.credentialsSecret) does not exist)"
    );

    let failed = job(
        "x",
        "team",
        Some(json!({"phase": "Failed", "conditions": [
            {"type": "Failed", "status": "True", "reason": "AttemptsExhausted",
             "message": "attempt 3 Failed: worker 1 failed", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})),
    );
    let r = explain(&failed, &all, NOW);
    assert_eq!(
        r.summary,
        "finished: Failed (attempt 3 Failed: worker 1 failed), nothing to wait for"
    );
    assert!(!r.waiting);
}

#[test]
fn suspended_and_invalid_jobs() {
    let all = [provider("a", Some(ready_h100_status(16, 16)))];
    let mut suspended = job("s", "team", None);
    suspended.spec.suspend = true;
    let r = explain(&suspended, &all, NOW);
    assert!(r.waiting && r.summary.starts_with("suspended"));
    assert!(r.providers[0].fits, "evaluated as if resumed");
    let r = explain(&job("fresh", "team", None), &all, NOW);
    assert_eq!(
        r.summary,
        "new: not yet seen by the operator; waiting for a provider"
    );
    assert!(r.waiting && r.providers[0].fits);

    let mut invalid = job("bad", "team", None);
    invalid.spec.max_price_per_gpu_hour = "0".into();
    let r = explain(&invalid, &all, NOW);
    assert!(!r.waiting);
    assert_eq!(r.spec_errors, ["spec.maxPricePerGpuHour: must be greater than 0"]);
    assert!(render(&r).contains("Invalid spec"));

    // A template no member could be sent: not placed, said so (not "no provider fits").
    let mut unbuildable = job("tpl", "team", None);
    unbuildable.spec.template.spec.containers[0]
        .0
        .insert("ports".into(), serde_json::json!("eighty"));
    let r = explain(&unbuildable, &all, NOW);
    assert!(!r.waiting, "{}", r.summary);
    assert!(
        r.spec_errors.len() == 1 && r.spec_errors[0].starts_with("spec.template.spec"),
        "{:?}",
        r.spec_errors
    );
}

/// A provider caught lying in a GPU challenge gets no new jobs at all from the operator
/// (`gpufed_operator::mapping` leaves it out, verified or not): `why` names it, not the
/// engine's "0/0 providers fit: no providers".
#[test]
fn a_provider_caught_failing_a_challenge_is_named_as_the_operator_leaves_it_out() {
    let caught = |status: ConditionStatus, message: &str| {
        let mut p = provider("a-caught", Some(ready_h100_status(16, 16)));
        let st = p.status.as_mut().unwrap();
        let c = st.conditions.iter_mut().find(|c| c.type_ == "Verified").unwrap();
        (c.status, c.reason, c.message) = (status, "ChallengeFailed".into(), message.into());
        p
    };
    let mut open = queued();
    open.spec.placement.verified_only = false;
    for j in [queued(), open] {
        let p = caught(ConditionStatus::False, "GPU-1 answered a wrong digest");
        let r = explain(&j, std::slice::from_ref(&p), NOW);
        assert_eq!(
            reasons(&r),
            [(
                "a-caught",
                false,
                "caught failing a GPU challenge (Verified=False ChallengeFailed: GPU-1 answered a wrong digest): takes no new jobs"
            )]
        );
        // The operator's own round leaves it out too: the two agree.
        let fleet: BTreeMap<String, MemberView> = [(
            "a-caught".to_owned(),
            member_view(p.status.as_ref().unwrap().inventory.as_ref().unwrap()),
        )]
        .into();
        let snap = mapping::snapshot(&[Arc::new(j.clone())], &[Arc::new(p)], &fleet);
        assert!(snap.providers.is_empty());
    }
    let r = explain(&queued(), &[caught(ConditionStatus::Unknown, "")], NOW);
    assert_eq!(
        reasons(&r)[0].2,
        "caught failing a GPU challenge (Verified=Unknown ChallengeFailed): takes no new jobs"
    );
}
