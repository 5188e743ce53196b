//! Table tests: the words a user reads when a job waits.
#![allow(clippy::unwrap_used)]

mod common;

use gpufed_placement::{
    ComputeCapability, Config, Explanation, Interconnect, Job, Provider, Reason, Snapshot, place,
};

use common::{GIB, UNIT, job, provider};

/// Five providers: p0–p2 sell 40 GiB A100 at 1.00, p3–p4 sell 80 GiB A100 at 3.00.
fn fleet() -> Vec<Provider> {
    let mut ps: Vec<Provider> = (0..3)
        .map(|i| provider(&format!("p{i}"), "A100", 40, 2, 8, UNIT))
        .collect();
    ps.extend((3..5).map(|i| provider(&format!("p{i}"), "A100", 80, 2, 8, 3 * UNIT)));
    ps
}

fn explain(providers: Vec<Provider>, j: Job) -> String {
    let snap = Snapshot {
        providers,
        jobs: vec![j],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty(), "unexpectedly placed: {:?}", d.placements);
    d.unplaced[0].explanation.to_string()
}

#[test]
fn explanation_table() {
    let busy = || {
        let mut ps = fleet();
        ps.iter_mut()
            .flat_map(|p| p.nodes.iter_mut())
            .for_each(|n| n.free.truncate(2));
        ps
    };
    let unhealthy = || {
        let mut ps = fleet();
        ps[0].healthy = false;
        ps[1].verified = false;
        ps[2].region = "us".into();
        ps
    };
    let cases: Vec<(&str, Vec<Provider>, Job, &str)> = vec![
        (
            "the issue's example",
            fleet(),
            Job {
                min_vram_mib: 80 * GIB,
                max_price: Some(2 * UNIT),
                ..job("j", 1, 1)
            },
            "0/5 providers fit: 3 lack 80 GiB VRAM, 2 above max price 2.00",
        ),
        (
            "kept off the providers that refused its last attempt",
            fleet(),
            Job {
                min_vram_mib: 80 * GIB,
                avoid: vec!["p3".into(), "p4".into()],
                ..job("j", 1, 1)
            },
            "0/5 providers fit: 3 lack 80 GiB VRAM, 2 refused or did not start this job's last attempt",
        ),
        (
            "no providers",
            vec![],
            job("j", 1, 1),
            "0/0 providers fit: no providers",
        ),
        (
            "wrong model",
            fleet(),
            Job {
                models: vec!["H100".into(), "H200".into()],
                ..job("j", 1, 1)
            },
            "0/5 providers fit: 5 lack H100/H200 GPUs",
        ),
        (
            "compute capability",
            fleet(),
            Job {
                min_compute: ComputeCapability::new(9, 0),
                ..job("j", 1, 1)
            },
            "0/5 providers fit: 5 lack compute capability 9.0",
        ),
        (
            "node too small",
            fleet(),
            job("j", 16, 1),
            "0/5 providers fit: 5 lack a node with 16 suitable GPUs",
        ),
        (
            "gang too big",
            fleet(),
            job("j", 8, 3),
            "0/5 providers fit: 5 too small for 24 suitable GPUs",
        ),
        (
            "NVLink domain too small",
            fleet(),
            Job {
                interconnect: Interconnect::NvlinkGang,
                ..job("j", 8, 2)
            },
            "0/5 providers fit: 5 lack an NVLink domain with 16 suitable GPUs",
        ),
        (
            "busy",
            busy(),
            job("j", 4, 1),
            "0/5 providers fit: 5 lack 4 free suitable GPUs now",
        ),
        (
            "provider and region lists, health, verification",
            unhealthy(),
            Job {
                verified_only: true,
                regions: vec!["eu".into()],
                providers: vec!["p0".into(), "p1".into(), "p2".into()],
                ..job("j", 16, 1)
            },
            "0/5 providers fit: 2 not in the allowed providers, 1 outside the allowed regions, 1 unhealthy, 1 not verified",
        ),
        (
            "reputation",
            fleet(),
            Job {
                min_reputation: 0.95,
                ..job("j", 1, 1)
            },
            "0/5 providers fit: 5 below reputation 0.950",
        ),
        (
            "odd VRAM in MiB",
            fleet(),
            Job {
                min_vram_mib: 90_000,
                ..job("j", 1, 1)
            },
            "0/5 providers fit: 5 lack 90000 MiB VRAM",
        ),
    ];
    for (name, providers, j, want) in cases {
        assert_eq!(explain(providers, j), want, "case {name}");
    }
}

#[test]
fn nvlink_missing_is_named() {
    let mut p = provider("p0", "L4", 24, 2, 4, UNIT);
    p.nodes.iter_mut().for_each(|n| n.nvlink_domain = None);
    let j = Job {
        interconnect: Interconnect::NvlinkWorker,
        ..job("j", 2, 1)
    };
    assert_eq!(explain(vec![p], j), "0/1 providers fit: 1 lack NVLink");
}

#[test]
fn reserved_capacity_is_named_for_later_jobs() {
    // One 8-GPU node with 4 free: the gang of 8 reserves it; the 1-GPU job behind it
    // is told the capacity is reserved.
    let mut p = provider("p0", "A100", 80, 1, 8, UNIT);
    p.nodes[0].free.truncate(4);
    let snap = Snapshot {
        providers: vec![p],
        jobs: vec![
            Job {
                submit_time: 0,
                ..job("gang", 8, 1)
            },
            Job {
                submit_time: 1,
                ..job("small", 1, 1)
            },
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty());
    let texts: Vec<String> = d
        .unplaced
        .iter()
        .map(|u| format!("{}: {}", u.job, u.explanation))
        .collect();
    assert_eq!(
        texts,
        vec![
            "gang: 0/1 providers fit: 1 lack 8 free suitable GPUs now",
            "small: 0/1 providers fit: 1 hold capacity reserved for a waiting gang",
        ]
    );
    assert_eq!(d.reservations.len(), 1);
    assert_eq!(d.reservations[0].job, "gang");
    assert_eq!(d.unplaced[1].explanation.primary(), Some(&Reason::Reserved));
}

#[test]
fn invalid_jobs_are_explained_not_dropped() {
    let snap = Snapshot {
        providers: fleet(),
        jobs: vec![
            job("zero", 0, 1),
            job("nobody", 1, 0),
            job("dup", 1, 1),
            job("dup", 1, 1),
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    let mut texts: Vec<String> = d
        .unplaced
        .iter()
        .map(|u| format!("{}: {}", u.job, u.explanation))
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        vec![
            "dup: invalid job: duplicate job id in the queue",
            "nobody: invalid job: workers must be at least 1",
            "zero: invalid job: gpus per worker must be 1..=64, got 0",
        ]
    );
    assert_eq!(d.placements.len(), 1);
    assert!(matches!(d.unplaced[0].explanation, Explanation::Invalid(_)));
}
