//! Placement benchmark: 10k GPU nodes, 100 providers, a mixed queue.
//!
//! `cargo bench -p gpufed-placement` — prints decisions/s, per-decision p50/p99, peak
//! memory, and the same input through the naive first-fit baseline.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gpufed_placement::baseline::{Naive, naive_place};
use gpufed_placement::synth::{self, Rng};
use gpufed_placement::{Config, Engine, LabelOp, LabelRequirement, NodeResources, Resources, Snapshot};

const PROVIDERS: usize = 100;
const NODES: usize = 10_000;
const JOBS: usize = 20_000;
const ROUNDS: usize = 5;

fn snapshot(seed: u64) -> Snapshot {
    let mut rng = Rng::new(seed);
    let mut providers = synth::fleet(&mut rng, PROVIDERS, NODES);
    // About half of the GPUs are busy, scattered, as in a running fleet.
    for n in providers.iter_mut().flat_map(|p| p.nodes.iter_mut()) {
        n.free.retain(|_| rng.below(2) == 0);
    }
    let jobs = (0..JOBS)
        .map(|i| synth::job(&mut rng, i, i as u64, 20).job)
        .collect();
    Snapshot {
        providers,
        jobs,
        ..Snapshot::default()
    }
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of this thread (user + system), from /proc, in seconds (10 ms ticks).
fn thread_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // fields after the command: state=0, ..., utime=11, stime=12
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let snap = snapshot(42);
    let nodes: usize = snap.providers.iter().map(|p| p.nodes.len()).sum();
    let gpus: usize = snap
        .providers
        .iter()
        .flat_map(|p| &p.nodes)
        .map(|n| usize::from(n.gpus))
        .sum();
    let free: usize = snap
        .providers
        .iter()
        .flat_map(|p| &p.nodes)
        .map(|n| n.free.len())
        .sum();
    println!(
        "fleet: {} providers, {nodes} nodes, {gpus} GPUs ({free} free); queue: {} jobs; {ROUNDS} rounds",
        snap.providers.len(),
        snap.jobs.len()
    );
    let cfg = Config::default();
    let ours_total_rate = ours(&snap, &cfg, "ours");
    // The same round with tenant policies: every fourth provider sells to half of the
    // namespaces (the even ones), so every job's admitted set must be computed.
    let mut policed = snap.clone();
    let even: std::collections::BTreeSet<String> =
        (0..20).step_by(2).map(|n| format!("team-{n:02}")).collect();
    for p in policed.providers.iter_mut().step_by(4) {
        p.tenants = Some(even.clone());
    }
    let policed_rate = ours(&policed, &cfg, "ours with tenant policies");
    println!(
        "ratio with/without tenant policies: {:.2}x decisions/s (incl. build)",
        policed_rate / ours_total_rate
    );
    // The same round with node selectors: every node in one of three zones, and every
    // tenth job selecting one zone, so the nodes pool by zone and those jobs filter on it.
    let mut zoned = snap.clone();
    for (i, n) in zoned
        .providers
        .iter_mut()
        .flat_map(|p| p.nodes.iter_mut())
        .enumerate()
    {
        n.labels
            .insert("topology.kubernetes.io/zone".into(), format!("z{}", i % 3));
    }
    for (i, j) in zoned.jobs.iter_mut().enumerate().step_by(10) {
        j.node_selector
            .insert("topology.kubernetes.io/zone".into(), format!("z{}", i % 3));
    }
    let zoned_rate = ours(&zoned, &cfg, "ours with node selectors");
    println!(
        "ratio with/without node selectors: {:.2}x decisions/s (incl. build)",
        zoned_rate / ours_total_rate
    );
    // Node affinity instead: every tenth job admits two of the three zones (`In`), every
    // tenth of the others excludes one (`NotIn`).
    let mut affine = zoned.clone();
    for (i, j) in affine.jobs.iter_mut().enumerate() {
        let zone = |k: usize| format!("z{}", k % 3);
        let op = match i % 10 {
            0 => LabelOp::In(vec![zone(i), zone(i + 1)]),
            5 => LabelOp::NotIn(vec![zone(i)]),
            _ => continue,
        };
        j.node_selector.clear();
        j.node_affinity = vec![vec![LabelRequirement {
            key: "topology.kubernetes.io/zone".into(),
            op,
        }]];
    }
    let rate = ours(&affine, &cfg, "ours with node affinity");
    println!(
        "ratio with/without node affinity: {:.2}x decisions/s (incl. build)",
        rate / ours_total_rate
    );
    // Gangs kept apart: every other multi-worker job at most one worker per node, so its
    // pools are counted node by node.
    let mut apart = snap.clone();
    for j in apart.jobs.iter_mut().filter(|j| j.workers > 1).step_by(2) {
        j.max_workers_per_node = 1;
    }
    let rate = ours(&apart, &cfg, "ours with gangs kept apart");
    println!(
        "ratio with/without gangs kept apart: {:.2}x decisions/s (incl. build)",
        rate / ours_total_rate
    );
    // The same round with CPU and memory: every node reports them, every job asks for
    // some per worker. Roomy: nodes sized for their GPUs (16 cores, 128 GiB a GPU, jobs
    // ask half), so the GPUs still decide and the bucket counts answer. Tight: nodes have
    // 4 cores a GPU and every fourth job asks 8 per GPU, so its pools are counted node by
    // node.
    for (label, node_cores, every, job_cores) in [("roomy", 16, 1, 8), ("tight", 4, 4, 8)] {
        let mut sized = snap.clone();
        for n in sized.providers.iter_mut().flat_map(|p| p.nodes.iter_mut()) {
            let per_gpu = |gpus: u64| Resources::cpu_memory(gpus * node_cores * 1000, gpus * 128 * 1024);
            let allocatable = per_gpu(u64::from(n.gpus));
            let busy = u64::from(n.gpus) - n.free.len() as u64;
            n.resources = Some(NodeResources {
                allocatable,
                free: allocatable.minus(&per_gpu(busy)),
            });
        }
        for j in sized.jobs.iter_mut().step_by(every) {
            let g = u64::from(j.gpus_per_worker);
            j.worker_resources = Resources::cpu_memory(g * job_cores * 1000, g * 64 * 1024);
        }
        let rate = ours(&sized, &cfg, &format!("ours with CPU/memory, {label}"));
        println!(
            "ratio with/without CPU/memory ({label}): {:.2}x decisions/s (incl. build)",
            rate / ours_total_rate
        );
        if label == "roomy" {
            // Roomy, and RDMA devices: every third node has 8 (slot 0), the others none;
            // every tenth job asks for one per worker, so its pools without devices are
            // counted node by node and found empty.
            let mut rdma = sized;
            rdma.extended_resources = vec!["rdma/ib".into()];
            for (i, n) in rdma
                .providers
                .iter_mut()
                .flat_map(|p| p.nodes.iter_mut())
                .enumerate()
            {
                let devices = if i % 3 == 0 { 8 } else { 0 };
                let r = n.resources.as_mut().expect("sized");
                r.allocatable.extended[0] = devices;
                r.free.extended[0] = devices;
            }
            for j in rdma.jobs.iter_mut().step_by(10) {
                j.worker_resources.extended[0] = 1;
            }
            let rate = ours(&rdma, &cfg, "ours with CPU/memory and RDMA devices");
            println!(
                "ratio with/without CPU/memory and RDMA devices (roomy): {:.2}x decisions/s (incl. build)",
                rate / ours_total_rate
            );
        }
    }
    if std::env::var("PLACEMENT_BENCH_BASELINE").is_ok_and(|v| v == "0") {
        return;
    }
    let t = Instant::now();
    let mut base = None;
    for _ in 0..ROUNDS {
        base = Some(naive_place(&snap, Naive::FirstFit, &cfg.market));
    }
    let base_time = t.elapsed();
    let base = base.unwrap();
    let base_rate = (JOBS * ROUNDS) as f64 / base_time.as_secs_f64();
    let base_gpus: u64 = base
        .placements
        .iter()
        .map(|p| p.workers.iter().map(|w| w.gpus.len() as u64).sum::<u64>())
        .sum();
    println!(
        "first-fit: {:>9.0} decisions/s (mean {:.2} us/decision); placed {}/{JOBS} jobs, {base_gpus} GPUs",
        base_rate,
        base_time.as_secs_f64() * 1e6 / (JOBS * ROUNDS) as f64,
        base.placements.len()
    );
    println!(
        "ratio ours/first-fit: {:.1}x decisions/s (incl. build)",
        ours_total_rate / base_rate
    );
    println!("peak memory (VmHWM): {} MiB", vm_hwm_kib().unwrap_or(0) / 1024);
}

/// One measurement of our engine on `snap`: prints its figures, returns decisions/s
/// including the index build.
fn ours(snap: &Snapshot, cfg: &Config, label: &str) -> f64 {
    let mut per_decision: Vec<Duration> = Vec::with_capacity(JOBS * ROUNDS);
    let mut split = [(Duration::ZERO, 0u32); 2];
    let (mut build, mut steps, mut placed, mut placed_gpus) = (Duration::ZERO, Duration::ZERO, 0, 0u64);
    let mut cpu = 0.0;
    for _ in 0..ROUNDS {
        let c0 = thread_cpu_s();
        let t0 = Instant::now();
        let mut engine = Engine::new(snap, cfg).unwrap();
        build += t0.elapsed();
        let t1 = Instant::now();
        loop {
            let t = Instant::now();
            let Some(ok) = engine.step() else { break };
            let e = t.elapsed();
            per_decision.push(e);
            split[usize::from(ok)].0 += e;
            split[usize::from(ok)].1 += 1;
        }
        steps += t1.elapsed();
        cpu += thread_cpu_s() - c0;
        let d = engine.run();
        placed = d.placements.len();
        placed_gpus = d
            .placements
            .iter()
            .map(|p| p.workers.iter().map(|w| w.gpus.len() as u64).sum::<u64>())
            .sum();
    }
    per_decision.sort();
    for (name, (t, n)) in ["unplaced", "placed"].iter().zip(split) {
        println!(
            "  {name}: {n} decisions, mean {:.2} us",
            t.as_secs_f64() * 1e6 / f64::from(n.max(1))
        );
    }
    let decisions = per_decision.len() as f64;
    let ours_rate = decisions / steps.as_secs_f64();
    let ours_total_rate = decisions / (steps + build).as_secs_f64();
    println!(
        "{label}: {:>9.0} decisions/s (steps only), {:>9.0} decisions/s incl. index build ({:.2} ms/round); \
         p50 {:.2} us, p99 {:.2} us, max {:.2} us; placed {placed}/{JOBS} jobs, {placed_gpus} GPUs",
        ours_rate,
        ours_total_rate,
        build.as_secs_f64() * 1e3 / ROUNDS as f64,
        pct(&per_decision, 0.5).as_secs_f64() * 1e6,
        pct(&per_decision, 0.99).as_secs_f64() * 1e6,
        per_decision.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
    println!(
        "{label} on thread CPU time (build + steps, less sensitive to other load): {:.0} decisions/s",
        decisions / f64::max(cpu, 1e-9)
    );
    ours_total_rate
}
