//! A node that falls silent under a running job (its kubelet stops heartbeating; the
//! member's real node controller marks it `Unknown`): the hub waits the provider's grace
//! period — `placement.nodeUnreachableSince`, `Ready=False/NodeUnreachable`, still attempt 1
//! — and only then ends the attempt `NodeLost`, billed up to the first sighting, and runs
//! the job again on the node that answers. Real API servers and scheduler; GPU nodes
//! SIMULATED.

mod common;
mod opsupport;

use std::time::{Duration, Instant};

use gpufed_api::ComputeJob;
use gpufed_api::job_status::AttemptOutcome;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use opsupport::{Operator, job, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);
/// provider-a's grace period (also how long an unreachable node is waited for).
const GRACE: Duration = Duration::from_secs(30);

fn placement(j: &ComputeJob) -> Option<&gpufed_api::job_status::Placement> {
    j.status.as_ref()?.placement.as_ref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_waited_for_over_the_grace_period_then_its_work_moves() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("node-unreach").member("provider-a", vec![GpuPool::rtx4090("a-rtx", 2)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    opsupport::setup(fed, &hub, &[("provider-a", "0.30")]).await;
    opsupport::set_grace(&hub, "provider-a", &format!("{}s", GRACE.as_secs())).await;
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "unreach").await;
    submit(&hub, &ns, &job("train", 1, 1, serde_json::json!({}), "1.00", 600)).await;
    let running = job_until(&hub, &ns, "train", "Running", MINUTE, |j| phase(j) == "Running").await;
    let node = placement(&running)
        .map(|p| p.workers[0].node.clone())
        .expect("node");

    fed.simulator("provider-a")
        .expect("simulator")
        .silence_node(&node)
        .expect("silence");
    // The node controller marks it Unknown 40 s after its last heartbeat; the hub waits.
    let waiting = job_until(
        &hub,
        &ns,
        "train",
        "waiting for the unreachable node",
        2 * MINUTE,
        |j| placement(j).is_some_and(|p| p.node_unreachable_since.is_some()),
    )
    .await;
    let seen_waiting = Instant::now();
    let p = placement(&waiting).expect("placement");
    assert_eq!(p.attempt, 1);
    assert_eq!(phase(&waiting), "Running");
    let ready = waiting
        .status
        .as_ref()
        .and_then(|s| gpufed_api::conditions::find(&s.conditions, "Ready"))
        .expect("Ready");
    assert_eq!(ready.reason, "NodeUnreachable", "{ready:?}");
    let since = p.node_unreachable_since.clone().expect("since");
    let running_time = p.running_time.clone().expect("running time");

    let moved = job_until(&hub, &ns, "train", "attempt 2", GRACE + MINUTE, |j| {
        placement(j).is_some_and(|p| p.attempt == 2)
    })
    .await;
    let waited = seen_waiting.elapsed();
    // Seen waiting at most ~1 s after the mark was written; lost only past the grace period.
    assert!(
        waited + Duration::from_secs(2) >= GRACE,
        "failed over after {waited:?}"
    );
    let st = moved.status.as_ref().expect("status");
    let lost = &st.attempts[0];
    assert_eq!(lost.outcome, AttemptOutcome::NodeLost, "{lost:?}");
    assert_eq!(lost.end_time, since, "billed up to the first sighting");
    let secs = |t: &str| gpufed_operator::time::parse(t).expect("time");
    assert_eq!(
        lost.gpu_seconds,
        u64::try_from(secs(&since) - secs(&running_time)).unwrap_or(0)
    );
    assert!(lost.message.contains("unreachable"), "{}", lost.message);
    assert_ne!(
        placement(&moved).map(|p| p.workers[0].node.clone()),
        Some(node.clone())
    );
    job_until(&hub, &ns, "train", "attempt 2 Running", MINUTE, |j| {
        phase(j) == "Running" && placement(j).is_some_and(|p| p.attempt == 2)
    })
    .await;
    eprintln!(
        "NODE_UNREACHABLE waited_s={:.1} attempt_1_gpu_seconds={} since={since}",
        waited.as_secs_f64(),
        lost.gpu_seconds
    );
    operator.stop().await;
}
