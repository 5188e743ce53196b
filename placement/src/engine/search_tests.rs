//! The victims' search against a straightforward reference, on random fleets.
//!
//! [`Engine::find_victims`] takes shortcuts: allocations sorted once a round per provider
//! and namespace, groups taken by a lower bound on the GPUs to evict and the search
//! stopped once that bound reaches the best found, and a fit kept up to date victim by
//! victim ([`super::probe`]). The reference here takes none: every group in model order,
//! every allocation filtered and sorted for each, every fit counted from scratch over the
//! group's nodes ([`Engine::fits_with`]), every drop tested by rebuilding what the rest
//! free. Both must answer the same in every state a round passes through.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::Engine;
use super::preempt::Extra;
use crate::decision::Config;
use crate::quantities::{NodeResources, Resources};
use crate::snapshot::{
    ComputeCapability, GpuRef, Interconnect, Job, Node, Provider, Quota, Reservation, RunningAllocation,
    Snapshot,
};
use crate::synth::Rng;

const UNIT: u64 = 1_000_000;

/// The best eviction (GPUs freed, group, victims), or else the providers where only
/// budgets stood in the way (and whose).
type Answer = (Option<(u32, u32, Vec<usize>)>, BTreeMap<u32, String>);

/// The groups job `h` may preempt on, in model order: its models, providers and price.
fn groups(e: &Engine, h: u32) -> Vec<u32> {
    let js = &e.jobs[h as usize];
    let by_model = js
        .models
        .iter()
        .flat_map(|&m| &e.fleet.groups_by_model[usize::from(m)]);
    by_model
        .copied()
        .filter(|&gi| {
            let group = &e.fleet.groups[gi as usize];
            group.price.is_some_and(|price| price <= js.max_price)
                && js.provider_ok(&e.fleet.providers[group.provider as usize], group.provider)
        })
        .collect()
}

/// What job `h` may evict on `provider`, budgets aside, filtered from every allocation
/// (not from the engine's per-provider lists, which the search uses), in snapshot order.
fn candidates(e: &Engine, h: u32, provider: u32) -> Vec<usize> {
    let priority = e.snap.jobs[e.jobs[h as usize].src as usize].priority;
    let ns = e.job_ns[h as usize];
    (0..e.allocs.len())
        .filter(|&a| {
            let al = &e.allocs[a];
            !al.evicted
                && al.provider == provider
                && al.priority < priority
                && (e.cfg.preempt_across_namespaces || al.ns == ns)
        })
        .collect()
}

/// The search as first written: no bound, no order kept across groups or preemptors.
fn reference(e: &Engine, h: u32) -> Answer {
    let mut best: Option<(u32, u32, Vec<usize>)> = None;
    let mut held_back = Vec::new();
    for gi in groups(e, h) {
        if let Some((freed, kept)) = reference_in(e, h, gi, &mut held_back)
            && best.as_ref().is_none_or(|b| (freed, gi) < (b.0, b.1))
        {
            best = Some((freed, gi, kept));
        }
    }
    let protected = if best.is_some() {
        BTreeMap::new()
    } else {
        protected_room(e, h, &held_back)
    };
    (best, protected)
}

/// The victims job `h` needs on group `gi` and the GPUs they free, the long way; what a
/// budget held back goes to `held_back` unless the job fits without it.
fn reference_in(e: &Engine, h: u32, gi: u32, held_back: &mut Vec<(u32, usize)>) -> Option<(u32, Vec<usize>)> {
    let mut victims = candidates(e, h, e.fleet.groups[gi as usize].provider);
    victims.sort_by_key(|&a| e.victim_order(a));
    let (mut extra, mut chosen) = (Extra::new(), Vec::new());
    let mut spent: BTreeMap<u32, u32> = BTreeMap::new();
    for v in victims {
        if let Some(b) = e.allocs[v].budget {
            let used = spent.entry(b).or_default();
            if !e.budgets[b as usize].allows(*used + 1) {
                held_back.push((gi, v));
                continue;
            }
            *used += 1;
        }
        chosen.push(v);
        e.add_extra(v, &mut extra);
        if e.fits_with(h, gi, &extra) {
            held_back.retain(|&(g, _)| g != gi);
            return Some(fewest(e, h, gi, chosen));
        }
    }
    None
}

/// The providers where what a budget held back would have made room, with the budgets'
/// keys: [`Engine::protected_room`] as first written, over [`candidates`].
fn protected_room(e: &Engine, h: u32, held_back: &[(u32, usize)]) -> BTreeMap<u32, String> {
    let mut out: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for &(gi, v) in held_back {
        let provider = e.fleet.groups[gi as usize].provider;
        let mut extra = Extra::new();
        for a in candidates(e, h, provider) {
            e.add_extra(a, &mut extra);
        }
        if e.fits_with(h, gi, &extra) {
            let key = e.allocs[v].budget.map(|b| e.budgets[b as usize].key);
            out.entry(provider).or_default().extend(key);
        }
    }
    out.into_iter()
        .map(|(p, keys)| (p, keys.into_iter().collect::<Vec<_>>().join(", ")))
        .collect()
}

/// Drops each victim the job can do without, the last added first, rebuilding what the
/// others free for each.
fn fewest(e: &Engine, h: u32, gi: u32, mut chosen: Vec<usize>) -> (u32, Vec<usize>) {
    for i in (0..chosen.len()).rev() {
        let mut extra = Extra::new();
        for (_, &v) in chosen.iter().enumerate().filter(|&(j, _)| j != i) {
            e.add_extra(v, &mut extra);
        }
        if e.fits_with(h, gi, &extra) {
            chosen.remove(i);
        }
    }
    let mut extra = Extra::new();
    let freed = chosen.iter().map(|&v| e.add_extra(v, &mut extra)).sum();
    (freed, chosen)
}

fn optimized(e: &Engine, h: u32) -> Answer {
    let found = e.find_victims(h);
    // What a budget held back matters only when nothing fits (as in `try_preempt`): the
    // search stops early otherwise, and skips groups where nothing would fit.
    let protected = if found.best.is_some() {
        BTreeMap::new()
    } else {
        e.protected_room(h, &found.held_back)
    };
    (found.best, protected)
}

/// A random snapshot: up to three providers of one or two models, nodes with NVLink
/// domains shared by pairs, labels that split pools, CPU and memory on most; running
/// work of mixed priority and namespace, some over two nodes (of two models, too), some
/// holding CPU and memory where it holds no GPU, some being evicted, some counting toward
/// a budget, with equal start times and now and then equal job ids (the order's ties);
/// now and then nodes reserved for a queued job; a queue of jobs of every interconnect,
/// most of which may preempt; now and then a quota.
fn snapshot(seed: u64) -> Snapshot {
    let mut r = Rng::new(seed);
    let mut snap = Snapshot::default();
    let models = ["A", "B"];
    let pick = |r: &mut Rng, xs: &[u64]| xs[usize::try_from(r.below(xs.len() as u64)).unwrap()];
    for p in 0..1 + r.below(3) {
        let kinds: Vec<&str> = if r.below(2) == 0 {
            vec!["A"]
        } else {
            models.to_vec()
        };
        let mut nodes = Vec::new();
        for n in 0..1 + r.below(6) {
            let gpus = u8::try_from(pick(&mut r, &[1, 2, 4, 8, 8])).unwrap();
            let model = kinds[usize::try_from(n).unwrap() % kinds.len()];
            let domain = (model == "A").then(|| u32::try_from(n / 2).unwrap());
            let mut node = Node::new(
                format!("n{n}"),
                model,
                81_920,
                ComputeCapability::new(8, 0),
                domain,
                gpus,
            );
            if n % 2 == 1 {
                node.labels.insert("disk".into(), "nvme".into());
            }
            if r.below(4) != 0 {
                let all = Resources::cpu_memory(u64::from(gpus) * 8000, u64::from(gpus) * 65_536);
                node.resources = Some(NodeResources {
                    allocatable: all,
                    free: all,
                });
            }
            node.free.clear();
            nodes.push(node);
        }
        let id = format!("p{p}");
        let mut running: Vec<RunningAllocation> = Vec::new();
        for node in &mut nodes {
            let mut g = 0u8;
            while g < node.gpus {
                if r.below(4) == 0 {
                    node.free.push(g);
                    g += 1;
                    continue;
                }
                let take = u8::try_from(1 + r.below(4)).unwrap().min(node.gpus - g);
                let k = snap.running.len() + running.len();
                let per_gpu = Resources::cpu_memory(2000, 8192);
                let held = per_gpu.times(u32::from(take));
                let mut resources = BTreeMap::new();
                if let Some(res) = &mut node.resources {
                    res.free = res.free.minus(&held);
                    resources.insert(node.name.clone(), held);
                }
                running.push(RunningAllocation {
                    job: if r.below(5) == 0 {
                        format!("r{}", r.below(u64::try_from(k).unwrap() + 1))
                    } else {
                        format!("r{k}")
                    },
                    namespace: format!("ns{}", r.below(3)),
                    priority: i32::try_from(r.below(3)).unwrap(),
                    start_time: r.below(3),
                    provider: id.clone(),
                    gpus: (g..g + take)
                        .map(|gpu| GpuRef {
                            node: node.name.clone(),
                            gpu,
                        })
                        .collect(),
                    evicting: r.below(6) == 0,
                    budget: match r.below(4) {
                        0 => Some("b0".into()),
                        1 => Some("b1".into()),
                        _ => None,
                    },
                    resources,
                    ..RunningAllocation::default()
                });
                g += take;
            }
        }
        // Some work spans two nodes: merge an allocation into the one before it.
        let mut i = 1;
        while i < running.len() {
            if r.below(4) == 0 {
                let b = running.remove(i);
                let a = &mut running[i - 1];
                a.gpus.extend(b.gpus);
                for (n, res) in b.resources {
                    let e = a.resources.entry(n).or_default();
                    *e = e.plus(&res);
                }
            } else {
                i += 1;
            }
        }
        // Some work holds CPU and memory on a node where it holds no GPU (a launcher, a
        // parameter server): evicting it frees only those, maybe what a worker needs.
        for a in &mut running {
            let k = usize::try_from(r.below(nodes.len() as u64)).unwrap();
            let node = &mut nodes[k];
            let Some(res) = node.resources.as_mut().filter(|_| r.below(3) == 0) else {
                continue;
            };
            if a.gpus.iter().all(|g| g.node != node.name) {
                let take = res.free.per(1 + r.below(2));
                res.free = res.free.minus(&take);
                let e = a.resources.entry(node.name.clone()).or_default();
                *e = e.plus(&take);
            }
        }
        if r.below(4) == 0 && !nodes.is_empty() {
            let n = &nodes[usize::try_from(r.below(nodes.len() as u64)).unwrap()];
            snap.reservations.push(Reservation {
                job: format!("j{}", r.below(8)),
                provider: id.clone(),
                nodes: vec![n.name.clone()],
            });
        }
        let prices = models
            .iter()
            .map(|m| (m.to_string(), (1 + r.below(4)) * UNIT))
            .collect();
        snap.providers.push(Provider {
            id,
            region: "eu".into(),
            healthy: true,
            verified: true,
            reputation: 0.9,
            prices,
            nodes,
            tenants: None,
        });
        snap.running.extend(running);
    }
    snap.budgets = BTreeMap::from([
        ("b0".into(), 1 + u32::try_from(r.below(3)).unwrap()),
        ("b1".into(), 0),
    ]);
    for j in 0..1 + r.below(12) {
        let g = u8::try_from(pick(&mut r, &[1, 1, 2, 4, 8])).unwrap();
        let w = u16::try_from(pick(&mut r, &[1, 1, 2, 3])).unwrap();
        snap.jobs.push(Job {
            id: format!("j{j}"),
            namespace: format!("ns{}", r.below(3)),
            priority: i32::try_from(r.below(4)).unwrap(),
            submit_time: j,
            gpus_per_worker: g,
            workers: w,
            models: match r.below(3) {
                0 => vec!["A".into()],
                1 => vec!["B".into()],
                _ => Vec::new(),
            },
            interconnect: match r.below(4) {
                0 => Interconnect::NvlinkWorker,
                1 => Interconnect::NvlinkGang,
                _ => Interconnect::Any,
            },
            max_price: (r.below(3) == 0).then(|| (1 + r.below(4)) * UNIT),
            node_selector: if r.below(5) == 0 {
                BTreeMap::from([("disk".into(), "nvme".into())])
            } else {
                BTreeMap::new()
            },
            max_workers_per_node: if r.below(5) == 0 { 1 } else { 0 },
            worker_resources: if r.below(3) == 0 {
                Resources::cpu_memory(u64::from(g) * 6000, 16_384)
            } else {
                Resources::default()
            },
            preempt: r.below(5) != 0,
            ..Job::default()
        });
    }
    // Now and then a namespace's GPU cap near what it holds: quota preemption probes
    // evictions and undoes them, and the search must see the fleet as it was.
    for ns in 0..3 {
        if r.below(3) == 0 {
            let ns = format!("ns{ns}");
            let held = snap
                .running
                .iter()
                .filter(|a| a.namespace == ns)
                .map(|a| a.gpus.len());
            let used = u32::try_from(held.sum::<usize>()).unwrap();
            let cap = (used + u32::try_from(r.below(6)).unwrap()).saturating_sub(3);
            snap.quotas.insert(
                ns,
                Quota {
                    gpus: Some(cap),
                    spend_per_hour: None,
                    used_gpus: used,
                    used_spend_per_hour: 0,
                },
            );
        }
    }
    snap
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Before every step of a round, for every job: the same victims as the reference,
    /// and its namespace's allocations in the order the reference sorts them to.
    #[test]
    fn the_search_answers_as_the_reference(seed in any::<u64>(), across in any::<bool>()) {
        let snap = snapshot(seed);
        let cfg = Config { preemption: true, preempt_across_namespaces: across, ..Config::default() };
        let mut engine = Engine::new(&snap, &cfg).unwrap();
        loop {
            for h in 0..u32::try_from(engine.jobs.len()).unwrap() {
                prop_assert_eq!(optimized(&engine, h), reference(&engine, h), "job {}", h);
                let ns = engine.job_ns[h as usize];
                let mut of_ns: Vec<usize> = (0..engine.allocs.len()).filter(|&a| engine.allocs[a].ns == ns).collect();
                of_ns.sort_by_key(|&a| engine.victim_order(a));
                prop_assert_eq!(engine.of_ns(h).collect::<Vec<_>>(), of_ns);
            }
            if engine.step().is_none() {
                break;
            }
        }
    }
}

/// The generator makes what the property needs: searches that find victims, on several
/// groups, and searches that find none; providers where only a budget stood in the way;
/// victims holding CPU and memory where they hold no GPU; and both of the search's
/// shortcuts firing: groups skipped as hopeless, and the search stopped with groups left
/// whose bound reaches the best found.
#[test]
fn random_fleets_exercise_the_search() {
    let (mut found, mut several, mut none, mut held, mut gangs) = (0, 0, 0, 0, 0);
    let (mut cpu_only, mut stopped, mut hopeless) = (0, 0, 0);
    for seed in 0..200 {
        let snap = snapshot(seed);
        let cfg = Config {
            preemption: true,
            preempt_across_namespaces: true,
            ..Config::default()
        };
        let engine = Engine::new(&snap, &cfg).unwrap();
        for h in 0..u32::try_from(engine.jobs.len()).unwrap() {
            let (best, protected) = reference(&engine, h);
            found += usize::from(best.is_some());
            none += usize::from(best.is_none());
            held += usize::from(!protected.is_empty());
            let gang = engine.jobs[h as usize].interconnect == Interconnect::NvlinkGang;
            gangs += usize::from(gang && best.is_some());
            let victims = best.as_ref().map_or(&[][..], |b| &b.2[..]);
            several += usize::from(victims.len() > 1);
            cpu_only += usize::from(victims.iter().any(|&v| {
                let al = &engine.allocs[v];
                al.res.iter().any(|&(n, _)| al.held.iter().all(|&(m, _)| m != n))
            }));
            // The search's walk over its groups, each group searched the long way.
            let bounded = engine.preempt_groups_for_tests(h);
            hopeless += groups(&engine, h)
                .iter()
                .filter(|&&gi| bounded.iter().all(|&(_, g)| g != gi))
                .count();
            let mut best: Option<(u32, u32)> = None;
            for &(least, gi) in &bounded {
                if best.is_some_and(|b| (least, gi) >= b) {
                    stopped += 1;
                    break;
                }
                if let Some((freed, _)) = reference_in(&engine, h, gi, &mut Vec::new())
                    && best.is_none_or(|b| (freed, gi) < b)
                {
                    best = Some((freed, gi));
                }
            }
        }
    }
    let stats = format!("{found} {several} {none} {held} {gangs} {cpu_only} {stopped} {hopeless}");
    eprintln!("stats {stats}");
    assert!(
        found > 100 && several > 20 && none > 100 && held > 10 && gangs > 10,
        "{stats}"
    );
    assert!(cpu_only > 10 && stopped > 10 && hopeless > 10, "{stats}");
}
