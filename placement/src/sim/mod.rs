//! A discrete-time simulator that replays one synthetic trace through a placement policy.
//!
//! Every `tick` seconds: jobs that arrived join the queue, finished jobs free their
//! GPUs, providers fail (their jobs go back to the queue, keeping their submit time) or
//! return, and the policy places what it can from a fresh snapshot. The trace (fleet,
//! arrivals, durations, outages) depends only on the seed, so policies compare on
//! exactly the same input.

mod report;

use std::time::{Duration, Instant};

pub use report::{Summary, write_outputs};

use crate::baseline::{Naive, naive_place};
use crate::decision::{Config, Decisions};
use crate::engine::place;
use crate::snapshot::{GpuRef, Job, Micros, RunningAllocation, Snapshot};
use crate::synth::{self, Rng};

/// A placement policy to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The engine (market, fair share, reservations).
    Ours,
    /// Naive first-fit.
    FirstFit,
    /// Naive spread.
    Spread,
}

impl Policy {
    /// Short name for tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Ours => "ours",
            Policy::FirstFit => "first-fit",
            Policy::Spread => "spread",
        }
    }
}

/// Simulation parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Trace seed.
    pub seed: u64,
    /// Providers.
    pub providers: usize,
    /// Nodes, about.
    pub nodes: usize,
    /// Simulated hours.
    pub hours: u64,
    /// Scheduling interval in seconds.
    pub tick: u64,
    /// Offered load as a share of the fleet's GPU-hours (e.g. 0.9).
    pub load: f64,
    /// Tenants.
    pub namespaces: usize,
    /// Mean hours between failures of one provider.
    pub mtbf_hours: f64,
    /// Mean hours a failed provider stays down.
    pub downtime_hours: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            seed: 7,
            providers: 20,
            nodes: 600,
            hours: 48,
            tick: 60,
            load: 0.9,
            namespaces: 12,
            mtbf_hours: 72.0,
            downtime_hours: 2.0,
        }
    }
}

/// One sample of the time series.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Hours since the start.
    pub hours: f64,
    /// Busy GPUs over GPUs of healthy providers.
    pub utilization: f64,
    /// Free GPUs on partly busy nodes over all free GPUs (healthy providers).
    pub fragmentation: f64,
    /// Jobs waiting.
    pub queue: usize,
}

/// A started job, for wait statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// GPUs of the gang.
    pub gpus: u32,
    /// Seconds from submission to start.
    pub wait: u64,
}

/// What one policy did with the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The policy.
    pub policy: Policy,
    /// Time series, one sample per 10 simulated minutes.
    pub samples: Vec<Sample>,
    /// Starts (first start of each job).
    pub started: Vec<Started>,
    /// Jobs submitted.
    pub submitted: usize,
    /// Jobs still waiting at the end.
    pub waiting_at_end: usize,
    /// Money paid, in micros, for GPU time used.
    pub cost: u128,
    /// GPU-seconds run.
    pub gpu_seconds: u128,
    /// Jobs restarted after a provider failure.
    pub failovers: usize,
    /// Decisions made (jobs considered, summed over rounds).
    pub decisions: u64,
    /// Time spent inside the policy.
    pub policy_time: Duration,
    /// GPUs a policy handed out that were not free (must be 0).
    pub conflicts: usize,
}

/// The trace: a fleet, arrivals and outages, all from the seed.
#[derive(Clone, Debug)]
pub struct Trace {
    snapshot: Snapshot,
    arrivals: Vec<(u64, Job, u64)>,
    /// Per provider: sorted (down_at, up_at) intervals in seconds.
    outages: Vec<Vec<(u64, u64)>>,
}

impl Trace {
    /// Draws the trace for `p`.
    pub fn new(p: &Params) -> Trace {
        let mut rng = Rng::new(p.seed);
        let providers = synth::fleet(&mut rng, p.providers, p.nodes);
        let gpus: u64 = providers
            .iter()
            .flat_map(|x| &x.nodes)
            .map(|n| u64::from(n.gpus))
            .sum();
        let end = p.hours * 3600;
        // Mean GPU-seconds per job, from a separate stream, sets the arrival rate.
        let mut probe = Rng::new(p.seed ^ 0x5eed);
        let mean: f64 = (0..5000)
            .map(|i| {
                let t = synth::job(&mut probe, i, 0, p.namespaces);
                f64::from(t.job.total_gpus()) * t.duration as f64
            })
            .sum::<f64>()
            / 5000.0;
        let rate = p.load * gpus as f64 / mean.max(1.0);
        let mut arrivals = Vec::new();
        let mut t = 0.0;
        loop {
            t += rng.exp(1.0 / rate);
            if t >= end as f64 {
                break;
            }
            let tj = synth::job(&mut rng, arrivals.len(), t as u64, p.namespaces);
            arrivals.push((t as u64, tj.job, tj.duration));
        }
        let outages = (0..providers.len())
            .map(|i| {
                let mut v = Vec::new();
                // A tenth of the providers join late: down from the start.
                let mut at = if i % 10 == 9 {
                    0.0
                } else {
                    rng.exp(p.mtbf_hours * 3600.0)
                };
                while at < end as f64 {
                    let up = at + rng.exp(p.downtime_hours * 3600.0).max(p.tick as f64);
                    v.push((at as u64, up as u64));
                    at = up + rng.exp(p.mtbf_hours * 3600.0);
                }
                v
            })
            .collect();
        Trace {
            snapshot: Snapshot {
                providers,
                ..Snapshot::default()
            },
            arrivals,
            outages,
        }
    }

    /// Jobs in the trace.
    pub fn jobs(&self) -> usize {
        self.arrivals.len()
    }

    /// GPUs in the fleet.
    pub fn gpus(&self) -> u64 {
        self.snapshot
            .providers
            .iter()
            .flat_map(|p| &p.nodes)
            .map(|n| u64::from(n.gpus))
            .sum()
    }
}

/// A job that runs.
struct Run {
    job: Job,
    duration: u64,
    provider: usize,
    gpus: Vec<(usize, u8)>,
    end: u64,
    start: u64,
    price: Micros,
}

fn node_index(snap: &Snapshot, provider: usize, name: &str) -> Option<usize> {
    snap.providers[provider].nodes.iter().position(|n| n.name == name)
}

/// Runs one policy over the trace; `progress` is called with the fraction done.
pub fn simulate(trace: &Trace, p: &Params, policy: Policy, mut progress: impl FnMut(f64)) -> Outcome {
    let mut snap = trace.snapshot.clone();
    let mut durations: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut first_start: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut running: Vec<Run> = Vec::new();
    let mut out = Outcome {
        policy,
        samples: Vec::new(),
        started: Vec::new(),
        submitted: trace.arrivals.len(),
        waiting_at_end: 0,
        cost: 0,
        gpu_seconds: 0,
        failovers: 0,
        decisions: 0,
        policy_time: Duration::ZERO,
        conflicts: 0,
    };
    let cfg = Config::default();
    let end = p.hours * 3600;
    let tick = p.tick.max(1);
    let mut next_arrival = 0;
    let mut next_sample = 0;
    let mut t = 0;
    while t < end {
        while let Some((at, job, d)) = trace.arrivals.get(next_arrival) {
            if *at > t {
                break;
            }
            durations.insert(job.id.clone(), *d);
            snap.jobs.push(job.clone());
            next_arrival += 1;
        }
        for (pi, outages) in trace.outages.iter().enumerate() {
            let down = outages.iter().any(|&(a, b)| a <= t && t < b);
            snap.providers[pi].healthy = !down;
        }
        let (done, keep): (Vec<Run>, Vec<Run>) = running
            .drain(..)
            .partition(|r| r.end <= t || !snap.providers[r.provider].healthy);
        running = keep;
        for r in done {
            let ran = r.end.min(t).saturating_sub(r.start);
            let gpus = r.gpus.len() as u128;
            out.gpu_seconds += gpus * u128::from(ran);
            out.cost += u128::from(r.price) * gpus * u128::from(ran) / 3600;
            for &(n, g) in &r.gpus {
                snap.providers[r.provider].nodes[n].free.push(g);
            }
            if r.end > t {
                // The provider failed: the job goes back to the queue, from scratch.
                out.failovers += 1;
                durations.insert(r.job.id.clone(), r.duration);
                snap.jobs.push(r.job);
            }
        }
        snap.running = running
            .iter()
            .map(|r| RunningAllocation {
                job: r.job.id.clone(),
                namespace: r.job.namespace.clone(),
                priority: r.job.priority,
                start_time: r.start,
                provider: snap.providers[r.provider].id.clone(),
                gpus: r
                    .gpus
                    .iter()
                    .map(|&(n, g)| GpuRef {
                        node: snap.providers[r.provider].nodes[n].name.clone(),
                        gpu: g,
                    })
                    .collect(),
                spread_group: r.job.spread.as_ref().map(|s| s.group.clone()),
                evicting: false,
                budget: None,
                resources: Default::default(),
            })
            .collect();
        let t0 = Instant::now();
        let decisions: Decisions = match policy {
            Policy::Ours => place(&snap, &cfg).unwrap_or_default(),
            Policy::FirstFit => naive_place(&snap, Naive::FirstFit, &cfg.market),
            Policy::Spread => naive_place(&snap, Naive::Spread, &cfg.market),
        };
        out.policy_time += t0.elapsed();
        out.decisions += snap.jobs.len() as u64;
        snap.reservations = decisions.reservations;
        let placed: std::collections::BTreeSet<&str> =
            decisions.placements.iter().map(|p| p.job.as_str()).collect();
        let mut queue = Vec::with_capacity(snap.jobs.len());
        let mut by_id: std::collections::BTreeMap<String, Job> = std::collections::BTreeMap::new();
        for j in snap.jobs.drain(..) {
            if placed.contains(j.id.as_str()) {
                by_id.insert(j.id.clone(), j);
            } else {
                queue.push(j);
            }
        }
        snap.jobs = queue;
        for pl in decisions.placements {
            let Some(job) = by_id.remove(&pl.job) else {
                continue;
            };
            let Some(provider) = snap.providers.iter().position(|x| x.id == pl.provider) else {
                continue;
            };
            let mut gpus = Vec::new();
            for w in &pl.workers {
                let Some(n) = node_index(&snap, provider, &w.node) else {
                    continue;
                };
                let free = &mut snap.providers[provider].nodes[n].free;
                let before = free.len();
                free.retain(|g| !w.gpus.contains(g));
                out.conflicts += w.gpus.len() - (before - free.len());
                gpus.extend(w.gpus.iter().map(|&g| (n, g)));
            }
            if first_start.insert(job.id.clone()) {
                out.started.push(Started {
                    gpus: job.total_gpus(),
                    wait: t.saturating_sub(job.submit_time),
                });
            }
            let duration = durations.get(&job.id).copied().unwrap_or(tick);
            running.push(Run {
                end: t + duration,
                duration,
                start: t,
                provider,
                gpus,
                price: pl.price,
                job,
            });
        }
        if t >= next_sample {
            next_sample += 600;
            out.samples.push(sample(&snap, t));
            progress(t as f64 / end as f64);
        }
        t += tick;
    }
    for r in running {
        let ran = end.min(r.end).saturating_sub(r.start);
        let gpus = r.gpus.len() as u128;
        out.gpu_seconds += gpus * u128::from(ran);
        out.cost += u128::from(r.price) * gpus * u128::from(ran) / 3600;
    }
    out.waiting_at_end = snap.jobs.len();
    out
}

fn sample(snap: &Snapshot, t: u64) -> Sample {
    let (mut total, mut free, mut stranded) = (0u64, 0u64, 0u64);
    for p in snap.providers.iter().filter(|p| p.healthy) {
        for n in &p.nodes {
            total += u64::from(n.gpus);
            free += n.free.len() as u64;
            if n.free.len() < usize::from(n.gpus) {
                stranded += n.free.len() as u64;
            }
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Sample {
        hours: t as f64 / 3600.0,
        utilization: ratio(total - free, total),
        fragmentation: ratio(stranded, free),
        queue: snap.jobs.len(),
    }
}
