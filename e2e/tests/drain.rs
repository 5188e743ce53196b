//! Draining a provider end to end on real API servers and the real scheduler (GPU nodes
//! SIMULATED). `spec.drain` moves all of a provider's work elsewhere, a service's replicas
//! one at a time within its disruption budget, so the service keeps serving throughout.
//! A budget that allows no disruption at all holds the drain — the provider says which
//! budget — until `spec.drainDeadline` has passed since the drain began
//! (`status.drainStartTime`); then the replicas are evicted anyway, counted as
//! `cause="drain_deadline"`, and run on elsewhere.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::job_status::AttemptOutcome;
use gpufed_api::{ComputeService, GpuProvider};
use gpufed_e2e::{FederationSpec, GpuPool};
use kube::Api;
use kube::api::{Patch, PatchParams};
use opsupport::budgets::{
    apply_service, budgeted_service, healthy, preempted_replicas, prio_job, provider_ready, ready_on,
};
use opsupport::{Operator, federation_with_providers, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

/// provider-a (cheaper, so work starts there) and provider-b, one node of 4 GPUs each.
fn two_providers(name: &str) -> FederationSpec {
    FederationSpec::new(name)
        .member("provider-a", vec![GpuPool::a100_40gb("a-a100", 1)])
        .member("provider-b", vec![GpuPool::a100_40gb("b-a100", 1)])
}

const PRICES: [(&str, &str); 2] = [("provider-a", "1.00"), ("provider-b", "1.50")];

async fn patch_provider(hub: &kube::Client, name: &str, spec: serde_json::Value) {
    Api::<GpuProvider>::all(hub.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("provider patched");
}

/// Waits until provider `name` says it is empty.
async fn drained(hub: &kube::Client, name: &str) {
    gpufed_e2e::wait::until("provider drained", MINUTE, || async {
        let ready = provider_ready(hub, name).await;
        Ok(ready.filter(|(reason, _)| reason == "Drained").map(|_| ()))
    })
    .await
    .expect("the provider says Drained");
}

/// Waits until both replicas of `llm` are ready on provider-a with `want` as
/// `(currentHealthy, desiredHealthy, disruptionsAllowed)`; returns that placement.
async fn ready_on_a(hub: &kube::Client, ns: &str, want: (u32, u32, u32)) -> Vec<(String, bool)> {
    let on_a = vec![("provider-a".to_owned(), true); 2];
    opsupport::object_until(
        hub,
        ns,
        "llm",
        "both replicas ready on provider-a",
        2 * MINUTE,
        |s| ready_on(s) == on_a && healthy(s) == Some(want),
    )
    .await;
    on_a
}

/// Waits until both replicas of `llm` are ready on `provider`; returns the fewest ready
/// replicas seen on the way.
async fn replicas_move_to(hub: &kube::Client, ns: &str, provider: &str) -> u32 {
    let want = vec![(provider.to_owned(), true); 2];
    let services: Api<ComputeService> = Api::namespaced(hub.clone(), ns);
    let mut fewest_ready = u32::MAX;
    let deadline = std::time::Instant::now() + 3 * MINUTE;
    loop {
        let svc = services.get("llm").await.expect("service");
        let st = svc.status.clone().unwrap_or_default();
        fewest_ready = fewest_ready.min(st.ready_replicas);
        if ready_on(&svc) == want {
            return fewest_ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas not moved to {provider}: {:?}",
            ready_on(&svc)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_provider_moves_its_work_within_the_disruption_budget() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((_env, hub)) = federation_with_providers(two_providers("drain"), &PRICES).await else {
        return;
    };
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 2).await;
    let ns = common::namespace(&hub, "team").await;
    submit(&hub, &ns, &prio_job("batch", 1, 100, false, 900)).await;
    let budget = serde_json::json!({"maxUnavailable": 1});
    apply_service(&hub, &ns, &budgeted_service("None", budget)).await;
    ready_on_a(&hub, &ns, (2, 1, 1)).await;
    job_until(&hub, &ns, "batch", "batch runs on provider-a", MINUTE, |j| {
        phase(j) == "Running"
            && j.status
                .as_ref()
                .and_then(|s| s.placement.as_ref())
                .is_some_and(|p| p.provider == "provider-a")
    })
    .await;

    // Drain provider-a, as its owner would for maintenance. Everything ends up on
    // provider-b; the service never has fewer than one ready replica on the way (the
    // budget moves them one at a time).
    patch_provider(&hub, "provider-a", serde_json::json!({"drain": true})).await;
    let fewest_ready = replicas_move_to(&hub, &ns, "provider-b").await;
    assert_eq!(fewest_ready, 1, "one replica always served, never both gone");
    let moved = preempted_replicas(&hub, &ns).await;
    assert_eq!(moved, ["llm-0", "llm-1"], "both replicas evicted by the drain");
    let batch = job_until(&hub, &ns, "batch", "batch runs on provider-b", 2 * MINUTE, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|p| p.provider == "provider-b")
    })
    .await;
    let st = batch.status.expect("status");
    assert_eq!(
        (
            st.attempts[0].outcome,
            st.attempts[0].message.as_str(),
            st.preemptions
        ),
        (
            AttemptOutcome::Preempted,
            "evicted: provider provider-a drains (spec.drain)",
            1
        )
    );
    drained(&hub, "provider-a").await;
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_ends_the_wait_for_a_disruption_budget() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((_env, hub)) = federation_with_providers(two_providers("deadline"), &PRICES).await else {
        return;
    };
    let admin = opsupport::free_admin_addr();
    let operator = Operator::start_with(hub.clone(), "op-1", &["--admin-addr".into(), admin.to_string()]);
    opsupport::providers_ready(&hub, 2).await;
    let ns = common::namespace(&hub, "team").await;
    // Both replicas must stay up: the budget allows no disruption at all.
    let budget = serde_json::json!({"minAvailable": 2});
    apply_service(&hub, &ns, &budgeted_service("None", budget)).await;
    let on_a = ready_on_a(&hub, &ns, (2, 2, 0)).await;

    // The drain waits for the budget, and the provider says so.
    patch_provider(&hub, "provider-a", serde_json::json!({"drain": true})).await;
    let held = format!("held by the disruption budget of {ns}/llm");
    gpufed_e2e::wait::until("provider-a held by the budget", MINUTE, || async {
        let ready = provider_ready(&hub, "provider-a").await;
        Ok(ready
            .filter(|(r, m)| r == "Draining" && m.contains(&held))
            .map(|_| ()))
    })
    .await
    .expect("provider-a says which budget holds its drain");
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let start = providers.get("provider-a").await.expect("provider-a");
    let start = start.status.and_then(|s| s.drain_start_time);
    assert!(start.is_some(), "the drain's start is recorded");
    // Rounds later, both replicas still serve from provider-a.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let services: Api<ComputeService> = Api::namespaced(hub.clone(), &ns);
    let svc = services.get("llm").await.expect("service");
    assert_eq!(ready_on(&svc), on_a, "the budget held the drain");
    assert!(preempted_replicas(&hub, &ns).await.is_empty());

    // Its maintenance window: the drain began more than 5 s ago, so the deadline has
    // passed. Both replicas are evicted at once and run on provider-b.
    patch_provider(&hub, "provider-a", serde_json::json!({"drainDeadline": "5s"})).await;
    replicas_move_to(&hub, &ns, "provider-b").await;
    let moved = preempted_replicas(&hub, &ns).await;
    assert_eq!(moved, ["llm-0", "llm-1"], "both replicas evicted by the deadline");
    drained(&hub, "provider-a").await;
    let after = providers.get("provider-a").await.expect("provider-a");
    assert_eq!(
        after.status.and_then(|s| s.drain_start_time),
        start,
        "the drain's clock did not restart"
    );
    let metrics = opsupport::reqwest_metrics(admin).await;
    assert!(
        metrics.contains("gpufed_evictions_total{cause=\"drain_deadline\"} 2\n"),
        "two evictions past the deadline: {}",
        opsupport::lines_with(&metrics, "evictions")
    );
    drop(operator);
}
