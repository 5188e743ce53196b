//! Extended resources beside the GPUs (RDMA devices, hugepages, other device plugins'
//! resources): a node without them holds no worker that asks for them, whatever its free
//! GPUs; explanations name them.
#![allow(clippy::unwrap_used)]

mod common;

use gpufed_placement::{
    Config, EXTENDED_SLOTS, Job, NodeResources, Provider, Reason, Resources, RunningAllocation, Snapshot,
    place,
};

use common::{UNIT, check, job, provider};

/// Slot 0 is RDMA devices, slot 1 hugepages of 2 MiB (in MiB).
fn names() -> Vec<String> {
    vec!["rdma/ib".into(), "hugepages-2Mi".into()]
}

fn ext(rdma: u64, hugepages_mib: u64) -> Resources {
    let mut extended = [0; EXTENDED_SLOTS];
    extended[0] = rdma;
    extended[1] = hugepages_mib;
    Resources {
        extended,
        ..Resources::cpu_memory(0, 0)
    }
}

/// Every node of `p` has 64 cores, 512 GiB and `extra`, all free.
fn with(mut p: Provider, extra: Resources) -> Provider {
    for n in &mut p.nodes {
        let allocatable = Resources::cpu_memory(64_000, 512 * 1024).plus(&extra);
        n.resources = Some(NodeResources {
            allocatable,
            free: allocatable,
        });
    }
    p
}

fn asking(j: Job, per_worker: Resources) -> Job {
    Job {
        worker_resources: per_worker,
        ..j
    }
}

/// One 4-GPU node each: `cheap` at 1.00 without RDMA or hugepages, `dear` at 1.50 with
/// 2 RDMA devices and 4 GiB of hugepages.
fn snapshot(jobs: Vec<Job>) -> Snapshot {
    Snapshot {
        providers: vec![
            with(provider("cheap", "A100", 40, 1, 4, UNIT), ext(0, 0)),
            with(provider("dear", "A100", 40, 1, 4, 3 * UNIT / 2), ext(2, 4096)),
        ],
        jobs,
        extended_resources: names(),
        ..Snapshot::default()
    }
}

fn placed_on(snap: &Snapshot) -> Vec<(String, String)> {
    let d = place(snap, &Config::default()).unwrap();
    check(snap, &d).unwrap();
    d.placements
        .iter()
        .map(|p| (p.job.clone(), p.provider.clone()))
        .collect()
}

#[test]
fn a_worker_asking_for_rdma_goes_where_the_rdma_is() {
    let snap = snapshot(vec![
        asking(job("rdma", 1, 1), ext(1, 0)),
        asking(job("hugepages", 1, 1), ext(0, 1024)),
        job("plain", 1, 1),
    ]);
    let mut on = placed_on(&snap);
    on.sort();
    let on: Vec<(&str, &str)> = on.iter().map(|(j, p)| (j.as_str(), p.as_str())).collect();
    assert_eq!(on, [("hugepages", "dear"), ("plain", "cheap"), ("rdma", "dear")]);
}

#[test]
fn rdma_devices_cap_the_workers_a_node_holds() {
    // `dear` has 4 free GPUs but 2 RDMA devices: 2 workers of 1 GPU and 1 device each.
    let two = snapshot(vec![asking(job("two", 1, 2), ext(1, 0))]);
    assert_eq!(placed_on(&two), [("two".to_owned(), "dear".to_owned())]);
    let three = snapshot(vec![asking(job("three", 1, 3), ext(1, 0))]);
    let d = place(&three, &Config::default()).unwrap();
    assert!(d.placements.is_empty(), "{d:?}");
    assert_eq!(
        d.unplaced[0].explanation.to_string(),
        "0/2 providers fit: 1 lack a suitable node with 1 rdma/ib for one worker, \
         1 too small for 3 suitable GPUs"
    );
}

#[test]
fn a_worker_no_node_can_hold_is_told_which_extended_resource() {
    let snap = snapshot(vec![asking(job("huge", 1, 1), ext(4, 1024))]);
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty());
    assert_eq!(
        d.unplaced[0].explanation.primary(),
        Some(&Reason::WorkerTooLarge {
            per_worker: "4 rdma/ib and 1 GiB hugepages-2Mi".into()
        })
    );
}

#[test]
fn rdma_held_by_running_work_waits_or_is_won_by_eviction() {
    let mut snap = snapshot(vec![Job {
        priority: 5,
        preempt: true,
        ..asking(job("high", 1, 1), ext(1, 0))
    }]);
    // Low-priority work holds 1 GPU and both RDMA devices of `dear`.
    let dear = &mut snap.providers[1].nodes[0];
    dear.free = vec![0, 1, 2];
    dear.resources.as_mut().unwrap().free = Resources::cpu_memory(64_000, 512 * 1024);
    snap.running = vec![RunningAllocation {
        job: "low".into(),
        namespace: "team".into(),
        provider: "dear".into(),
        gpus: common::running_on_a("low", "team", "n0", 3..4, None).gpus,
        resources: [("n0".to_owned(), ext(2, 0))].into(),
        ..RunningAllocation::default()
    }];
    let wait = place(&snap, &Config::default()).unwrap();
    assert!(wait.placements.is_empty());
    assert_eq!(
        wait.unplaced[0].explanation.to_string(),
        "0/2 providers fit: 1 lack a suitable node with 1 rdma/ib for one worker, \
         1 lack 1 rdma/ib free per worker beside their free GPUs now"
    );
    let cfg = Config {
        preemption: true,
        ..Config::default()
    };
    let d = place(&snap, &cfg).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].provider, "dear");
    assert_eq!(d.placements[0].evicts, ["low"]);
}

#[test]
fn unnamed_slots_still_read() {
    assert_eq!(ext(3, 0).to_string(), "3 extended resource 0");
    assert_eq!(ext(0, 2048).describe(&names()), "2 GiB hugepages-2Mi");
}
