//! A preemptor's held room outlives its leader (docs/placement.md, "Its room is held
//! meanwhile"), on real API servers and the real scheduler (GPU nodes SIMULATED).
//!
//! A job that evicts work says in its status (`status.held`) the room it holds while it
//! waits, and drops it once placed. Then a leader marks a victim and stops before the
//! victim is gone, as a leader that loses its Lease mid-eviction does. The next leader
//! finishes the preemption with one eviction, and a small job queued meanwhile is never
//! evicted for it. Whether the next leader's first round comes before the victim is gone
//! (when it must take the room from `status.held`) or after is a race this test does not
//! steer; `mapping::holds`' unit tests pin that round down.

mod common;
mod opsupport;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus;
use gpufed_api::job_status::{AttemptOutcome, HeldNode, HeldRoom, Preemption as Mark};
use gpufed_e2e::{FederationSpec, GpuPool};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use opsupport::budgets::prio_job;
use opsupport::{Operator, federation_with_providers, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

/// Writes `status` of job `name` as the operator does: whole, by its field manager.
async fn write_status(jobs: &Api<ComputeJob>, name: &str, status: &gpufed_api::ComputeJobStatus) {
    let body = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob", "status": status,
    });
    let apply = PatchParams::apply(gpufed_operator::FIELD_MANAGER).force();
    jobs.patch_status(name, &apply, &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("status of {name} written: {e}"));
}

/// The first `status.held` job `name` shows from now on, as a watch sees every write.
async fn held_of(jobs: &Api<ComputeJob>, name: &str) -> Arc<Mutex<Option<HeldRoom>>> {
    let rv = jobs
        .list(&ListParams::default().limit(1))
        .await
        .expect("list jobs")
        .metadata
        .resource_version
        .unwrap_or_default();
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut events = jobs.watch(&params, &rv).await.expect("watch").boxed();
    let seen = Arc::new(Mutex::new(None));
    let into = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(event)) = events.try_next().await {
            if let WatchEvent::Added(j) | WatchEvent::Modified(j) = event
                && let Some(held) = j.status.and_then(|s| s.held)
            {
                into.lock().expect("lock").get_or_insert(held);
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_holds_the_room_a_preemptor_waits_for() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // One node of 4 GPUs; `low` takes 3 of them.
    let spec = FederationSpec::new("handover").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 1)]);
    let Some((_env, hub)) = federation_with_providers(spec, &[("provider-a", "1.00")]).await else {
        return;
    };
    let first = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "team").await;
    let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), &ns);
    submit(&hub, &ns, &prio_job("low", 3, 100, false, 900)).await;
    let low = job_until(&hub, &ns, "low", "low runs", MINUTE, |j| phase(j) == "Running").await;
    let node = low
        .status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map(|p| p.workers[0].node.clone())
        .expect("low's node");

    // `mid` (3 GPUs, priority 300) evicts `low`: while it waits, its status says what it
    // holds — the node's 3 GPUs it will take — and once placed, nothing.
    let seen = held_of(&jobs, "mid").await;
    submit(&hub, &ns, &prio_job("mid", 3, 300, true, 900)).await;
    let mid = job_until(&hub, &ns, "mid", "mid runs", 2 * MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    assert_eq!(mid.status.as_ref().and_then(|s| s.held.clone()), None, "placed");
    let held = seen.lock().expect("lock").clone();
    let gpus: Vec<_> = held
        .iter()
        .flat_map(|h| &h.nodes)
        .map(|n| (n.node.as_str(), n.gpus))
        .collect();
    assert_eq!(
        (held.as_ref().map(|h| h.provider.as_str()), gpus),
        (Some("provider-a"), vec![(node.as_str(), 3)]),
        "the room `mid` held while `low` was evicted"
    );
    let low = job_until(&hub, &ns, "low", "low preempted", MINUTE, |j| {
        j.status.as_ref().is_some_and(|s| s.preemptions == 1)
    })
    .await;
    assert_eq!(phase(&low), "Recovering", "3 GPUs wanted, 1 free: it waits");
    // Out of the way: queued first, it would keep the node for itself later.
    jobs.delete("low", &DeleteParams::default())
        .await
        .expect("low deleted");
    gpufed_e2e::wait::until("low gone", MINUTE, || async {
        Ok(jobs.get_opt("low").await?.is_none().then_some(()))
    })
    .await
    .expect("low's finalizer lets it go");
    first.stop().await;

    // No leader now. `urgent` (all 4 GPUs) arrives, and the old leader's round had
    // decided: `mid` is marked evicted for it, and `urgent` waits holding the node's
    // 4 GPUs (the 3 of `mid`, which pass to it as `mid` goes, and the free one).
    submit(&hub, &ns, &prio_job("urgent", 4, 500, true, 5)).await;
    let now = gpufed_operator::time::format(gpufed_operator::time::now());
    let mid = jobs.get("mid").await.expect("mid");
    let mut st = mid.status.clone().expect("status");
    if let Some(p) = st.placement.as_mut() {
        p.preempted = Some(Mark {
            by: format!("{ns}/urgent"),
            priority: 500,
            time: now.clone(),
        });
    }
    write_status(&jobs, "mid", &st).await;
    let held = HeldRoom {
        provider: "provider-a".into(),
        nodes: vec![HeldNode {
            node: node.clone(),
            gpus: 4,
            ..Default::default()
        }],
    };
    let waiting = gpufed_api::ComputeJobStatus {
        conditions: vec![gpufed_api::conditions::condition(
            "Placed",
            ConditionStatus::False,
            "Preempting",
            format!("evicting lower-priority work on provider-a: {ns}/mid; placed once it has stopped"),
            Some(1),
            &now,
        )],
        held: Some(held.clone()),
        ..Default::default()
    };
    write_status(&jobs, "urgent", &waiting).await;
    let urgent = jobs.get("urgent").await.expect("urgent");
    assert_eq!(
        urgent.status.and_then(|s| s.held),
        Some(held),
        "the API server keeps the held room (the CRD's schema has it)"
    );
    // A small job of low priority queues meanwhile: the free GPU would fit it.
    submit(&hub, &ns, &prio_job("small", 1, 100, false, 5)).await;

    let second = Operator::start(hub.clone(), "op-2");
    let mid = job_until(&hub, &ns, "mid", "mid preempted", MINUTE, |j| {
        j.status.as_ref().is_some_and(|s| !s.attempts.is_empty())
    })
    .await;
    let outcome = mid.status.as_ref().map(|s| s.attempts[0].outcome);
    assert_eq!(outcome, Some(AttemptOutcome::Preempted));
    let urgent = job_until(&hub, &ns, "urgent", "urgent runs", 2 * MINUTE, |j| {
        matches!(phase(j).as_str(), "Running" | "Succeeded")
    })
    .await;
    let ust = urgent.status.expect("status");
    assert_eq!(ust.held, None, "placed: its room is its placement now");
    assert_eq!(ust.placement.map(|p| p.attempt), Some(1), "placed once");

    // The small job ran only once `urgent` was done with the node: never evicted for it.
    let small = job_until(&hub, &ns, "small", "small completes", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let sst = small.status.expect("status");
    let outcomes: Vec<_> = sst.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        (sst.preemptions, outcomes),
        (0, vec![AttemptOutcome::Succeeded]),
        "the new leader let the small job take the held GPU, then evicted it"
    );
    let urgent = job_until(&hub, &ns, "urgent", "urgent completes", MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let attempts = urgent.status.map(|s| s.attempts.len());
    assert_eq!(attempts, Some(1), "one attempt, one eviction");
    second.stop().await;
}
