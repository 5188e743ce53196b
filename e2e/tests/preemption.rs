//! Preemption end to end on real API servers and the real scheduler (GPU nodes
//! SIMULATED): a job of higher priority that fits nowhere evicts a running job of its own
//! namespace — never another tenant's under the default policy — the evicted attempt ends
//! `Preempted` (billed up to then, its pods removed, an Event), the job that asked runs in
//! its room, and the evicted job runs again afterwards without having used up its single
//! allowed attempt. A mark for a job that no longer waits evicts nothing. A
//! ComputeService's disruption budget holds: preemption takes one of its two ready
//! replicas and other work for the rest, and a job that could only break it waits, told.
//! (Draining a provider, which evicts too, is `drain.rs`.)

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::ComputeJob;
use gpufed_api::job_status::{AttemptOutcome, JobPhase, Preemption as Mark};
use gpufed_e2e::{FederationSpec, GpuPool};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use opsupport::budgets::{apply_service, attempt, budgeted_service, healthy, preempted_replicas, prio_job};
use opsupport::{Operator, federation_with_providers, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_job_evicts_lower_priority_work_of_its_namespace() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // One node of 4 GPUs: the low-priority job's 3 leave no room for a 4-GPU job.
    let spec = FederationSpec::new("preempt").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 1)]);
    let Some((env, hub)) = federation_with_providers(spec, &[("provider-a", "1.00")]).await else {
        return;
    };
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 1).await;
    let member = env.member_client("provider-a").await.expect("member");
    let ns = common::namespace(&hub, "team").await;
    let other = common::namespace(&hub, "rival").await;

    submit(&hub, &ns, &prio_job("low", 3, 100, false, 25)).await;
    let low = job_until(&hub, &ns, "low", "low runs", MINUTE, |j| phase(j) == "Running").await;
    let low_uid = low.uid().expect("uid");

    // Another tenant's job may not evict it under the default policy (`namespace`): it
    // waits, and the low job keeps running its first attempt.
    submit(&hub, &other, &prio_job("outsider", 4, 900, true, 4)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let low = job_until(&hub, &ns, "low", "low still runs", MINUTE, |_| true).await;
    assert_eq!(
        (phase(&low), attempt(&low)),
        ("Running".into(), 1),
        "another tenant evicted it"
    );
    let outsider = job_until(&hub, &other, "outsider", "outsider waits", MINUTE, |_| true).await;
    assert_eq!(
        phase(&outsider),
        "Queued",
        "the outsider fits nowhere and evicts nothing"
    );
    // A mark for a job that no longer waits (here: one that never existed, as a preemptor
    // deleted right after the round marked its victims) evicts nothing: the mark is
    // dropped and the attempt runs on.
    // Written as the placement round writes a mark: the operator's whole status, by its
    // field manager, fenced by the resourceVersion read (retried on a conflict).
    let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), &ns);
    gpufed_e2e::wait::until("low marked for a job that is gone", MINUTE, || async {
        let low = jobs.get("low").await?;
        let mut st = low.status.clone().unwrap_or_default();
        let Some(p) = st.placement.as_mut() else {
            return Ok(None);
        };
        p.preempted = Some(Mark {
            by: format!("{ns}/gone"),
            priority: 900,
            time: gpufed_operator::time::format(gpufed_operator::time::now()),
        });
        let body = serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"resourceVersion": low.resource_version()}, "status": st,
        });
        let apply = PatchParams::apply(gpufed_operator::FIELD_MANAGER).force();
        Ok(jobs
            .patch_status("low", &apply, &Patch::Apply(&body))
            .await
            .ok()
            .map(|_| ()))
    })
    .await
    .expect("mark written");
    let low = job_until(&hub, &ns, "low", "the stale mark dropped", MINUTE, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|p| p.preempted.is_none())
    })
    .await;
    let st = low.status.clone().expect("status");
    assert_eq!(
        (phase(&low), attempt(&low), st.attempts.len()),
        ("Running".into(), 1, 0),
        "evicted for a job that is gone: {:?}",
        st.attempts
    );
    let others: Api<ComputeJob> = Api::namespaced(hub.clone(), &other);
    others
        .delete("outsider", &DeleteParams::default())
        .await
        .expect("outsider deleted");
    gpufed_e2e::wait::until("outsider gone", MINUTE, || async {
        Ok(others.get_opt("outsider").await?.is_none().then_some(()))
    })
    .await
    .expect("the outsider's finalizer lets it go");

    // Its own tenant's urgent job evicts it (and may reach the internet: a policy the
    // member's API server must accept).
    let mut urgent = prio_job("urgent", 4, 500, true, 4);
    urgent["spec"]["egress"] = "Internet".into();
    submit(&hub, &ns, &urgent).await;
    let low = job_until(&hub, &ns, "low", "low preempted", MINUTE, |j| {
        j.status.as_ref().is_some_and(|s| !s.attempts.is_empty())
    })
    .await;
    let st = low.status.clone().expect("status");
    let a = &st.attempts[0];
    assert_eq!(
        (a.attempt, a.outcome),
        (1, AttemptOutcome::Preempted),
        "{}",
        a.message
    );
    assert!(a.message.contains(&format!("{ns}/urgent")), "{}", a.message);
    assert!(a.gpu_seconds > 0, "the evicted attempt ran and is billed");
    assert_eq!(st.preemptions, 1);
    opsupport::pods_removed(&member, &low_uid, "the evicted attempt's pods", MINUTE).await;
    opsupport::events_until(&hub, &ns, "low", &["Preempted"]).await;
    // Until its next attempt is placed (the urgent job holds its room meanwhile) it says it
    // recovers from the eviction, not that it is a new job in the queue.
    let low = Api::<ComputeJob>::namespaced(hub.clone(), &ns)
        .get("low")
        .await
        .expect("low");
    if attempt(&low) < 2 {
        let ready = low
            .status
            .as_ref()
            .and_then(|s| gpufed_api::conditions::find(&s.conditions, "Ready"))
            .map(|c| c.reason.clone());
        assert_eq!(
            (phase(&low).as_str(), ready.as_deref()),
            ("Recovering", Some("Preempted")),
            "waiting for room after its eviction"
        );
    }

    // The urgent job runs where the low one ran and completes.
    let urgent = job_until(&hub, &ns, "urgent", "urgent completes", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let tenant = gpufed_operator::job::names::tenant_namespace(&ns, "urgent");
    let policy = Api::<NetworkPolicy>::namespaced(member.clone(), &tenant)
        .get("gpufed-default-deny")
        .await
        .expect("the urgent job's NetworkPolicy");
    let egress = policy.spec.and_then(|s| s.egress).unwrap_or_default();
    assert_eq!(egress.len(), 3, "gang, DNS, public internet: {egress:?}");
    let ust = urgent.status.expect("status");
    assert_eq!(ust.attempts.len(), 1, "placed once, evicting once");
    assert_eq!(ust.attempts[0].outcome, AttemptOutcome::Succeeded);

    // The evicted job runs again — its one allowed attempt was not used up — and completes.
    let low = job_until(&hub, &ns, "low", "low completes", 2 * MINUTE, |j| {
        matches!(
            j.status.as_ref().and_then(|s| s.phase),
            Some(JobPhase::Succeeded | JobPhase::Failed)
        )
    })
    .await;
    let st = low.status.expect("status");
    let outcomes: Vec<_> = st.attempts.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(
        outcomes,
        [(1, AttemptOutcome::Preempted), (2, AttemptOutcome::Succeeded)],
        "the evicted job retried despite maxAttempts 1"
    );
    let billed: u64 = st.attempts.iter().map(|a| a.gpu_seconds).sum();
    assert_eq!(
        st.usage.map(|u| u.gpu_seconds),
        Some(billed),
        "both attempts billed, once"
    );
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_keeps_a_services_disruption_budget() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // One node of 4 GPUs: an old batch job (1 GPU), then two replicas (1 GPU each).
    let spec = FederationSpec::new("budget").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 1)]);
    let Some((_env, hub)) = federation_with_providers(spec, &[("provider-a", "1.00")]).await else {
        return;
    };
    let admin = opsupport::free_admin_addr();
    let operator = Operator::start_with(hub.clone(), "op-1", &["--admin-addr".into(), admin.to_string()]);
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "team").await;
    submit(&hub, &ns, &prio_job("batch", 1, 100, false, 900)).await;
    job_until(&hub, &ns, "batch", "batch runs", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    apply_service(
        &hub,
        &ns,
        &budgeted_service("None", serde_json::json!({"maxUnavailable": 1})),
    )
    .await;
    opsupport::object_until(
        &hub,
        &ns,
        "llm",
        "both replicas ready, one disruption allowed",
        2 * MINUTE,
        |s| healthy(s) == Some((2, 1, 1)),
    )
    .await;

    // A 3-GPU job of higher priority. Without the budget it would evict the two replicas
    // (the youngest work, enough room); with it, one replica and the batch job.
    submit(&hub, &ns, &prio_job("urgent", 3, 500, true, 900)).await;
    job_until(&hub, &ns, "urgent", "urgent runs", 2 * MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    let batch = job_until(&hub, &ns, "batch", "batch preempted", MINUTE, |_| true).await;
    assert_eq!(
        batch.status.as_ref().map(|s| s.preemptions),
        Some(1),
        "the batch job made up the room"
    );
    let gone = preempted_replicas(&hub, &ns).await;
    assert_eq!(gone.len(), 1, "exactly one replica preempted: {gone:?}");
    let kept = if gone[0] == "llm-0" { "llm-1" } else { "llm-0" };
    let svc = opsupport::object_until(
        &hub,
        &ns,
        "llm",
        "one healthy replica, at the minimum",
        MINUTE,
        |s| healthy(s) == Some((1, 1, 0)),
    )
    .await;
    let ready: Vec<_> = svc
        .status
        .as_ref()
        .map(|s| {
            s.replica_status
                .iter()
                .filter(|r| r.ready)
                .map(|r| r.name.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ready, [kept.to_owned()], "the kept replica serves on");

    // A 1-GPU job of higher priority: the only lower-priority work running is the kept
    // replica, which the budget protects. It waits, and says why.
    submit(&hub, &ns, &prio_job("urgent-2", 1, 500, true, 5)).await;
    let want = format!("disruption budget of {ns}/llm");
    let waiting = job_until(
        &hub,
        &ns,
        "urgent-2",
        "urgent-2 told of the budget",
        MINUTE,
        |j| {
            j.status
                .as_ref()
                .and_then(|s| gpufed_api::conditions::find(&s.conditions, "Placed"))
                .is_some_and(|c| c.reason == "DisruptionBudget" && c.message.contains(&want))
        },
    )
    .await;
    assert_eq!(phase(&waiting), "Queued");
    let metrics = opsupport::reqwest_metrics(admin).await;
    assert!(
        metrics.contains("gpufed_held_by_disruption_budget_jobs 1\n"),
        "the held job counted: {}",
        opsupport::lines_with(&metrics, "disruption")
    );
    // Rounds later, the kept replica still runs its first attempt.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kept_job = job_until(&hub, &ns, kept, "kept replica", MINUTE, |_| true).await;
    assert_eq!(
        (
            phase(&kept_job),
            attempt(&kept_job),
            preempted_replicas(&hub, &ns).await.len()
        ),
        ("Running".into(), 1, 1),
        "the protected replica was evicted"
    );
    drop(operator);
}
