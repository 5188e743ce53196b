//! Preemption benchmark: a fleet about 90 % busy with lower-priority running work and a
//! queue of jobs that may evict it.
//!
//! `cargo bench -p gpufed-placement --bench preempt` — per scenario (any namespace, own
//! namespace, quota preemption with every namespace's GPU cap full; 500 and 2 000
//! preemptors) the wall time of one round (index build included; min and mean of
//! `ROUNDS`), what it decided (jobs placed, evictions, GPUs evicted) and a digest of the
//! decisions, so that two builds can be checked to decide the same.
//! `PREEMPT_BENCH_SCALES=500` runs only the given queue sizes (comma-separated). Without
//! `--bench` (as `cargo test --all-targets` runs it) a smoke version: 100 preemptors, one
//! round each.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use gpufed_placement::synth::{self, Rng};
use gpufed_placement::{Config, Decisions, Engine, GpuRef, Quota, RunningAllocation, Snapshot};

const PROVIDERS: usize = 40;
const NODES: usize = 2_000;
const NAMESPACES: usize = 20;
const ROUNDS: usize = 3;

/// Rounds per scenario: `ROUNDS`, or one in the smoke version.
fn rounds() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        ROUNDS
    } else {
        1
    }
}

/// The fleet with about 90 % of its GPUs held by priority-0 work: allocations of 1, 2, 4
/// or 8 GPUs on one node, now and then a gang over two nodes, a tenth of them replicas
/// of protected services (two disruption budgets).
fn busy_fleet(rng: &mut Rng) -> Snapshot {
    let mut providers = synth::fleet(rng, PROVIDERS, NODES);
    let mut running = Vec::new();
    for p in &mut providers {
        // Leftover GPUs of a node, offered to the next node's allocation for a two-node gang.
        let mut spill: Option<(String, Vec<u8>)> = None;
        for n in &mut p.nodes {
            let mut free: Vec<u8> = Vec::new();
            let mut g = 0u8;
            while g < n.gpus {
                if rng.below(5) == 0 {
                    free.push(g);
                    g += 1;
                    continue;
                }
                let want = [1u8, 1, 1, 2, 2, 4, 8][usize::try_from(rng.below(7)).unwrap()];
                let take = want.min(n.gpus - g);
                let mut gpus: Vec<GpuRef> = (g..g + take)
                    .map(|gpu| GpuRef {
                        node: n.name.clone(),
                        gpu,
                    })
                    .collect();
                g += take;
                if let Some((node, rest)) = spill.take().filter(|_| rng.below(8) == 0) {
                    gpus.extend(rest.into_iter().map(|gpu| GpuRef {
                        node: node.clone(),
                        gpu,
                    }));
                }
                let i = running.len();
                running.push(RunningAllocation {
                    job: format!("run-{i:06}"),
                    namespace: format!("team-{:02}", rng.below(NAMESPACES as u64)),
                    priority: 0,
                    start_time: rng.below(100_000),
                    provider: p.id.clone(),
                    gpus,
                    budget: (rng.below(10) == 0).then(|| format!("svc-{}", rng.below(2))),
                    ..RunningAllocation::default()
                });
            }
            // Spill this node's free GPUs into the next allocation now and then: they
            // become held (a two-node gang), the node stays as busy as drawn otherwise.
            if free.len() >= 2 && rng.below(4) == 0 {
                let keep = free.split_off(free.len() / 2);
                spill = Some((n.name.clone(), std::mem::replace(&mut free, keep)));
            }
            n.free = free;
        }
        // GPUs spilled but not taken are free after all.
        if let Some((node, rest)) = spill
            && let Some(n) = p.nodes.iter_mut().find(|n| n.name == node)
        {
            n.free.extend(rest);
            n.free.sort_unstable();
        }
    }
    let budgets = BTreeMap::from([("svc-0".to_string(), 10), ("svc-1".to_string(), 40)]);
    Snapshot {
        providers,
        running,
        budgets,
        ..Snapshot::default()
    }
}

/// `n` jobs of priority 1 that may preempt, drawn as the place bench's queue.
fn preemptors(rng: &mut Rng, n: usize) -> Vec<gpufed_placement::Job> {
    (0..n)
        .map(|i| {
            let mut job = synth::job(rng, i, i as u64, NAMESPACES).job;
            job.priority = 1;
            job.preempt = true;
            job
        })
        .collect()
}

/// Every namespace's GPU cap exactly what it holds: each preemptor must evict its own
/// namespace's work to make room in the cap.
fn caps_full(snap: &mut Snapshot) {
    let mut held: BTreeMap<String, u32> = BTreeMap::new();
    for r in &snap.running {
        *held.entry(r.namespace.clone()).or_default() += u32::try_from(r.gpus.len()).unwrap();
    }
    snap.quotas = held
        .into_iter()
        .map(|(ns, used)| {
            let q = Quota {
                gpus: Some(used),
                spend_per_hour: None,
                used_gpus: used,
                used_spend_per_hour: 0,
            };
            (ns, q)
        })
        .collect();
}

fn digest(d: &Decisions) -> u64 {
    // SipHash with fixed keys: the same decisions give the same digest in any build.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    format!("{d:?}").hash(&mut h);
    h.finish()
}

fn measure(label: &str, snap: &Snapshot, cfg: &Config) {
    let mut times: Vec<Duration> = Vec::with_capacity(rounds());
    let mut last = None;
    for _ in 0..rounds() {
        let t = Instant::now();
        let d = Engine::new(snap, cfg).unwrap().run();
        times.push(t.elapsed());
        last = Some(d);
    }
    let d = last.unwrap();
    let evicted: std::collections::BTreeSet<&str> = d.evictions.iter().map(|e| e.job.as_str()).collect();
    let evicted_gpus: usize = snap
        .running
        .iter()
        .filter(|r| evicted.contains(r.job.as_str()))
        .map(|r| r.gpus.len())
        .sum();
    let min = times.iter().min().unwrap();
    let mean = times.iter().sum::<Duration>() / u32::try_from(times.len()).unwrap();
    println!(
        "{label}: min {:.1} ms, mean {:.1} ms per round; placed {}/{}, {} evictions ({evicted_gpus} GPUs); digest {:016x}",
        min.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        d.placements.len(),
        snap.jobs.len(),
        d.evictions.len(),
        digest(&d),
    );
}

fn main() {
    let scales: Vec<usize> = std::env::var("PREEMPT_BENCH_SCALES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if rounds() == ROUNDS {
                vec![500, 2_000]
            } else {
                vec![100]
            }
        });
    let mut rng = Rng::new(7);
    let fleet = busy_fleet(&mut rng);
    let gpus: usize = fleet
        .providers
        .iter()
        .flat_map(|p| &p.nodes)
        .map(|n| usize::from(n.gpus))
        .sum();
    let free: usize = fleet
        .providers
        .iter()
        .flat_map(|p| &p.nodes)
        .map(|n| n.free.len())
        .sum();
    println!(
        "fleet: {} providers, {} nodes, {gpus} GPUs ({free} free), {} running allocations; {} rounds each",
        fleet.providers.len(),
        fleet.providers.iter().map(|p| p.nodes.len()).sum::<usize>(),
        fleet.running.len(),
        rounds(),
    );
    let any = Config {
        preemption: true,
        preempt_across_namespaces: true,
        ..Config::default()
    };
    let own = Config {
        preemption: true,
        ..Config::default()
    };
    for &n in &scales {
        let mut snap = fleet.clone();
        snap.jobs = preemptors(&mut Rng::new(11), n);
        measure(&format!("any namespace, {n} preemptors"), &snap, &any);
        measure(&format!("own namespace, {n} preemptors"), &snap, &own);
        caps_full(&mut snap);
        measure(&format!("quota (caps full), {n} preemptors"), &snap, &own);
    }
}
