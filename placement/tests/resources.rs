//! CPU and memory beside the GPUs: a node holds a worker only with the CPU and memory its
//! pod requests free; a worker no node could ever hold, or one that must wait for CPU
//! rather than GPUs, is told so.
#![allow(clippy::unwrap_used)]

mod common;

use gpufed_placement::{
    Config, Decisions, Job, NodeResources, Provider, Reason, Resources, RunningAllocation, Snapshot, place,
};

use common::{UNIT, check, job, provider};

const CORE: u64 = 1000;

fn cpu(cores: u64) -> Resources {
    Resources::cpu_memory(cores * CORE, 0)
}

/// Every node of `p` reports `cores` allocatable and 512 GiB, all free.
fn with_cores(mut p: Provider, cores: u64) -> Provider {
    for n in &mut p.nodes {
        let allocatable = Resources::cpu_memory(cores * CORE, 512 * 1024);
        n.resources = Some(NodeResources {
            allocatable,
            free: allocatable,
        });
    }
    p
}

fn asking(mut j: Job, per_worker: Resources) -> Job {
    j.worker_resources = per_worker;
    j
}

/// `jobs` submitted one second apart, in this order.
fn in_order(jobs: Vec<Job>) -> Vec<Job> {
    (0..)
        .zip(jobs)
        .map(|(t, j)| Job { submit_time: t, ..j })
        .collect()
}

/// The provider job `id` was placed on.
fn provider_of(d: &Decisions, id: &str) -> String {
    d.placements
        .iter()
        .find(|p| p.job == id)
        .map(|p| p.provider.clone())
        .unwrap_or_else(|| panic!("{id} not placed: {d:?}"))
}

/// One 4-GPU, 64-core node each: `cheap` at 1.00, `dear` at 1.50.
fn cheap_and_dear() -> Vec<Provider> {
    vec![
        with_cores(provider("cheap", "A100", 40, 1, 4, UNIT), 64),
        with_cores(provider("dear", "A100", 40, 1, 4, 3 * UNIT / 2), 64),
    ]
}

#[test]
fn a_node_out_of_cpu_sends_the_next_worker_elsewhere() {
    let snap = Snapshot {
        providers: cheap_and_dear(),
        jobs: in_order(vec![
            asking(job("first", 1, 1), cpu(40)),
            asking(job("second", 1, 1), cpu(40)),
        ]),
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    let on = |id: &str| provider_of(&d, id);
    assert_eq!(on("first"), "cheap");
    // cheap still has 3 free GPUs, but only 24 cores.
    assert_eq!(on("second"), "dear");
}

#[test]
fn workers_per_node_are_capped_by_cpu() {
    // Two 4-GPU nodes of 64 cores: 20-core workers fit three to a node.
    let p = with_cores(provider("p", "A100", 40, 2, 4, UNIT), 64);
    let fits = Snapshot {
        providers: vec![p.clone()],
        jobs: vec![asking(job("six", 1, 6), cpu(20))],
        ..Snapshot::default()
    };
    let d = place(&fits, &Config::default()).unwrap();
    check(&fits, &d).unwrap();
    let workers = &d.placements[0].workers;
    for node in ["n0", "n1"] {
        assert_eq!(workers.iter().filter(|w| w.node == node).count(), 3);
    }
    let seven = Snapshot {
        providers: vec![p],
        jobs: vec![asking(job("seven", 1, 7), cpu(20))],
        ..Snapshot::default()
    };
    let d = place(&seven, &Config::default()).unwrap();
    assert!(d.placements.is_empty());
    assert_eq!(
        d.unplaced[0].explanation.to_string(),
        "0/1 providers fit: 1 too small for 7 suitable GPUs"
    );
}

#[test]
fn a_worker_no_node_can_hold_is_told_what_it_asks_for() {
    let big = Resources::cpu_memory(100 * CORE, 16 * 1024);
    let snap = Snapshot {
        providers: cheap_and_dear(),
        jobs: vec![asking(job("huge", 1, 1), big)],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty());
    let e = &d.unplaced[0].explanation;
    assert_eq!(
        e.primary(),
        Some(&Reason::WorkerTooLarge {
            per_worker: big.to_string()
        })
    );
    assert_eq!(
        e.to_string(),
        "0/2 providers fit: 2 lack a suitable node with 100 CPU and 16 GiB memory for one worker"
    );
}

#[test]
fn free_gpus_without_free_cpu_wait_for_cpu() {
    // Foreign pods hold 60 of cheap's 64 cores; dear is too dear for the job.
    let mut providers = cheap_and_dear();
    providers[0].nodes[0].resources.as_mut().unwrap().free = cpu(4);
    let snap = Snapshot {
        providers,
        jobs: vec![Job {
            max_price: Some(UNIT),
            ..asking(job("waits", 1, 1), cpu(8))
        }],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty());
    assert_eq!(
        d.unplaced[0].explanation.to_string(),
        "0/2 providers fit: 1 above max price 1.00, 1 lack 8 CPU free per worker beside their free GPUs now"
    );
}

#[test]
fn a_node_that_reports_no_cpu_is_limited_by_its_gpus_only() {
    let snap = Snapshot {
        providers: vec![provider("p", "A100", 40, 1, 4, UNIT)],
        jobs: vec![asking(job("four", 1, 4), cpu(1000))],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.placements[0].workers.len(), 4);
}

#[test]
fn evicting_gives_the_victims_cpu_to_the_preemptor() {
    // Low-priority work holds 2 GPUs and 60 cores of the only node: 2 GPUs are free,
    // but only 4 cores.
    let mut p = with_cores(provider("p", "A100", 40, 1, 4, UNIT), 64);
    p.nodes[0].free = vec![0, 1];
    p.nodes[0].resources.as_mut().unwrap().free = cpu(4);
    let low = RunningAllocation {
        job: "low".into(),
        namespace: "team".into(),
        provider: "p".into(),
        gpus: common::running_on_a("low", "team", "n0", 2..4, None).gpus,
        resources: [("n0".to_owned(), cpu(60))].into(),
        ..RunningAllocation::default()
    };
    let high = Job {
        priority: 5,
        preempt: true,
        ..asking(job("high", 1, 1), cpu(30))
    };
    let snap = Snapshot {
        providers: vec![p],
        running: vec![low],
        jobs: vec![high],
        ..Snapshot::default()
    };
    let off = place(&snap, &Config::default()).unwrap();
    assert!(off.placements.is_empty(), "no preemption: nothing to place");
    let cfg = Config {
        preemption: true,
        ..Config::default()
    };
    let d = place(&snap, &cfg).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.placements.len(), 1);
    assert_eq!(d.placements[0].evicts, ["low"]);
}

#[test]
fn a_victims_cpu_stays_counted_on_an_over_committed_node_as_the_snapshot_had_it() {
    // `low` holds 4 GPUs and 48 cores on each of n0 and n1, which count 40 of their 64
    // cores free: more than they have. `high` evicts it for one node's 8 GPUs; on the
    // other, `low` keeps its 4 GPUs and 48 cores until it stops, and the 40 cores free
    // stay free. (Given back capped at 64 and taken again, they came out 16: `later`,
    // asking 40, found no node.)
    let mut p = with_cores(provider("p", "A100", 40, 2, 8, UNIT), 64);
    for n in &mut p.nodes {
        n.free = (4..8).collect();
        n.resources.as_mut().unwrap().free = cpu(40);
    }
    let low = RunningAllocation {
        job: "low".into(),
        namespace: "team".into(),
        provider: "p".into(),
        gpus: ["n0", "n1"]
            .into_iter()
            .flat_map(|n| common::running_on_a("low", "team", n, 0..4, None).gpus)
            .collect(),
        resources: [("n0".to_owned(), cpu(48)), ("n1".to_owned(), cpu(48))].into(),
        ..RunningAllocation::default()
    };
    let high = Job {
        priority: 5,
        preempt: true,
        ..job("high", 8, 1)
    };
    let later = Job {
        namespace: "other".into(),
        submit_time: 1,
        ..asking(job("later", 1, 1), cpu(40))
    };
    let snap = Snapshot {
        providers: vec![p],
        running: vec![low],
        jobs: vec![high, later],
        ..Snapshot::default()
    };
    let cfg = Config {
        preemption: true,
        ..Config::default()
    };
    let d = place(&snap, &cfg).unwrap();
    check(&snap, &d).unwrap();
    let placed: Vec<&str> = d.placements.iter().map(|p| p.job.as_str()).collect();
    assert_eq!(placed, ["high", "later"], "{d:?}");
    assert_eq!(d.placements[0].evicts, ["low"]);
    assert_ne!(d.placements[0].workers[0].node, d.placements[1].workers[0].node);
}

#[test]
fn jobs_that_ask_for_nothing_ignore_cpu() {
    let mut providers = cheap_and_dear();
    providers[0].nodes[0].resources.as_mut().unwrap().free = Resources::ZERO;
    let snap = Snapshot {
        providers,
        jobs: vec![job("plain", 1, 4)],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert_eq!(d.placements[0].provider, "cheap");
}

#[test]
fn ephemeral_storage_counts_where_a_node_reports_it() {
    // cheap reports 100 GiB of local storage, dear reports none (no limit).
    let mut providers = cheap_and_dear();
    let storage = Resources {
        ephemeral_mib: 100 * 1024,
        ..Resources::ZERO
    };
    let r = providers[0].nodes[0].resources.as_mut().unwrap();
    r.allocatable.ephemeral_mib = storage.ephemeral_mib;
    r.free.ephemeral_mib = storage.ephemeral_mib;
    providers[1].nodes[0]
        .resources
        .as_mut()
        .unwrap()
        .allocatable
        .ephemeral_mib = u64::MAX;
    providers[1].nodes[0]
        .resources
        .as_mut()
        .unwrap()
        .free
        .ephemeral_mib = u64::MAX;
    let disk = |id: &str, gib: u64| {
        asking(
            job(id, 1, 1),
            Resources {
                ephemeral_mib: gib * 1024,
                ..cpu(1)
            },
        )
    };
    let snap = Snapshot {
        providers: providers.clone(),
        jobs: in_order(vec![disk("small", 60), disk("second", 60)]),
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    let on = |id: &str| provider_of(&d, id);
    assert_eq!(on("small"), "cheap");
    assert_eq!(on("second"), "dear", "cheap has 40 GiB of storage left");
    let only_cheap = Snapshot {
        providers: vec![providers[0].clone()],
        jobs: vec![disk("big", 200)],
        ..Snapshot::default()
    };
    let d = place(&only_cheap, &Config::default()).unwrap();
    assert_eq!(
        d.unplaced[0].explanation.to_string(),
        "0/1 providers fit: 1 lack a suitable node with 1 CPU and 200 GiB ephemeral storage for one worker"
    );
}
