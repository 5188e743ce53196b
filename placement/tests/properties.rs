//! Property tests: the hard rules hold for any snapshot, and no job starves.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{
    ComputeCapability, Config, EXTENDED_SLOTS, GpuRef, Interconnect, Job, LabelOp, LabelRequirement, Node,
    NodeResources, Provider, Quota, Resources, RunningAllocation, Snapshot, Spread, SpreadDomain, place,
};
use proptest::prelude::*;

use common::{GIB, UNIT, check};

const MODELS: [&str; 3] = ["A100", "H100", "L4"];

fn arb_node(i: usize) -> impl Strategy<Value = (Node, Vec<(u8, i32)>)> {
    (
        0..3usize,
        prop::sample::select(vec![1u8, 2, 4, 8]),
        prop::sample::select(vec![24u32, 40, 80]),
        prop::option::of(0..3u32),
        any::<u64>(),
        0..3i32,
        prop::bool::weighted(0.85),
    )
        .prop_map(move |(m, gpus, vram, dom, free_bits, prio, verified)| {
            let mut node = Node::new(
                format!("n{i:02}"),
                MODELS[m],
                vram * GIB,
                ComputeCapability::new(7 + m as u8, 0),
                dom,
                gpus,
            );
            node.free = (0..gpus).filter(|g| free_bits & (1 << g) != 0).collect();
            node.verified = verified;
            // Every third node on fast disks, for the jobs that select them.
            if i.is_multiple_of(3) {
                node.labels.insert("disk".into(), "nvme".into());
            }
            // Every other node a generation, for the jobs with node affinity.
            if i.is_multiple_of(2) {
                node.labels.insert("gen".into(), (i % 5).to_string());
            }
            let busy: Vec<(u8, i32)> = (0..gpus)
                .filter(|g| free_bits & (1 << g) == 0)
                .map(|g| (g, prio))
                .collect();
            // Three nodes in four report CPU and memory: 8 cores and 64 GiB a GPU, less
            // what its running work holds (`held`) and, on some, a foreign pod's 4 cores;
            // every other one 300 GiB of local storage (the rest: no limit); every third
            // one 2 RDMA devices (slot 0; the others none).
            if !i.is_multiple_of(4) {
                let mut extended = [0; EXTENDED_SLOTS];
                extended[0] = if i.is_multiple_of(3) { 2 } else { 0 };
                let allocatable = Resources {
                    ephemeral_mib: if i % 2 == 1 { 300 * 1024 } else { u64::MAX },
                    extended,
                    ..Resources::cpu_memory(u64::from(gpus) * 8000, u64::from(gpus) * 65536)
                };
                let foreign = Resources::cpu_memory(if i % 4 == 2 { 4000 } else { 0 }, 0);
                let free = allocatable.minus(&held(busy.len())).minus(&foreign);
                node.resources = Some(NodeResources { allocatable, free });
            }
            (node, busy)
        })
}

/// CPU and memory running work holds beside `busy` GPUs on a node.
fn held(busy: usize) -> Resources {
    Resources::cpu_memory(6000, 32_768).times(u32::try_from(busy).unwrap())
}

fn arb_provider(i: usize) -> impl Strategy<Value = (Provider, Vec<RunningAllocation>)> {
    (
        prop::collection::vec(0..8usize, 1..6).prop_flat_map(|ix| {
            ix.into_iter()
                .enumerate()
                .map(|(k, _)| arb_node(k))
                .collect::<Vec<_>>()
        }),
        any::<bool>(),
        prop::bool::weighted(0.85),
        0..=10u32,
        prop::collection::vec(1..5u64, 3),
        prop::sample::select(vec!["eu", "us"]),
        // Now and then a tenant policy: the checker holds placements to it.
        prop::option::weighted(0.3, prop::sample::subsequence(vec!["ns0", "ns1", "ns2"], 0..=2)),
    )
        .prop_map(move |(nodes, verified, healthy, rep, asks, region, tenants)| {
            let id = format!("p{i}");
            let prices = MODELS
                .iter()
                .zip(asks)
                .map(|(m, a)| (m.to_string(), a * UNIT))
                .collect::<BTreeMap<_, _>>();
            let mut running = Vec::new();
            let mut ns = Vec::new();
            for (k, (n, busy)) in nodes.iter().enumerate() {
                ns.push(n.clone());
                if !busy.is_empty() {
                    running.push(RunningAllocation {
                        job: format!("run-{id}-{}", n.name),
                        // Tenants of the queued jobs too, and one that queues nothing.
                        namespace: if k % 4 == 3 {
                            "old".into()
                        } else {
                            format!("ns{}", k % 3)
                        },
                        priority: busy[0].1,
                        start_time: 0,
                        provider: id.clone(),
                        gpus: busy
                            .iter()
                            .map(|&(g, _)| GpuRef {
                                node: n.name.clone(),
                                gpu: g,
                            })
                            .collect(),
                        spread_group: None,
                        evicting: (i + k) % 5 == 4,
                        // Replicas of two protected services, and unprotected work.
                        budget: match (i + k) % 3 {
                            0 => Some("svc-a".into()),
                            1 => Some("svc-b".into()),
                            _ => None,
                        },
                        resources: n
                            .resources
                            .map(|_| BTreeMap::from([(n.name.clone(), held(busy.len()))]))
                            .unwrap_or_default(),
                    });
                }
            }
            let p = Provider {
                id,
                region: region.into(),
                healthy,
                verified,
                reputation: f64::from(rep) / 10.0,
                prices,
                nodes: ns,
                tenants: tenants.map(|t| t.into_iter().map(String::from).collect()),
            };
            (p, running)
        })
}

fn arb_job(i: usize) -> impl Strategy<Value = Job> {
    (
        prop::sample::select(vec![1u8, 1, 1, 2, 4, 8]),
        prop::sample::select(vec![1u16, 1, 1, 2, 3]),
        prop::sample::subsequence(MODELS.to_vec(), 0..=2),
        prop::sample::select(vec![0u32, 40, 80]),
        prop::sample::select(vec![
            Interconnect::Any,
            Interconnect::Any,
            Interconnect::NvlinkWorker,
            Interconnect::NvlinkGang,
        ]),
        prop::option::of(1..7u64),
        (
            0..4i32,
            0..3usize,
            any::<bool>(),
            0..=10u32,
            prop::option::of(0..4usize),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            move |(g, w, models, vram, ic, max, (prio, ns, verified_only, rep, only, eu, preempt))| Job {
                id: format!("j{i:03}"),
                namespace: format!("ns{ns}"),
                priority: prio,
                submit_time: (i % 7) as u64,
                gpus_per_worker: g,
                workers: w,
                models: models.into_iter().map(String::from).collect(),
                min_vram_mib: vram * GIB,
                min_compute: ComputeCapability::new(7 + (i % 3) as u8, 0),
                interconnect: ic,
                max_price: max.map(|m| m * UNIT),
                regions: if eu { vec!["eu".into()] } else { vec![] },
                providers: only.map(|p| vec![format!("p{p}")]).unwrap_or_default(),
                // Kept off one provider now and then; the checker holds it to that.
                avoid: if i % 5 == 1 {
                    vec![format!("p{}", i % 4)]
                } else {
                    Vec::new()
                },
                preferred: vec![format!("p{}", i % 4)],
                min_reputation: f64::from(rep) / 20.0,
                verified_only,
                // Now and then a node selector; the checker holds every worker to it.
                node_selector: if i % 6 == 3 {
                    std::collections::BTreeMap::from([("disk".into(), "nvme".into())])
                } else {
                    std::collections::BTreeMap::new()
                },
                // Now and then a node affinity (two terms, ORed): the checker holds every
                // worker to it.
                node_affinity: if i % 6 == 5 {
                    vec![
                        vec![LabelRequirement {
                            key: "gen".into(),
                            op: LabelOp::Gt(1),
                        }],
                        vec![
                            LabelRequirement {
                                key: "disk".into(),
                                op: LabelOp::In(vec!["nvme".into()]),
                            },
                            LabelRequirement {
                                key: "gen".into(),
                                op: LabelOp::DoesNotExist,
                            },
                        ],
                    ]
                } else {
                    Vec::new()
                },
                // Some gangs keep their workers apart: one, or two, per node at most.
                max_workers_per_node: match i % 8 {
                    1 | 4 => 1,
                    6 => 2,
                    _ => 0,
                },
                // Spread groups must never break a hard rule nor determinism.
                spread: (i % 3 != 2).then(|| Spread {
                    group: format!("svc{}", i % 2),
                    across: if i.is_multiple_of(4) {
                        SpreadDomain::Region
                    } else {
                        SpreadDomain::Provider
                    },
                }),
                preempt,
                // Per worker: nothing, a little, a lot of CPU and memory, or much CPU;
                // now and then 100 GiB of local storage, or an RDMA device.
                worker_resources: {
                    let (cpu_millis, memory_mib) =
                        [(0, 0), (4000, 0), (12_000, 65_536), (30_000, 16_384)][i % 4];
                    let mut extended = [0; EXTENDED_SLOTS];
                    extended[0] = u64::from(i % 7 == 3);
                    Resources {
                        cpu_millis,
                        memory_mib,
                        ephemeral_mib: if i % 5 == 2 { 100 * 1024 } else { 0 },
                        extended,
                    }
                },
            },
        )
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (1..5usize, 0..25usize)
        .prop_flat_map(|(np, nj)| {
            (
                (0..np).map(arb_provider).collect::<Vec<_>>(),
                (0..nj).map(arb_job).collect::<Vec<_>>(),
                (0..5u32, 0..5u32),
                // Now and then a namespace's quota: a GPU cap near what it holds (slack
                // 0..12 less 3), and a spending cap; the checkers hold placements to them.
                prop::collection::vec(
                    prop::option::weighted(0.4, (0..12u32, prop::option::of(1..40u64))),
                    3,
                ),
            )
        })
        .prop_map(|(ps, jobs, (min_a, min_b), quotas)| {
            let mut snap = Snapshot {
                jobs,
                // svc-b's minimum may be above its healthy count: nothing of it is evictable.
                budgets: BTreeMap::from([("svc-a".into(), min_a), ("svc-b".into(), min_b)]),
                ..Snapshot::default()
            };
            for (p, r) in ps {
                snap.providers.push(p);
                snap.running.extend(r);
            }
            for (k, q) in quotas.into_iter().enumerate() {
                let Some((slack, spend)) = q else { continue };
                let ns = format!("ns{k}");
                let held = snap
                    .running
                    .iter()
                    .filter(|r| r.namespace == ns)
                    .map(|r| r.gpus.len());
                let used_gpus = u32::try_from(held.sum::<usize>()).unwrap();
                let quota = Quota {
                    gpus: Some((used_gpus + slack).saturating_sub(3)),
                    spend_per_hour: spend.map(|s| s * UNIT),
                    used_gpus,
                    used_spend_per_hour: u64::from(used_gpus) * UNIT,
                };
                snap.quotas.insert(ns, quota);
            }
            snap
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// No GPU twice, no gang split, price ≤ ceiling, every hard constraint honoured,
    /// no namespace past its quota, every job answered exactly once.
    #[test]
    fn hard_rules_hold(snap in arb_snapshot(), preemption in any::<bool>(), across in any::<bool>()) {
        let cfg = Config { preemption, preempt_across_namespaces: across, ..Config::default() };
        let d = place(&snap, &cfg).unwrap();
        prop_assert_eq!(check(&snap, &d), Ok(()));
        prop_assert_eq!(common::check_evictions(&snap, &d, &cfg), Ok(()));
        prop_assert_eq!(common::check_quotas(&snap, &d), Ok(()));
    }

    /// Same snapshot, in any provider and job order → same decisions.
    #[test]
    fn deterministic(snap in arb_snapshot(), across in any::<bool>()) {
        let cfg = Config { preemption: true, preempt_across_namespaces: across, ..Config::default() };
        let a = place(&snap, &cfg).unwrap();
        let mut shuffled = snap.clone();
        shuffled.providers.reverse();
        shuffled.jobs.reverse();
        // Running work in another order too (the operator lists it in its cache's order).
        shuffled.running.reverse();
        let b = place(&shuffled, &cfg).unwrap();
        prop_assert_eq!(a, b);
    }

    /// A job that would be placed alone on the empty fleet is placed within a bounded
    /// number of rounds, while other namespaces keep the fleet saturated.
    #[test]
    fn no_starvation(
        nodes in 2..6u8,
        gpus in prop::sample::select(vec![2u8, 4, 8]),
        arrivals in prop::collection::vec((1..3u8, 1..6u64, 0..3usize), 120),
        target_workers in 1..4u16,
    ) {
        let mut provider = common::provider("p0", "H100", 80, nodes, gpus, 2 * UNIT);
        provider.nodes.iter_mut().for_each(|n| n.free.clear());
        let target = Job { submit_time: 0, ..common::job("big", gpus, target_workers.min(u16::from(nodes))) };
        // busy until: (node, gpu) → round it frees; everything starts busy for 1..3 rounds.
        let mut busy: BTreeMap<(usize, u8), u64> = BTreeMap::new();
        for (n, node) in provider.nodes.iter().enumerate() {
            for g in 0..node.gpus {
                busy.insert((n, g), 1 + (g as u64 % 3));
            }
        }
        let mut queue = vec![target];
        let mut reservations = Vec::new();
        let mut placed_at = None;
        for round in 0..120u64 {
            let (g, dur, ns) = arrivals[round as usize];
            queue.push(Job {
                submit_time: round,
                namespace: format!("bg{ns}"),
                ..common::job(&format!("bg{round}"), g.min(gpus), 1)
            });
            busy.retain(|_, &mut until| until > round);
            let mut snap = Snapshot { providers: vec![provider.clone()], jobs: queue.clone(), reservations, ..Snapshot::default() };
            for (n, node) in snap.providers[0].nodes.iter_mut().enumerate() {
                node.free = (0..node.gpus).filter(|g| !busy.contains_key(&(n, *g))).collect();
            }
            let d = place(&snap, &Config::default()).unwrap();
            prop_assert_eq!(check(&snap, &d), Ok(()));
            for pl in &d.placements {
                let until = if pl.job == "big" { round + 3 } else { round + dur };
                for w in &pl.workers {
                    let n = snap.providers[0].nodes.iter().position(|x| x.name == w.node).unwrap();
                    for &g in &w.gpus {
                        busy.insert((n, g), until);
                    }
                }
                if pl.job == "big" && placed_at.is_none() {
                    placed_at = Some(round);
                }
            }
            queue.retain(|j| !d.placements.iter().any(|p| p.job == j.id));
            reservations = d.reservations;
            if placed_at.is_some() {
                break;
            }
        }
        prop_assert!(placed_at.is_some_and(|r| r < 60), "big gang starved: {placed_at:?}");
    }
}
