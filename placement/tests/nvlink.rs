//! Gang-wide NVLink: a domain is one provider's fabric for one model, whatever else sets
//! its nodes apart (verification, labels, extended resources): a gang that may use each
//! of its nodes may span them all.
#![allow(clippy::unwrap_used)]

mod common;

use gpufed_placement::baseline::{Naive, naive_place};
use gpufed_placement::{
    Config, EXTENDED_SLOTS, Explanation, Interconnect, Job, NodeResources, Provider, Reason, Resources,
    Snapshot, place,
};

use common::{UNIT, check, job, provider, running_on_a};

/// Provider `a`: two 4-GPU H100 nodes in NVLink domain 0, `n1` unverified.
fn one_domain() -> Provider {
    let mut p = provider("a", "H100", 80, 2, 4, UNIT);
    for n in &mut p.nodes {
        n.nvlink_domain = Some(0);
    }
    p.nodes[1].verified = false;
    p
}

/// 2 workers of 4 GPUs sharing one NVLink domain.
fn gang() -> Job {
    Job {
        interconnect: Interconnect::NvlinkGang,
        ..job("gang", 4, 2)
    }
}

fn nodes_of(d: &gpufed_placement::Decisions) -> Vec<&str> {
    let mut nodes: Vec<&str> = d.placements[0].workers.iter().map(|w| w.node.as_str()).collect();
    nodes.sort_unstable();
    nodes
}

#[test]
fn a_gang_spans_a_domain_whose_nodes_sit_in_different_pools() {
    // `n1` unverified sits in another pool than `n0`; the job does not ask for verified
    // GPUs, so the domain's 8 GPUs are all its own. Before, each pool had its own piece
    // of the domain (4 GPUs) and the gang never fit, though node by node it does.
    let snap = Snapshot {
        providers: vec![one_domain()],
        jobs: vec![gang()],
        ..Snapshot::default()
    };
    let naive = naive_place(&snap, Naive::FirstFit, &Config::default().market);
    assert_eq!(naive.placements.len(), 1, "the reference places it: {naive:?}");
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(nodes_of(&d), ["n0", "n1"]);

    // Nodes that differ in an extended resource (RDMA on one only) likewise.
    let mut p = provider("a", "H100", 80, 2, 4, UNIT);
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.nvlink_domain = Some(0);
        let mut extended = [0; EXTENDED_SLOTS];
        extended[0] = if i == 0 { 2 } else { 0 };
        let allocatable = Resources {
            extended,
            ..Resources::cpu_memory(64_000, 512 * 1024)
        };
        n.resources = Some(NodeResources {
            allocatable,
            free: allocatable,
        });
    }
    let snap = Snapshot {
        providers: vec![p],
        jobs: vec![gang()],
        extended_resources: vec!["rdma/hca".into()],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(nodes_of(&d), ["n0", "n1"]);
}

#[test]
fn a_gang_counts_only_the_domains_nodes_it_may_use() {
    // Verified GPUs only: `n1` is not for it, and 4 GPUs of the domain are too few.
    let snap = Snapshot {
        providers: vec![one_domain()],
        jobs: vec![Job {
            verified_only: true,
            ..gang()
        }],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty(), "{d:?}");
    assert_eq!(
        d.unplaced[0].explanation.primary(),
        Some(&Reason::NvlinkDomainTooSmall { gpus: 8 })
    );
    assert!(d.reservations.is_empty(), "nothing to wait for");
}

/// `one_domain` with both nodes busy with low-priority work of the job's namespace.
fn busy() -> Snapshot {
    let mut p = one_domain();
    for n in &mut p.nodes {
        n.free.clear();
    }
    Snapshot {
        providers: vec![p],
        running: vec![
            running_on_a("low-0", "team", "n0", 0..4, None),
            running_on_a("low-1", "team", "n1", 0..4, None),
        ],
        jobs: vec![gang()],
        ..Snapshot::default()
    }
}

#[test]
fn a_busy_domain_across_pools_is_waited_for_and_reserved_whole() {
    let snap = busy();
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty(), "{d:?}");
    match &d.unplaced[0].explanation {
        Explanation::NoFit { reasons, .. } => {
            assert_eq!(reasons, &vec![(Reason::Busy { gpus: 8 }, 1)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.reservations.len(), 1, "{:?}", d.reservations);
    let mut held = d.reservations[0].nodes.clone();
    held.sort();
    assert_eq!(held, ["n0", "n1"]);
}

#[test]
fn a_gang_evicts_across_the_pools_of_its_domain() {
    let mut snap = busy();
    snap.jobs[0].priority = 5;
    snap.jobs[0].preempt = true;
    let cfg = Config {
        preemption: true,
        ..Config::default()
    };
    let d = place(&snap, &cfg).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(common::check_evictions(&snap, &d, &cfg), Ok(()));
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(d.evictions.len(), 2, "{d:?}");
    assert_eq!(nodes_of(&d), ["n0", "n1"]);
}

mod reference {
    use super::*;
    use proptest::prelude::*;

    /// One node: NVLink domain (none sometimes), verified, labelled, its RDMA devices
    /// (`None`: reports no resources), GPUs, free GPUs (bits).
    type NodeSpec = (Option<u32>, bool, bool, Option<u64>, u8, u8);

    fn arb_node() -> impl Strategy<Value = NodeSpec> {
        (
            prop::option::weighted(0.85, 0..2u32),
            prop::bool::weighted(0.7),
            any::<bool>(),
            prop::option::of(0..3u64),
            prop::sample::select(vec![2u8, 4, 8]),
            any::<u8>(),
        )
    }

    fn fleet(nodes: &[NodeSpec]) -> Provider {
        let mut p = provider("a", "H100", 80, 0, 1, UNIT);
        for (i, &(domain, verified, label, rdma, gpus, free)) in nodes.iter().enumerate() {
            let mut n = gpufed_placement::Node::new(
                format!("n{i}"),
                "H100",
                80 * common::GIB,
                gpufed_placement::ComputeCapability::new(9, 0),
                domain,
                gpus,
            );
            n.free = (0..gpus).filter(|g| free & (1 << g) != 0).collect();
            n.verified = verified;
            if label {
                n.labels.insert("net".into(), "ib".into());
            }
            n.resources = rdma.map(|k| {
                let mut extended = [0; EXTENDED_SLOTS];
                extended[0] = k;
                let allocatable = Resources {
                    extended,
                    ..Resources::cpu_memory(256_000, 1 << 21)
                };
                NodeResources {
                    allocatable,
                    free: allocatable,
                }
            });
            p.nodes.push(n);
        }
        p
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Alone on a fleet without running work, a gang-wide NVLink job is placed exactly
        /// when the reference, checking node by node, places it: however verification,
        /// labels and extended resources split a domain's nodes into pools.
        #[test]
        fn a_lone_gang_fits_where_the_reference_fits_it(
            nodes in prop::collection::vec(arb_node(), 1..7),
            g in prop::sample::select(vec![1u8, 2, 4]),
            w in 1..5u16,
            verified_only in any::<bool>(),
            selector in any::<bool>(),
            rdma in any::<bool>(),
        ) {
            let mut j = Job { verified_only, ..gang() };
            j.gpus_per_worker = g;
            j.workers = w;
            if selector {
                j.node_selector.insert("net".into(), "ib".into());
            }
            j.worker_resources.extended[0] = u64::from(rdma);
            let snap = Snapshot {
                providers: vec![fleet(&nodes)],
                jobs: vec![j],
                extended_resources: vec!["rdma/hca".into()],
                ..Snapshot::default()
            };
            let d = place(&snap, &Config::default()).unwrap();
            prop_assert_eq!(check(&snap, &d), Ok(()));
            let naive = naive_place(&snap, Naive::FirstFit, &Config::default().market);
            prop_assert_eq!(d.placements.len(), naive.placements.len(), "{:?} vs {:?}", d, naive);
        }
    }
}
