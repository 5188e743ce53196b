//! Disruption budgets under preemption: a service's ready replicas are evicted only while
//! the budget's minimum stays running; the waiting job is told which budget holds it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{Config, Decisions, GpuRef, Job, Reason, RunningAllocation, Snapshot, place};

use common::{UNIT, check, check_evictions, job, provider};

const LLM: &str = "team/llm";

fn on() -> Config {
    Config {
        preemption: true,
        ..Config::default()
    }
}

/// Priority-0 work on provider `a`'s one 8-GPU node: `gpus` of it, started at `start`.
fn alloc(id: &str, start: u64, gpus: std::ops::Range<u8>, budget: Option<&str>) -> RunningAllocation {
    RunningAllocation {
        job: id.into(),
        namespace: "team".into(),
        priority: 0,
        start_time: start,
        provider: "a".into(),
        gpus: gpus
            .map(|gpu| GpuRef {
                node: "n0".into(),
                gpu,
            })
            .collect(),
        spread_group: None,
        evicting: false,
        budget: budget.map(Into::into),
        resources: Default::default(),
    }
}

/// A full node: three ready replicas of `team/llm` (2 GPUs each, the youngest work) and
/// an older batch job on the last 2 GPUs; `min` of the replicas must stay. One job of
/// priority 5 that may preempt asks for `gpus`.
fn snapshot(min: u32, gpus: u8) -> Snapshot {
    let mut p = provider("a", "A100", 80, 1, 8, UNIT);
    p.nodes[0].free.clear();
    Snapshot {
        providers: vec![p],
        running: vec![
            alloc("llm-0", 10, 0..2, Some(LLM)),
            alloc("llm-1", 11, 2..4, Some(LLM)),
            alloc("llm-2", 12, 4..6, Some(LLM)),
            alloc("batch", 1, 6..8, None),
        ],
        jobs: vec![urgent("urgent", gpus)],
        budgets: BTreeMap::from([(LLM.to_owned(), min)]),
        ..Snapshot::default()
    }
}

fn urgent(id: &str, gpus: u8) -> Job {
    Job {
        priority: 5,
        preempt: true,
        ..job(id, gpus, 1)
    }
}

fn run(snap: &Snapshot) -> Decisions {
    let d = place(snap, &on()).unwrap();
    assert_eq!(check(snap, &d), Ok(()));
    assert_eq!(check_evictions(snap, &d, &on()), Ok(()));
    d
}

fn evicted(d: &Decisions) -> Vec<&str> {
    d.evictions.iter().map(|e| e.job.as_str()).collect()
}

#[test]
fn without_a_budget_the_youngest_replicas_go_first() {
    let mut snap = snapshot(0, 4);
    snap.budgets.clear();
    assert_eq!(evicted(&run(&snap)), ["llm-2", "llm-1"]);
}

#[test]
fn a_budget_keeps_its_minimum_and_older_work_makes_up_the_room() {
    // Two replicas must stay: one may go, the batch job gives the rest.
    let d = run(&snapshot(2, 4));
    assert_eq!(evicted(&d), ["llm-2", "batch"]);
    assert_eq!(d.placements[0].workers[0].gpus, vec![4, 5, 6, 7]);
}

#[test]
fn a_budget_that_holds_the_room_is_named_to_the_waiting_job() {
    let d = run(&snapshot(3, 4));
    assert!(d.placements.is_empty() && d.evictions.is_empty());
    let why = &d.unplaced[0].explanation;
    assert_eq!(
        why.primary(),
        Some(&Reason::Protected {
            budgets: LLM.to_owned()
        })
    );
    assert_eq!(
        why.to_string(),
        "0/1 providers fit: 1 could make room only by evicting below the disruption budget of team/llm"
    );
    // The same job that could not make room even by breaking the budget reads as busy.
    let d = run(&snapshot(3, 10));
    assert_ne!(
        d.unplaced[0].explanation.primary(),
        Some(&Reason::Protected { budgets: LLM.into() })
    );
}

#[test]
fn a_replica_that_is_not_ready_is_always_evictable() {
    // llm-0 is not ready: it counts toward nothing, so it goes although the two ready
    // replicas are exactly the minimum.
    let mut snap = snapshot(2, 4);
    snap.running[0].budget = None;
    assert_eq!(evicted(&run(&snap)), ["llm-0", "batch"]);
}

#[test]
fn replicas_already_being_evicted_no_longer_count_as_healthy() {
    // llm-2 leaves already: the two others are the minimum, so only the batch job goes.
    let mut snap = snapshot(2, 2);
    snap.running[2].evicting = true;
    assert_eq!(evicted(&run(&snap)), ["batch"]);
}

#[test]
fn jobs_of_one_round_share_the_budget() {
    // Three jobs of 2 GPUs: the budget lets one replica go, the batch job is the other
    // room, and the third job waits, told why.
    let mut snap = snapshot(2, 2);
    snap.jobs = vec![urgent("u1", 2), urgent("u2", 2), urgent("u3", 2)];
    let d = run(&snap);
    let mut gone = evicted(&d);
    gone.sort_unstable();
    assert_eq!(gone, ["batch", "llm-2"]);
    assert_eq!(d.placements.len(), 2);
    assert_eq!(d.unplaced.len(), 1);
    assert!(matches!(
        d.unplaced[0].explanation.primary(),
        Some(Reason::Protected { .. })
    ));
}

#[test]
fn a_budget_above_the_healthy_count_protects_every_replica() {
    let d = run(&snapshot(5, 2));
    assert_eq!(evicted(&d), ["batch"]);
}
