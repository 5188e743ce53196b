//! A provider whose cluster cannot start the gang it was given, on real API servers and
//! the real scheduler (GPU nodes SIMULATED): the job's worker asks for more CPU than
//! provider-a's GPU node has (64 cores; provider-b's has 128). The inventories count GPUs,
//! not the CPU a template may ask for, so the cheaper provider-a wins the placement; its
//! worker stays Pending, `Unschedulable` ("Insufficient cpu"). After `spec.startTimeout`
//! the attempt ends `StartTimeout` saying so, its pod is removed, and the job runs on
//! provider-b.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::job_status::AttemptOutcome;
use gpufed_e2e::GpuPool;
use opsupport::budgets::prio_job;
use opsupport::{cheap_and_dear, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

fn big_cpu(mut pool: GpuPool) -> GpuPool {
    pool.cpu = 128;
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_its_provider_cannot_start_runs_elsewhere_after_its_start_timeout() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((env, hub, operator)) = cheap_and_dear("start", big_cpu).await else {
        return;
    };
    let member_a = env.member_client("provider-a").await.expect("member client");

    let ns = common::namespace(&hub, "team").await;
    let mut job = prio_job("train", 1, 100, false, 600);
    job["spec"]["startTimeout"] = "20s".into();
    job["spec"]["failurePolicy"]["maxAttempts"] = 2.into();
    job["spec"]["template"]["spec"]["containers"][0]["resources"] =
        serde_json::json!({"requests": {"cpu": "100"}});
    submit(&hub, &ns, &job).await;
    let on = |j: &gpufed_api::ComputeJob, provider: &str| {
        j.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|p| p.provider == provider)
    };
    let first = job_until(&hub, &ns, "train", "train placed on provider-a", MINUTE, |j| {
        on(j, "provider-a")
    })
    .await;
    let uid = first.metadata.uid.clone().expect("uid");
    let j = job_until(
        &hub,
        &ns,
        "train",
        "train running on provider-b after a start timeout on provider-a",
        2 * MINUTE,
        |j| phase(j) == "Running" && on(j, "provider-b"),
    )
    .await;
    let st = j.status.expect("status");
    let a = &st.attempts[0];
    assert_eq!(
        (
            a.attempt,
            a.provider.as_str(),
            a.outcome,
            a.reason.as_deref(),
            a.gpu_seconds
        ),
        (1, "provider-a", AttemptOutcome::Failed, Some("StartTimeout"), 0),
        "{a:?}"
    );
    assert!(
        a.message.contains("0 of 1 workers running")
            && a.message.contains("worker 0: Unschedulable")
            && a.message.contains("Insufficient cpu"),
        "the record says what the worker waited for: {}",
        a.message
    );
    println!("START_TIMEOUT attempt 1: {}", a.message);
    assert_eq!(st.placement.as_ref().map(|p| p.attempt), Some(2));
    opsupport::pods_removed(&member_a, &uid, "attempt 1's pod removed from provider-a", MINUTE).await;
    drop(operator);
}
