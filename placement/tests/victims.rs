//! Which running work a preempting job evicts: only what it needs, chosen the same way
//! whatever order the snapshot lists running work in.
#![allow(clippy::unwrap_used)]

mod common;

use gpufed_placement::{ComputeCapability, Config, Decisions, Job, Node, RunningAllocation, Snapshot, place};

use common::{GIB, UNIT, check, job, provider, running_on_a};

fn preempting() -> Config {
    Config {
        preemption: true,
        ..Config::default()
    }
}

fn run(snap: &Snapshot) -> Decisions {
    let d = place(snap, &preempting()).unwrap();
    assert_eq!(check(snap, &d), Ok(()));
    d
}

fn urgent(gpus: u8) -> Job {
    Job {
        priority: 5,
        preempt: true,
        models: vec!["H100".into()],
        ..job("urgent", gpus, 1)
    }
}

fn at(prio: i32, r: RunningAllocation) -> RunningAllocation {
    RunningAllocation { priority: prio, ..r }
}

/// Provider `a`: node `n0` of 8 A100s and node `h0` of 8 H100s, both full.
fn two_models() -> Snapshot {
    let mut a = provider("a", "A100", 80, 1, 8, UNIT);
    a.prices.insert("H100".into(), UNIT);
    a.nodes.push(Node::new(
        "h0",
        "H100",
        80 * GIB,
        ComputeCapability::new(9, 0),
        Some(1),
        8,
    ));
    for n in &mut a.nodes {
        n.free.clear();
    }
    Snapshot {
        providers: vec![a],
        ..Snapshot::default()
    }
}

#[test]
fn work_on_another_models_nodes_is_not_evicted_for_nothing() {
    let mut snap = two_models();
    // The lowest priority holds the A100s: tried first, it frees nothing an H100 job uses.
    snap.running = vec![
        at(0, running_on_a("on-a100", "team", "n0", 0..8, None)),
        at(1, running_on_a("on-h100", "team", "h0", 0..8, None)),
    ];
    snap.jobs = vec![urgent(8)];
    let d = run(&snap);
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].evicts, vec!["on-h100".to_string()]);
    let evicted: Vec<&str> = d.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(evicted, ["on-h100"]);
}

#[test]
fn a_victim_whose_node_stays_full_is_not_evicted() {
    let mut snap = two_models();
    // h0: 1 GPU of priority 0 beside 7 of priority 9 (never evictable by 5); the H100 job
    // of 4 GPUs needs the 4 on h1, held at priority 1.
    let mut h1 = snap.providers[0].nodes[1].clone();
    h1.name = "h1".into();
    snap.providers[0].nodes.push(h1);
    snap.running = vec![
        at(0, running_on_a("lone", "team", "h0", 0..1, None)),
        at(9, running_on_a("vip", "team", "h0", 1..8, None)),
        at(1, running_on_a("mid", "team", "h1", 0..8, None)),
    ];
    snap.jobs = vec![urgent(4)];
    let d = run(&snap);
    assert_eq!(d.placements[0].evicts, vec!["mid".to_string()], "{d:?}");
}

#[test]
fn equal_victims_are_chosen_by_job_id_not_by_their_place_in_the_snapshot() {
    let mut snap = two_models();
    // Two H100 jobs of the same priority placed in the same round (same start): either
    // frees room; two leaders listing them in other orders must evict the same one.
    snap.running = vec![
        at(0, running_on_a("zeta", "team", "h0", 0..4, None)),
        at(0, running_on_a("alpha", "team", "h0", 4..8, None)),
    ];
    snap.jobs = vec![urgent(4)];
    let first = run(&snap);
    snap.running.reverse();
    let second = run(&snap);
    assert_eq!(first.placements[0].evicts, second.placements[0].evicts);
    assert_eq!(first.placements[0].evicts.len(), 1, "{first:?}");
}

#[test]
fn the_provider_needing_the_fewest_evicted_gpus_wins_counting_only_the_victims_kept() {
    // `a`: a 4-GPU A100 node full with `x`. `b`: a 2-GPU A100 node full with `z`, and an
    // H100 node full with `y`, the youngest, so tried first on `b`. An A100 job of 2 GPUs
    // needs `x` (4 GPUs) on `a`, `z` (2) on `b`: `y` is taken first on `b` but dropped
    // again, and must not count against `b` when the providers are compared.
    let mut a = provider("a", "A100", 80, 1, 4, UNIT);
    a.nodes[0].free.clear();
    let mut b = provider("b", "A100", 80, 1, 2, UNIT);
    b.prices.insert("H100".into(), UNIT);
    b.nodes.push(Node::new(
        "h0",
        "H100",
        80 * GIB,
        ComputeCapability::new(9, 0),
        Some(9),
        4,
    ));
    b.nodes.iter_mut().for_each(|n| n.free.clear());
    let on = |p: &str, job: &str, node: &str, gpus: std::ops::Range<u8>, start: u64| RunningAllocation {
        provider: p.into(),
        start_time: start,
        ..running_on_a(job, "team", node, gpus, None)
    };
    let snap = Snapshot {
        providers: vec![a, b],
        running: vec![
            on("a", "x", "n0", 0..4, 10),
            on("b", "y", "h0", 0..4, 30),
            on("b", "z", "n0", 0..2, 20),
        ],
        jobs: vec![Job {
            models: vec!["A100".into()],
            ..urgent(2)
        }],
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].provider, "b");
    assert_eq!(d.placements[0].evicts, vec!["z".to_string()]);
}
