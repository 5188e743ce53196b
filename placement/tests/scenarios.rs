//! Scenario tests of the engine's choices.
#![allow(clippy::unwrap_used)]

mod common;

use gpufed_placement::{
    Config, GpuRef, Interconnect, Job, RunningAllocation, Snapshot, SnapshotError, Weights,
    market::market_price, place,
};

use common::{UNIT, check, job, provider};

fn run(snap: &Snapshot, cfg: &Config) -> gpufed_placement::Decisions {
    let d = place(snap, cfg).unwrap();
    assert_eq!(check(snap, &d), Ok(()));
    d
}

#[test]
fn cheapest_provider_wins_and_price_is_the_market_price() {
    let snap = Snapshot {
        providers: vec![
            provider("a", "H100", 80, 2, 8, 3 * UNIT),
            provider("b", "H100", 80, 2, 8, 2 * UNIT),
        ],
        jobs: vec![Job {
            max_price: Some(4 * UNIT),
            ..job("j", 8, 1)
        }],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    assert_eq!(d.placements[0].provider, "b");
    assert_eq!(
        d.placements[0].price,
        market_price(2 * UNIT, 0, 16, &Config::default().market)
    );
    assert_eq!(d.placements[0].price, 1_800_000);
}

#[test]
fn preferred_providers_spill_over_in_order() {
    let mut a = provider("a", "H100", 80, 1, 8, UNIT);
    a.nodes[0].free.clear();
    let snap = Snapshot {
        providers: vec![
            a,
            provider("b", "H100", 80, 1, 8, 5 * UNIT),
            provider("c", "H100", 80, 1, 8, UNIT),
        ],
        jobs: vec![Job {
            preferred: vec!["a".into(), "b".into()],
            ..job("j", 4, 1)
        }],
        ..Snapshot::default()
    };
    // a is full, so the job spills to b (its second choice) even though c is cheaper.
    assert_eq!(run(&snap, &Config::default()).placements[0].provider, "b");
    let cfg = Config {
        weights: Weights {
            preferred: 0.0,
            ..Weights::default()
        },
        ..Config::default()
    };
    assert_eq!(run(&snap, &cfg).placements[0].provider, "c");
}

#[test]
fn best_fit_fills_partly_used_nodes_first() {
    let mut p = provider("a", "A100", 80, 3, 8, UNIT);
    p.nodes[1].free.truncate(2);
    let snap = Snapshot {
        providers: vec![p],
        jobs: vec![job("j", 2, 1)],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    assert_eq!(d.placements[0].workers[0].node, "n1");
    assert_eq!(d.placements[0].workers[0].gpus, vec![0, 1]);
}

#[test]
fn gang_is_whole_in_one_provider_or_not_at_all() {
    // 2 providers × 1 node × 8 GPUs: a gang of 2×8 fits neither, though 16 GPUs are free.
    let snap = Snapshot {
        providers: vec![
            provider("a", "A100", 80, 1, 8, UNIT),
            provider("b", "A100", 80, 1, 8, UNIT),
        ],
        jobs: vec![job("gang", 8, 2), job("pair", 4, 2)],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    assert_eq!(d.unplaced.len(), 1);
    assert_eq!(d.unplaced[0].job, "gang");
    assert_eq!(d.placements[0].job, "pair");
    assert_eq!(d.placements[0].workers.len(), 2);
}

#[test]
fn gang_nvlink_stays_in_one_domain() {
    let mut p = provider("a", "H100", 80, 4, 4, UNIT);
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.nvlink_domain = Some(if i < 2 { 7 } else { 9 });
    }
    p.nodes[0].free.truncate(1);
    let snap = Snapshot {
        providers: vec![p],
        jobs: vec![Job {
            interconnect: Interconnect::NvlinkGang,
            ..job("j", 4, 2)
        }],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    let nodes: Vec<&str> = d.placements[0].workers.iter().map(|w| w.node.as_str()).collect();
    assert_eq!(nodes, vec!["n2", "n3"]);
}

#[test]
fn fair_share_alternates_between_namespaces() {
    let jobs = (0..4)
        .flat_map(|i| {
            ["big", "small"].map(|ns| Job {
                namespace: ns.into(),
                submit_time: i,
                ..job(&format!("{ns}{i}"), 1, 1)
            })
        })
        .collect();
    // 4 GPUs for 8 one-GPU jobs: each namespace gets two, in spite of submit order.
    let mut running_ns = provider("a", "A100", 80, 1, 8, UNIT);
    running_ns.nodes[0].free = vec![4, 5, 6, 7];
    let snap = Snapshot {
        providers: vec![running_ns],
        jobs,
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    let placed: Vec<&str> = d.placements.iter().map(|p| p.job.as_str()).collect();
    assert_eq!(placed, vec!["big0", "small0", "big1", "small1"]);
}

#[test]
fn higher_priority_goes_first() {
    let snap = Snapshot {
        providers: vec![provider("a", "A100", 80, 1, 8, UNIT)],
        jobs: vec![
            job("low", 8, 1),
            Job {
                priority: 5,
                submit_time: 9,
                ..job("high", 8, 1)
            },
        ],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    assert_eq!(d.placements[0].job, "high");
}

fn preemption_snapshot() -> Snapshot {
    let mut p = provider("a", "A100", 80, 1, 8, UNIT);
    p.nodes[0].free.clear();
    let alloc = |id: &str, prio: i32, start: u64, gpus: std::ops::Range<u8>| RunningAllocation {
        job: id.into(),
        namespace: "team".into(),
        priority: prio,
        start_time: start,
        provider: "a".into(),
        gpus: gpus
            .map(|g| GpuRef {
                node: "n0".into(),
                gpu: g,
            })
            .collect(),
        spread_group: None,
        evicting: false,
        budget: None,
        resources: Default::default(),
    };
    Snapshot {
        providers: vec![p],
        running: vec![
            alloc("r-old", 0, 1, 0..4),
            alloc("r-young", 0, 5, 4..6),
            alloc("r-vip", 9, 0, 6..8),
        ],
        jobs: vec![Job {
            priority: 5,
            preempt: true,
            ..job("urgent", 2, 1)
        }],
        ..Snapshot::default()
    }
}

#[test]
fn preemption_evicts_the_youngest_lower_priority_work() {
    let snap = preemption_snapshot();
    let d = run(
        &snap,
        &Config {
            preemption: true,
            ..Config::default()
        },
    );
    assert_eq!(d.placements[0].evicts, vec!["r-young".to_string()]);
    assert_eq!(d.evictions.len(), 1);
    assert_eq!(d.evictions[0].for_job, "urgent");
    assert_eq!(d.placements[0].workers[0].gpus, vec![4, 5]);
    // without preemption the job waits
    let d = run(&snap, &Config::default());
    assert!(d.placements.is_empty() && d.evictions.is_empty());
}

#[test]
fn preemption_never_touches_equal_or_higher_priority() {
    let mut snap = preemption_snapshot();
    snap.jobs[0].gpus_per_worker = 8;
    let d = run(
        &snap,
        &Config {
            preemption: true,
            ..Config::default()
        },
    );
    assert!(d.placements.is_empty());
    assert!(d.evictions.is_empty());
}

#[test]
fn preemption_needs_the_jobs_leave_and_stays_in_its_namespace() {
    let on = Config {
        preemption: true,
        ..Config::default()
    };
    // A job that does not ask for preemption waits, however high its priority.
    let mut snap = preemption_snapshot();
    snap.jobs[0].preempt = false;
    let d = run(&snap, &on);
    assert!(d.placements.is_empty() && d.evictions.is_empty());
    // Another tenant's work is off limits by default…
    let mut snap = preemption_snapshot();
    snap.jobs[0].namespace = "other".into();
    let d = run(&snap, &on);
    assert!(d.placements.is_empty() && d.evictions.is_empty());
    // …and fair game only when the config allows any namespace.
    let across = Config {
        preempt_across_namespaces: true,
        ..on.clone()
    };
    let d = run(&snap, &across);
    assert_eq!(d.placements[0].evicts, vec!["r-young".to_string()]);
    assert_eq!(common::check_evictions(&snap, &d, &across), Ok(()));
}

#[test]
fn work_already_being_evicted_is_never_chosen_again() {
    let on = Config {
        preemption: true,
        ..Config::default()
    };
    // r-young is on its way out for an earlier round's job: its GPUs are still busy, so
    // this job must take the next victim (r-old, older but also priority 0).
    let mut snap = preemption_snapshot();
    snap.running[1].evicting = true;
    let d = run(&snap, &on);
    assert_eq!(d.placements[0].evicts, vec!["r-old".to_string()]);
    assert!(d.placements[0].workers[0].gpus.iter().all(|g| *g < 4));
    assert_eq!(common::check_evictions(&snap, &d, &on), Ok(()));
    // With both low-priority allocations on their way out, nothing is left to evict.
    snap.running[0].evicting = true;
    let d = run(&snap, &on);
    assert!(d.placements.is_empty() && d.evictions.is_empty());
}

#[test]
fn reservations_carry_over_and_block_backfill() {
    let mut p = provider("a", "A100", 80, 2, 8, UNIT);
    p.nodes[0].free.truncate(6);
    p.nodes[1].free.truncate(6);
    let gang = Job {
        submit_time: 0,
        ..job("gang", 8, 1)
    };
    let first = Snapshot {
        providers: vec![p.clone()],
        jobs: vec![gang.clone()],
        ..Snapshot::default()
    };
    let d1 = run(&first, &Config::default());
    assert_eq!(d1.reservations.len(), 1);
    let held = d1.reservations[0].nodes.clone();
    // Next round: small jobs arrive; they may not land on the reserved node.
    let smalls: Vec<Job> = (0..6)
        .map(|i| Job {
            submit_time: 1,
            ..job(&format!("s{i}"), 1, 1)
        })
        .collect();
    let mut jobs = vec![gang];
    jobs.extend(smalls);
    let second = Snapshot {
        providers: vec![p],
        jobs,
        reservations: d1.reservations,
        ..Snapshot::default()
    };
    let d2 = run(&second, &Config::default());
    assert_eq!(d2.placements.len(), 6);
    assert!(d2.placements.iter().all(|pl| !held.contains(&pl.workers[0].node)));
    assert_eq!(d2.reservations[0].nodes, held);
}

#[test]
fn malformed_fleets_are_errors_not_panics() {
    let dup = Snapshot {
        providers: vec![
            provider("a", "A100", 80, 1, 8, UNIT),
            provider("a", "A100", 80, 1, 8, UNIT),
        ],
        ..Snapshot::default()
    };
    assert_eq!(
        place(&dup, &Config::default()),
        Err(SnapshotError::DuplicateProvider("a".into()))
    );
    let mut bad = provider("a", "A100", 80, 1, 8, UNIT);
    bad.nodes[0].free.push(9);
    let snap = Snapshot {
        providers: vec![bad],
        ..Snapshot::default()
    };
    assert!(matches!(
        place(&snap, &Config::default()),
        Err(SnapshotError::BadNode { .. })
    ));
    let mut snap = preemption_snapshot();
    snap.running[0].gpus.push(GpuRef {
        node: "n0".into(),
        gpu: 5,
    });
    assert_eq!(
        place(&snap, &Config::default()),
        Err(SnapshotError::BadAllocation("r-young".into()))
    );
}

#[test]
fn verified_only_uses_only_verified_nodes_of_a_verified_provider() {
    // "a" is verified (one node's GPUs passed) but its n1 did not; "b" is cheaper and
    // wholly unverified.
    let mut a = provider("a", "H100", 80, 2, 8, 3 * UNIT);
    a.nodes[1].verified = false;
    let mut b = provider("b", "H100", 80, 2, 8, UNIT);
    b.verified = false;
    let strict = |id: &str, w| Job {
        verified_only: true,
        ..job(id, 8, w)
    };
    let snap = Snapshot {
        providers: vec![a, b],
        jobs: vec![strict("one", 1), job("any", 8, 2)],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    let on = |id: &str| d.placements.iter().find(|p| p.job == id).unwrap();
    assert_eq!(on("one").provider, "a");
    assert_eq!(on("one").workers[0].node, "n0", "the unverified node is not used");
    assert_eq!(
        on("any").provider,
        "b",
        "a job that allows unverified GPUs takes the cheaper"
    );

    // Two verified-only workers do not fit on a's one verified node: the job waits and
    // says why rather than spilling onto n1.
    let mut a = provider("a", "H100", 80, 2, 8, 3 * UNIT);
    a.nodes[1].verified = false;
    let snap = Snapshot {
        providers: vec![a],
        jobs: vec![strict("two", 2)],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    assert!(d.placements.is_empty(), "{:?}", d.placements);
    assert_eq!(d.unplaced[0].job, "two");
    let why = d.unplaced[0].explanation.to_string();
    assert!(why.contains("too small for 16 suitable GPUs"), "{why}");

    // Only unverified nodes left: the provider reads as not verified.
    let mut a = provider("a", "H100", 80, 2, 8, 3 * UNIT);
    a.nodes.iter_mut().for_each(|n| n.verified = false);
    let snap = Snapshot {
        providers: vec![a],
        jobs: vec![strict("none", 1)],
        ..Snapshot::default()
    };
    let d = run(&snap, &Config::default());
    let why = d.unplaced[0].explanation.to_string();
    assert!(why.contains("1 not verified"), "{why}");
}
