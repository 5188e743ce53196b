//! Namespace quotas end to end on real API servers and the real scheduler (GPU nodes
//! SIMULATED): a `ComputeQuota` caps the GPUs a namespace's jobs hold at once — a job
//! that would go past it waits (`Placed=False`, reason `QuotaExceeded`, the numbers in
//! the message) while a smaller job of the same namespace and another namespace's jobs go
//! on, and it is placed once the namespace's own work has ended; the quota's status shows
//! what the namespace holds and how many jobs wait. A spending cap holds a job whose
//! price would take the namespace past it. At the cap, a job of higher priority that may
//! preempt evicts its own namespace's youngest lower-priority work, never another's.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::conditions::{self, types};
use gpufed_api::formats::{format_decimal, parse_decimal};
use gpufed_api::{ComputeJob, ComputeQuota};
use gpufed_e2e::{FederationSpec, GpuPool};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use opsupport::{Operator, federation_with_providers, job, job_until, object_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

fn placed_reason(j: &ComputeJob) -> Option<(String, String)> {
    let c = conditions::find(&j.status.as_ref()?.conditions, types::PLACED)?;
    Some((c.reason.clone(), c.message.clone()))
}

fn held(j: &ComputeJob) -> bool {
    phase(j) == "Queued" && placed_reason(j).is_some_and(|(r, _)| r == "QuotaExceeded")
}

/// GPUs × price per GPU-hour of a job's live placement, in micros.
fn cost(j: &ComputeJob) -> u64 {
    j.status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map_or(0, |p| {
            u64::from(p.gpus) * parse_decimal(&p.price_per_gpu_hour).expect("price")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_what_would_exceed_it_and_nothing_else() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // 12 GPUs on 3 nodes: capacity never holds a job here, only the quota does.
    let spec = FederationSpec::new("quotas").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 3)]);
    let Some((env, hub)) = federation_with_providers(spec, &[("provider-a", "1.00")]).await else {
        return;
    };
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "team").await;
    let rival = common::namespace(&hub, "rival").await;
    let quotas: Api<ComputeQuota> = Api::namespaced(hub.clone(), &ns);
    let quota: ComputeQuota = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeQuota",
        "metadata": {"name": "team"},
        "spec": {"gpus": 4, "maxSpendPerHour": "100"}
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("quota created");

    submit(&hub, &ns, &job("first", 1, 2, serde_json::json!({}), "5.00", 20)).await;
    let first = job_until(&hub, &ns, "first", "first runs", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    // 2 held + 3 > 4: the bigger job waits, told why in numbers.
    submit(&hub, &ns, &job("big", 1, 3, serde_json::json!({}), "5.00", 90)).await;
    let big = job_until(&hub, &ns, "big", "big held by the quota", MINUTE, held).await;
    assert_eq!(
        placed_reason(&big).expect("Placed").1,
        "quota exceeded: the namespace holds 2 of its 4 GPUs, this job needs 3"
    );
    // A smaller job of the same namespace, and another namespace's, go on.
    submit(&hub, &ns, &job("small", 1, 1, serde_json::json!({}), "5.00", 90)).await;
    submit(
        &hub,
        &rival,
        &job("other", 1, 4, serde_json::json!({}), "5.00", 90),
    )
    .await;
    let small = job_until(&hub, &ns, "small", "small runs", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    job_until(&hub, &rival, "other", "the rival's job runs", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    // The quota says what the namespace holds and that one job waits.
    let spend = format_decimal(cost(&first) + cost(&small));
    let q = object_until::<ComputeQuota>(&hub, &ns, "team", "quota status", MINUTE, |q| {
        q.status.as_ref().is_some_and(|s| {
            s.waiting_jobs == 1
                && s.used
                    .as_ref()
                    .is_some_and(|u| u.gpus == 3 && u.spend_per_hour == spend)
        })
    })
    .await;
    let st = q.status.expect("status");
    let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
    assert_eq!(
        (ready.reason.as_str(), st.observed_generation),
        ("Enforced", q.metadata.generation)
    );
    let big = job_until(&hub, &ns, "big", "big still waits", MINUTE, |_| true).await;
    assert!(held(&big), "{:?}", big.status);

    // Once the first job has ended, 1 + 3 fits: the held job is placed.
    let big = job_until(&hub, &ns, "big", "big runs after first ends", 2 * MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    let first = job_until(&hub, &ns, "first", "first ended", MINUTE, |_| true).await;
    assert_eq!(phase(&first), "Succeeded", "only the first job's end made room");
    assert!(cost(&big) > 0, "{:?}", big.status);

    // A spending cap below what the namespace already spends holds every new job.
    quotas
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"gpus": null, "maxSpendPerHour": "0.5"}})),
        )
        .await
        .expect("quota patched");
    submit(&hub, &ns, &job("cheap", 1, 1, serde_json::json!({}), "5.00", 5)).await;
    let cheap = job_until(&hub, &ns, "cheap", "cheap held by the spending cap", MINUTE, held).await;
    let spend = format_decimal(cost(&big) + cost(&small));
    let message = placed_reason(&cheap).expect("Placed").1;
    assert!(
        message.starts_with("quota exceeded: the namespace spends "),
        "{message}"
    );
    assert!(message.contains("of its 0.50 per hour"), "{message}");
    object_until::<ComputeQuota>(&hub, &ns, "team", "quota status after the patch", MINUTE, |q| {
        q.status.as_ref().is_some_and(|s| {
            s.observed_generation == q.metadata.generation
                && s.waiting_jobs == 1
                && s.used
                    .as_ref()
                    .is_some_and(|u| u.gpus == 4 && u.spend_per_hour == spend)
        })
    })
    .await;

    // Back to a GPU cap only, used up (big 3 + small 1 of 4): an urgent job that may
    // preempt evicts its own namespace's lower-priority work — the youngest, big — and
    // runs in the room that makes in the cap; small runs on, big queues again.
    quotas
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"gpus": 4, "maxSpendPerHour": null}})),
        )
        .await
        .expect("quota patched");
    let mut urgent = job("urgent", 1, 2, serde_json::json!({}), "5.00", 90);
    urgent["spec"]["priority"] = 500.into(); // the others have the default, 100
    urgent["spec"]["placement"]["preemptLowerPriority"] = true.into();
    submit(&hub, &ns, &urgent).await;
    job_until(&hub, &ns, "urgent", "urgent runs", 2 * MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    let big = job_until(&hub, &ns, "big", "big preempted", MINUTE, |j| {
        j.status.as_ref().is_some_and(|s| {
            s.attempts
                .iter()
                .any(|a| a.outcome == gpufed_api::job_status::AttemptOutcome::Preempted)
        })
    })
    .await;
    assert_ne!(phase(&big), "Running", "{:?}", big.status);
    let small = job_until(&hub, &ns, "small", "small runs on", MINUTE, |_| true).await;
    assert_eq!(
        (phase(&small), small.status.as_ref().map(|s| s.attempts.len())),
        ("Running".into(), Some(0)),
        "only the youngest lower-priority work was evicted"
    );
    let other = job_until(&hub, &rival, "other", "the rival's job untouched", MINUTE, |_| {
        true
    })
    .await;
    assert_eq!(
        phase(&other),
        "Running",
        "another namespace's work makes no room in this quota"
    );
    operator.stop().await;
    drop(env);
}
