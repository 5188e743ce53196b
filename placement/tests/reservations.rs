//! Reservations carried from round to round hold only nodes their job may still use.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{Config, Job, Quota, Reservation, RunningAllocation, Snapshot, place};

use common::{UNIT, check, job, provider, running_on_a};

#[test]
fn a_reservation_whose_price_rose_past_the_ceiling_is_planned_anew() {
    // `gang` (8 GPUs, at most 1.1 per GPU-hour) reserved a's `n0` last round, at 0.975.
    // This round `y`, ahead in the queue, takes a's `n1`: a's price rises to 1.275, past
    // the gang's ceiling. Kept, the reservation would idle `n0` for a job that cannot pay
    // for it; the gang reserves b's node instead, where it waits for GPUs it can afford.
    let mut a = provider("a", "H100", 80, 2, 8, UNIT);
    a.nodes[0].free.truncate(6);
    let mut b = provider("b", "H100", 80, 1, 8, UNIT / 2);
    b.nodes[0].free.truncate(2);
    let gang = Job {
        max_price: Some(UNIT + UNIT / 10),
        ..job("gang", 8, 1)
    };
    let y = Job {
        priority: 1,
        ..job("y", 8, 1)
    };
    let snap = Snapshot {
        providers: vec![a, b],
        jobs: vec![gang, y],
        reservations: vec![Reservation {
            job: "gang".into(),
            provider: "a".into(),
            nodes: vec!["n0".into()],
        }],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(
        (d.placements[0].job.as_str(), d.placements[0].provider.as_str()),
        ("y", "a")
    );
    assert_eq!(d.reservations.len(), 1, "{:?}", d.reservations);
    assert_eq!(d.reservations[0].job, "gang");
    assert_eq!(d.reservations[0].provider, "b", "{:?}", d.reservations);
}

#[test]
fn a_job_its_spending_cap_keeps_off_a_provider_reserves_none_of_its_nodes() {
    // `cheap` (ask 1.00): both 4-GPU nodes busy. `dear` (ask 3.00): n0 busy, n1 free. The
    // gang of 2 × 4 GPUs may spend 16.00/h: at most 2.00 per GPU-hour, and `dear` sells
    // above that whatever drains. It fits nowhere now, nor under its own ceiling (`dear`
    // has 4 GPUs free): it waits for `cheap`, and must not drain `dear`'s nodes, where it
    // can never start.
    let mut cheap = provider("cheap", "A100", 80, 2, 4, UNIT);
    cheap.nodes.iter_mut().for_each(|n| n.free.clear());
    let mut dear = provider("dear", "A100", 80, 2, 4, 3 * UNIT);
    dear.nodes[0].free.clear();
    let running = [("cheap", "n0"), ("cheap", "n1"), ("dear", "n0")]
        .into_iter()
        .map(|(p, n)| RunningAllocation {
            provider: p.into(),
            ..running_on_a(&format!("{p}-{n}"), "other", n, 0..4, None)
        })
        .collect();
    let snap = Snapshot {
        providers: vec![cheap, dear],
        running,
        jobs: vec![job("gang", 4, 2)],
        quotas: BTreeMap::from([(
            "team".to_owned(),
            Quota {
                spend_per_hour: Some(16 * UNIT),
                ..Quota::default()
            },
        )]),
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert!(d.placements.is_empty(), "{d:?}");
    let why = d.unplaced[0].explanation.to_string();
    assert!(why.contains("1 above max price 2.00"), "{why}");
    assert_eq!(d.reservations.len(), 1, "{:?}", d.reservations);
    assert_eq!(d.reservations[0].provider, "cheap", "{:?}", d.reservations);
}

/// Without reservations small jobs can starve a gang: the property test
/// `properties::no_starvation` is meaningful only because the reservation makes the
/// difference.
#[test]
fn without_reservations_small_jobs_starve_the_gang() {
    let provider = provider("p0", "H100", 80, 1, 4, 2 * UNIT);
    let mut busy_until = [1u64, 2, 3, 4];
    let mut queue = vec![job("big", 4, 1)];
    let cfg = Config {
        max_reservations: 0,
        ..Config::default()
    };
    let mut placed = false;
    for round in 0..40u64 {
        queue.push(Job {
            submit_time: round,
            namespace: "bg".into(),
            ..job(&format!("bg{round}"), 1, 1)
        });
        let mut snap = Snapshot {
            providers: vec![provider.clone()],
            jobs: queue.clone(),
            ..Snapshot::default()
        };
        snap.providers[0].nodes[0].free = (0..4u8)
            .filter(|&g| busy_until[usize::from(g)] <= round)
            .collect();
        let d = place(&snap, &cfg).unwrap();
        for pl in &d.placements {
            placed |= pl.job == "big";
            for &g in &pl.workers[0].gpus {
                busy_until[usize::from(g)] = round + 4;
            }
        }
        queue.retain(|j| !d.placements.iter().any(|p| p.job == j.id));
    }
    assert!(!placed, "expected starvation without reservations");
}
