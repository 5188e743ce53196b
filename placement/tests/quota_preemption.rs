//! Preemption within a namespace's GPU cap: the victims make room in the cap for the job
//! that evicts them only (they count as used until they have stopped), only as many are
//! evicted as the job needs, and untrusted counts neither overflow nor drift.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{
    ComputeCapability, Config, Decisions, Explanation, Job, Node, NodeResources, Quota, QuotaExceeded,
    Resources, RunningAllocation, Snapshot, place,
};

use common::{GIB, UNIT, check, check_evictions, check_quotas, job, provider, running_on_a};

fn preempting() -> Config {
    Config {
        preemption: true,
        ..Config::default()
    }
}

fn capped(gpus: u32, used_gpus: u32) -> BTreeMap<String, Quota> {
    BTreeMap::from([(
        "team".to_owned(),
        Quota {
            gpus: Some(gpus),
            used_gpus,
            ..Quota::default()
        },
    )])
}

/// `team` work on provider `a`'s `node`, GPUs `gpus`, at `priority`.
fn team(job: &str, node: &str, gpus: std::ops::Range<u8>, priority: i32) -> RunningAllocation {
    RunningAllocation {
        priority,
        ..running_on_a(job, "team", node, gpus, None)
    }
}

fn urgent(id: &str, gpus: u8, priority: i32, submit: u64) -> Job {
    Job {
        priority,
        preempt: true,
        submit_time: submit,
        ..job(id, gpus, 1)
    }
}

fn run(snap: &Snapshot) -> Decisions {
    let d = place(snap, &preempting()).unwrap();
    assert_eq!(check(snap, &d), Ok(()));
    assert_eq!(check_evictions(snap, &d, &preempting()), Ok(()));
    assert_eq!(check_quotas(snap, &d), Ok(()), "{d:?}");
    d
}

fn why<'d>(d: &'d Decisions, job: &str) -> &'d Explanation {
    &d.unplaced.iter().find(|u| u.job == job).unwrap().explanation
}

#[test]
fn the_room_a_quota_preemption_makes_is_the_preemptors_alone() {
    // Cap 8, all 8 held by `victim` on n0; n1 and n2 are free. `a` evicts it; `b`, behind
    // it, must not take the victim's share of the cap too: the victim counts until it
    // has stopped, so next round the namespace would hold 8 + 4 + 4 against 8.
    let mut p = provider("a", "A100", 80, 3, 8, UNIT);
    p.nodes[0].free.clear();
    let b = Job {
        priority: 5,
        submit_time: 2,
        ..job("b", 4, 1)
    };
    let snap = Snapshot {
        providers: vec![p],
        running: vec![team("victim", "n0", 0..8, 0)],
        jobs: vec![urgent("a", 4, 9, 1), b],
        quotas: capped(8, 8),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].job, "a");
    assert_eq!(d.placements[0].evicts, ["victim"]);
    assert_eq!(
        why(&d, "b"),
        &Explanation::Quota(QuotaExceeded::Gpus {
            limit: 8,
            used: 12,
            need: 4
        })
    );
}

#[test]
fn a_quota_preemption_evicts_only_the_victims_the_job_needs() {
    // Cap 8, held by `small` (1 GPU, priority 0) and `big` (7, priority 1); n1 is free.
    // Taken lowest priority first, `small` alone frees too little, `big` then frees
    // enough by itself: `small` keeps running.
    let mut p = provider("a", "A100", 80, 2, 8, UNIT);
    p.nodes[0].free.clear();
    let snap = Snapshot {
        providers: vec![p],
        running: vec![team("small", "n0", 0..1, 0), team("big", "n0", 1..8, 1)],
        jobs: vec![urgent("urgent", 4, 9, 1)],
        quotas: capped(8, 8),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].evicts, ["big"]);
    assert_eq!(d.evictions.len(), 1, "{:?}", d.evictions);
}

#[test]
fn a_quota_victim_whose_gpus_the_job_needs_is_kept_among_the_victims() {
    // Cap 8, held by `lone` (1 H100 GPU on h0, priority 0) and `wide` (7 A100 GPUs on n0,
    // priority 1). The H100 job of 4 needs `wide`'s share of the cap, and `lone`'s GPU
    // beside the 3 free on h0: the cap alone would spare `lone`, the room would not.
    let mut p = provider("a", "A100", 80, 1, 8, UNIT);
    p.nodes[0].free.clear();
    p.prices.insert("H100".into(), UNIT);
    let mut h0 = Node::new("h0", "H100", 80 * GIB, ComputeCapability::new(9, 0), Some(9), 4);
    h0.free = vec![1, 2, 3];
    p.nodes.push(h0);
    let snap = Snapshot {
        providers: vec![p],
        running: vec![team("lone", "h0", 0..1, 0), team("wide", "n0", 0..7, 1)],
        jobs: vec![Job {
            models: vec!["H100".into()],
            ..urgent("urgent", 4, 9, 1)
        }],
        quotas: capped(8, 8),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].evicts, ["lone", "wide"]);
}

#[test]
fn a_namespace_count_near_the_integer_limit_holds_a_preempting_job_without_overflow() {
    let snap = Snapshot {
        providers: vec![provider("a", "A100", 80, 1, 8, UNIT)],
        jobs: vec![urgent("urgent", 4, 9, 1)],
        quotas: capped(10, u32::MAX - 1),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert!(d.placements.is_empty() && d.evictions.is_empty(), "{d:?}");
    assert_eq!(
        why(&d, "urgent"),
        &Explanation::Quota(QuotaExceeded::Gpus {
            limit: 10,
            used: u32::MAX - 1,
            need: 4
        })
    );
}

#[test]
fn a_quota_preemption_that_finds_no_room_leaves_the_namespaces_count_as_it_was() {
    // The caller's count (5) is below what `victim` holds (8): untrusted, it may lag.
    // `urgent` (H100 only) would evict `victim` for the cap, but frees no H100: it is not
    // placed, and the count stays 5, so `b` (3 GPUs) still fits the cap of 8.
    let mut p = provider("a", "A100", 80, 2, 8, UNIT);
    p.nodes[0].free.clear();
    p.prices.insert("H100".into(), UNIT);
    let mut h0 = Node::new("h0", "H100", 80 * GIB, ComputeCapability::new(9, 0), Some(9), 8);
    h0.free.clear();
    p.nodes.push(h0);
    let snap = Snapshot {
        providers: vec![p],
        running: vec![
            team("victim", "n0", 0..8, 0),
            running_on_a("rival", "rival", "h0", 0..8, None),
        ],
        jobs: vec![
            Job {
                models: vec!["H100".into()],
                ..urgent("urgent", 4, 9, 1)
            },
            Job {
                submit_time: 2,
                ..job("b", 3, 1)
            },
        ],
        quotas: capped(8, 5),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert!(d.evictions.is_empty(), "{d:?}");
    assert!(
        matches!(
            why(&d, "urgent"),
            Explanation::Quota(QuotaExceeded::Gpus { used: 5, .. })
        ),
        "{d:?}"
    );
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].job, "b");
}

#[test]
fn probing_a_quota_preemption_leaves_an_over_committed_nodes_cpu_as_it_was() {
    // Cap 8, held by `small` (1 GPU on n2, priority 0) and `big` (7 on n0, priority 1).
    // n2 counts 48 cores for `small` and 40 free of 64: more than it has (the snapshot's
    // counts need not agree). `urgent` probes evicting both, then `big` alone, and keeps
    // `small`: the probes gave `small`'s cores back capped at 64 and took 48 again, which
    // left 16 — and `later`, asking 40 cores that only n2 had, found no node.
    const CORE: u64 = 1000;
    let cores = |free: u64| {
        Some(NodeResources {
            allocatable: Resources::cpu_memory(64 * CORE, 512 * 1024),
            free: Resources::cpu_memory(free * CORE, 512 * 1024),
        })
    };
    let mut p = provider("a", "A100", 80, 3, 8, UNIT);
    p.nodes[0].free.clear();
    p.nodes[2].free.retain(|&g| g != 0);
    for (n, free) in p.nodes.iter_mut().zip([8, 8, 40]) {
        n.resources = cores(free);
    }
    let mut small = team("small", "n2", 0..1, 0);
    small.resources = BTreeMap::from([("n2".to_owned(), Resources::cpu_memory(48 * CORE, 0))]);
    let later = Job {
        namespace: "other".into(),
        submit_time: 2,
        worker_resources: Resources::cpu_memory(40 * CORE, 0),
        ..job("later", 1, 1)
    };
    let snap = Snapshot {
        providers: vec![p],
        running: vec![small, team("big", "n0", 1..8, 1)],
        jobs: vec![urgent("urgent", 4, 9, 1), later],
        quotas: capped(8, 8),
        ..Snapshot::default()
    };
    let d = run(&snap);
    let placed: Vec<(&str, &[String])> = d
        .placements
        .iter()
        .map(|p| (p.job.as_str(), p.evicts.as_slice()))
        .collect();
    assert_eq!(
        placed,
        [("urgent", &["big".to_owned()][..]), ("later", &[][..])],
        "{d:?}"
    );
    let node = |job: &str| &d.placements.iter().find(|p| p.job == job).unwrap().workers[0].node;
    assert_eq!(node("later"), "n2");
}

#[test]
fn probing_a_quota_preemption_leaves_the_order_of_equally_free_nodes_alone() {
    // As above, without CPU: n2 (`small` on GPU 0) and n3 (GPU 0 foreign) have 7 free,
    // the tightest fit for `urgent`'s 4, and n2 comes first by name. A probe that evicted
    // `small` and took it back moved n2 behind n3: `urgent` landed on n3, as if the probe
    // had been a placement.
    let mut p = provider("a", "A100", 80, 4, 8, UNIT);
    p.nodes[0].free.clear();
    for n in &mut p.nodes[2..] {
        n.free.retain(|&g| g != 0);
    }
    let snap = Snapshot {
        providers: vec![p],
        running: vec![team("small", "n2", 0..1, 0), team("big", "n0", 1..8, 1)],
        jobs: vec![urgent("urgent", 4, 9, 1)],
        quotas: capped(8, 8),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.placements[0].evicts, ["big"]);
    assert_eq!(d.placements[0].workers[0].node, "n2", "{d:?}");
}

#[test]
fn a_second_quota_preemptor_evicts_only_what_it_needs_beside_the_first_ones_victims() {
    // Cap 16, held by four 4-GPU jobs; n2 and n3 are free. `u1` evicts one of them for
    // its 4. Once they have stopped, the namespace holds 12 + 4: `u2` needs one more
    // victim, not two — the first one's victim, still counted until it stops, is
    // already going (counting it made every later preemptor evict its predecessors'
    // share again, more each time).
    let mut p = provider("a", "A100", 80, 4, 8, UNIT);
    p.nodes[0].free.clear();
    p.nodes[1].free.clear();
    let snap = Snapshot {
        providers: vec![p],
        running: vec![
            team("v1", "n0", 0..4, 0),
            team("v2", "n0", 4..8, 0),
            team("v3", "n1", 0..4, 0),
            team("v4", "n1", 4..8, 0),
        ],
        jobs: vec![urgent("u1", 4, 9, 1), urgent("u2", 4, 9, 2)],
        quotas: capped(16, 16),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert_eq!(d.placements.len(), 2, "{d:?}");
    for p in &d.placements {
        assert_eq!(p.evicts.len(), 1, "{d:?}");
    }
    assert_eq!(d.evictions.len(), 2, "{:?}", d.evictions);
}

#[test]
fn a_later_quota_preemptor_takes_what_is_left_of_the_room_without_evicting() {
    // Cap 8, all held by `victim`. `u1` evicts it for 4: 4 of the room are left once it
    // has stopped, and `u2` (4, may preempt) takes them without evicting anything more;
    // `b`, which may not preempt, still waits (the room is the preemptors').
    let mut p = provider("a", "A100", 80, 3, 8, UNIT);
    p.nodes[0].free.clear();
    let b = Job {
        priority: 9,
        submit_time: 3,
        ..job("b", 4, 1)
    };
    let snap = Snapshot {
        providers: vec![p],
        running: vec![team("victim", "n0", 0..8, 0)],
        jobs: vec![urgent("u1", 4, 9, 1), urgent("u2", 4, 9, 2), b],
        quotas: capped(8, 8),
        ..Snapshot::default()
    };
    let d = run(&snap);
    let placed: Vec<(&str, usize)> = d
        .placements
        .iter()
        .map(|p| (p.job.as_str(), p.evicts.len()))
        .collect();
    assert_eq!(placed, [("u1", 1), ("u2", 0)], "{d:?}");
    assert!(
        matches!(why(&d, "b"), Explanation::Quota(QuotaExceeded::Gpus { .. })),
        "{d:?}"
    );
}

#[test]
fn a_quota_preemptor_with_room_in_the_cap_but_none_on_the_providers_preempts_for_room() {
    // Cap 16, held by `v1` (n0) and `v2` (n1), 8 GPUs each, no GPU free. `u1` evicts one
    // for its 4 GPUs of the cap, and the GPUs it frees but does not take stay busy this
    // round. The cap has room for `u2` once that victim has stopped (16 − 8 + 4 + 4), but
    // no provider has 4 free GPUs: `u2` preempts for room there as any job would, rather
    // than waiting on a cap that does not hold it.
    let mut p = provider("a", "A100", 80, 2, 8, UNIT);
    for n in &mut p.nodes {
        n.free.clear();
    }
    let snap = Snapshot {
        providers: vec![p],
        running: vec![team("v1", "n0", 0..8, 0), team("v2", "n1", 0..8, 0)],
        jobs: vec![urgent("u1", 4, 9, 1), urgent("u2", 4, 9, 2)],
        quotas: capped(16, 16),
        ..Snapshot::default()
    };
    let d = run(&snap);
    let placed: Vec<(&str, usize)> = d
        .placements
        .iter()
        .map(|p| (p.job.as_str(), p.evicts.len()))
        .collect();
    assert_eq!(placed, [("u1", 1), ("u2", 1)], "{d:?}");
    assert_eq!(d.evictions.len(), 2, "{:?}", d.evictions);
}
