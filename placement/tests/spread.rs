//! Soft spread: jobs of one group prefer the provider (or region) with the fewest members.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{
    Config, Decisions, GpuRef, Job, Provider, RunningAllocation, Snapshot, Spread, SpreadDomain, place,
};

use common::{UNIT, check, job, provider};

fn run(snap: &Snapshot) -> Decisions {
    let d = place(snap, &Config::default()).unwrap();
    assert_eq!(check(snap, &d), Ok(()));
    assert!(d.unplaced.is_empty(), "{:?}", d.unplaced);
    d
}

/// Jobs placed per provider.
fn per_provider(d: &Decisions) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in &d.placements {
        *m.entry(p.provider.clone()).or_default() += 1;
    }
    m
}

fn in_region(mut p: Provider, region: &str) -> Provider {
    p.region = region.into();
    p
}

/// A one-GPU replica of `group` in `namespace`, submitted at `t`.
fn replica(id: &str, namespace: &str, group: &str, across: SpreadDomain, t: u64) -> Job {
    Job {
        namespace: namespace.into(),
        submit_time: t,
        spread: Some(Spread {
            group: group.into(),
            across,
        }),
        ..job(id, 1, 1)
    }
}

fn replicas(n: usize, across: SpreadDomain) -> Vec<Job> {
    (0..n)
        .map(|i| replica(&format!("svc-{i}"), "team", "svc", across, i as u64))
        .collect()
}

/// A job running on GPU 7 of node n0 of `provider`.
fn running(id: &str, namespace: &str, provider: &str, group: Option<&str>) -> RunningAllocation {
    RunningAllocation {
        job: id.into(),
        namespace: namespace.into(),
        priority: 0,
        start_time: 0,
        provider: provider.into(),
        gpus: vec![GpuRef {
            node: "n0".into(),
            gpu: 7,
        }],
        spread_group: group.map(Into::into),
        evicting: false,
        budget: None,
        resources: Default::default(),
    }
}

/// Two equal providers, big enough that one more busy GPU moves the market price less
/// than best-fit packing gains: without a spread, replicas pile up on one of them.
fn two_equal() -> Vec<Provider> {
    vec![
        provider("a", "H100", 80, 8, 8, UNIT),
        provider("b", "H100", 80, 8, 8, UNIT),
    ]
}

#[test]
fn without_spread_replicas_pack_together() {
    // The control for the tests below: best-fit packing keeps all of them on one provider.
    let mut jobs = replicas(3, SpreadDomain::Provider);
    jobs.iter_mut().for_each(|j| j.spread = None);
    let snap = Snapshot {
        providers: two_equal(),
        jobs,
        ..Snapshot::default()
    };
    assert_eq!(per_provider(&run(&snap)), BTreeMap::from([("a".into(), 3)]));
}

#[test]
fn three_replicas_split_two_and_one_over_two_equal_providers() {
    let snap = Snapshot {
        providers: two_equal(),
        jobs: replicas(3, SpreadDomain::Provider),
        ..Snapshot::default()
    };
    let d = run(&snap);
    assert_eq!(
        per_provider(&d),
        BTreeMap::from([("a".into(), 2), ("b".into(), 1)])
    );
    let order: Vec<&str> = d.placements.iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(order, ["a", "b", "a"], "alternates, ties to the better score");
}

#[test]
fn across_region_spreads_over_regions_not_providers() {
    // a and b in eu (cheap), c in us (dearer): by provider the second replica would
    // take b; by region it takes c.
    let providers = vec![
        in_region(provider("a", "H100", 80, 1, 8, UNIT), "eu"),
        in_region(provider("b", "H100", 80, 1, 8, UNIT), "eu"),
        in_region(provider("c", "H100", 80, 1, 8, 2 * UNIT), "us"),
    ];
    let snap = Snapshot {
        providers: providers.clone(),
        jobs: replicas(2, SpreadDomain::Region),
        ..Snapshot::default()
    };
    assert_eq!(
        per_provider(&run(&snap)),
        BTreeMap::from([("a".into(), 1), ("c".into(), 1)])
    );
    let by_provider = Snapshot {
        providers: providers.clone(),
        jobs: replicas(2, SpreadDomain::Provider),
        ..Snapshot::default()
    };
    assert_eq!(
        per_provider(&run(&by_provider)),
        BTreeMap::from([("a".into(), 1), ("b".into(), 1)])
    );
    // Four replicas: two per region.
    let snap = Snapshot {
        providers,
        jobs: replicas(4, SpreadDomain::Region),
        ..Snapshot::default()
    };
    let d = run(&snap);
    let us = d.placements.iter().filter(|p| p.provider == "c").count();
    assert_eq!(us, 2, "{:?}", per_provider(&d));
}

#[test]
fn a_running_replica_counts() {
    // a is cheaper, so a lone job goes there, unless a member of its group runs on it.
    let providers = vec![
        provider("a", "H100", 80, 1, 8, UNIT),
        provider("b", "H100", 80, 1, 8, 2 * UNIT),
    ];
    let snap = |group: Option<&str>| {
        let mut providers = providers.clone();
        providers[0].nodes[0].free.retain(|&g| g != 7);
        Snapshot {
            providers,
            running: vec![running("team/svc-old", "team", "a", group)],
            jobs: replicas(1, SpreadDomain::Provider),
            ..Snapshot::default()
        }
    };
    assert_eq!(run(&snap(None)).placements[0].provider, "a");
    assert_eq!(run(&snap(Some("other"))).placements[0].provider, "a");
    assert_eq!(run(&snap(Some("svc"))).placements[0].provider, "b");
}

#[test]
fn a_running_replica_counts_against_a_far_better_score() {
    // a packs the replica perfectly (one GPU left) and b asks ten times more: the search
    // would stop before b when only the score counted.
    let mut a = provider("a", "H100", 80, 1, 8, UNIT);
    a.nodes[0].free = vec![0];
    let snap = |group: Option<&str>| Snapshot {
        providers: vec![a.clone(), provider("b", "H100", 80, 1, 8, 10 * UNIT)],
        running: vec![RunningAllocation {
            gpus: (1..8)
                .map(|gpu| GpuRef {
                    node: "n0".into(),
                    gpu,
                })
                .collect(),
            ..running("team/svc-old", "team", "a", group)
        }],
        jobs: replicas(1, SpreadDomain::Provider),
        ..Snapshot::default()
    };
    assert_eq!(run(&snap(None)).placements[0].provider, "a");
    assert_eq!(run(&snap(Some("svc"))).placements[0].provider, "b");
}

#[test]
fn the_only_fitting_provider_takes_every_replica() {
    // b sells a model the replicas do not accept.
    let snap = Snapshot {
        providers: vec![
            provider("a", "H100", 80, 1, 8, UNIT),
            provider("b", "L4", 24, 1, 8, UNIT),
        ],
        jobs: replicas(3, SpreadDomain::Provider)
            .into_iter()
            .map(|j| Job {
                models: vec!["H100".into()],
                ..j
            })
            .collect(),
        ..Snapshot::default()
    };
    assert_eq!(per_provider(&run(&snap)), BTreeMap::from([("a".into(), 3)]));
}

#[test]
fn namespaces_do_not_share_groups() {
    let providers = vec![
        provider("a", "H100", 80, 1, 8, UNIT),
        provider("b", "H100", 80, 1, 8, 2 * UNIT),
    ];
    // Same group name in two namespaces: each is alone in its group, both take a.
    let snap = Snapshot {
        providers: providers.clone(),
        jobs: vec![
            replica("x", "team", "svc", SpreadDomain::Provider, 0),
            replica("y", "other", "svc", SpreadDomain::Provider, 1),
        ],
        ..Snapshot::default()
    };
    assert_eq!(per_provider(&run(&snap)), BTreeMap::from([("a".into(), 2)]));
    // A running member of the same group name in another namespace does not count.
    let mut providers_busy = providers.clone();
    providers_busy[0].nodes[0].free.retain(|&g| g != 7);
    let snap = Snapshot {
        providers: providers_busy,
        running: vec![running("other/svc-old", "other", "a", Some("svc"))],
        jobs: replicas(1, SpreadDomain::Provider),
        ..Snapshot::default()
    };
    assert_eq!(run(&snap).placements[0].provider, "a");
    // The control: the same two jobs in one namespace split.
    let snap = Snapshot {
        providers,
        jobs: vec![
            replica("x", "team", "svc", SpreadDomain::Provider, 0),
            replica("y", "team", "svc", SpreadDomain::Provider, 1),
        ],
        ..Snapshot::default()
    };
    assert_eq!(
        per_provider(&run(&snap)),
        BTreeMap::from([("a".into(), 1), ("b".into(), 1)])
    );
}

#[test]
fn spread_comes_before_the_preferred_order_which_breaks_ties() {
    let providers = vec![
        provider("a", "H100", 80, 1, 8, UNIT),
        provider("b", "H100", 80, 1, 8, UNIT),
        provider("c", "H100", 80, 1, 8, UNIT),
    ];
    let jobs = replicas(4, SpreadDomain::Provider)
        .into_iter()
        .map(|j| Job {
            preferred: vec!["c".into(), "b".into()],
            ..j
        })
        .collect();
    let d = run(&Snapshot {
        providers,
        jobs,
        ..Snapshot::default()
    });
    let order: Vec<&str> = d.placements.iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(order, ["c", "b", "a", "c"]);
}
