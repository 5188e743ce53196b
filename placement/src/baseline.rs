//! Naive reference policies for the benchmark and the simulator: first-fit and spread.
//!
//! They honour the same hard constraints as the engine but scan every provider and node
//! per job, pay the plain ask, and know nothing of fair share, reservations or
//! preemption. Jobs go by `(priority desc, submit_time, id)`.

use crate::decision::{Decisions, Placement, Unplaced, WorkerPlacement};
use crate::explain::Explanation;
use crate::filter::validate;
use std::collections::BTreeMap;

use crate::market::{MarketParams, market_price};
use crate::snapshot::{Interconnect, Job, Micros, Node, Provider, Resources, Snapshot};

/// Which naive policy to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naive {
    /// First provider (by id) and first nodes (by name) that fit.
    FirstFit,
    /// The provider with the most suitable free GPUs, emptiest nodes first.
    Spread,
}

fn provider_ok(job: &Job, p: &Provider) -> bool {
    (job.providers.is_empty() || job.providers.contains(&p.id))
        && (job.regions.is_empty() || job.regions.contains(&p.region))
        && p.tenants.as_ref().is_none_or(|t| t.contains(&job.namespace))
        && p.healthy
        && (p.verified || !job.verified_only)
        && p.reputation >= job.min_reputation
}

/// GPUs and busy GPUs per (provider index, model).
type Usage<'a> = BTreeMap<(usize, &'a str), (u32, u32)>;

fn price_of(
    usage: &Usage<'_>,
    market: &MarketParams,
    pi: usize,
    p: &Provider,
    model: &str,
) -> Option<Micros> {
    let ask = *p.prices.get(model)?;
    let (total, busy) = usage.get(&(pi, model)).copied().unwrap_or((0, 0));
    Some(market_price(ask, busy, total, market))
}

fn node_ok(job: &Job, n: &Node, price: Option<Micros>) -> bool {
    price.is_some_and(|a| job.max_price.is_none_or(|m| a <= m))
        && (n.verified || !job.verified_only)
        && (job.models.is_empty() || job.models.contains(&n.model))
        && n.vram_mib >= job.min_vram_mib
        && n.compute >= job.min_compute
        && (job.interconnect == Interconnect::Any || n.nvlink_domain.is_some())
        && n.gpus >= job.gpus_per_worker
        && job.node_selector.iter().all(|(k, v)| n.labels.get(k) == Some(v))
        && crate::affinity_matches(&job.node_affinity, &n.labels)
}

/// Picks nodes for `job` among `cands` (node indices, in preference order) of one
/// provider, all of one model. Returns (node, workers) or `None`.
fn fill(job: &Job, free: &[u64], avail: &[Option<Resources>], cands: &[usize]) -> Option<Vec<(usize, u32)>> {
    let g = u32::from(job.gpus_per_worker);
    let mut remaining = u32::from(job.workers);
    let mut out = Vec::new();
    for &n in cands {
        let by_res = avail[n].map_or(u32::MAX, |a| a.workers(&job.worker_resources));
        let cap = match job.max_workers_per_node {
            0 => u32::MAX,
            c => u32::from(c),
        };
        let per = (free[n].count_ones() / g).min(by_res).min(cap).min(remaining);
        if per > 0 {
            out.push((n, per));
            remaining -= per;
        }
        if remaining == 0 {
            return Some(out);
        }
    }
    None
}

/// Provider index, (node, workers) picks, free GPUs of the unit.
type Choice = (usize, Vec<(usize, u32)>, u32);
/// Nodes a gang may share: (model, domain) and node indices.
type Unit<'a> = ((&'a str, Option<u32>), Vec<usize>);

/// Runs a naive policy over a snapshot (running work and reservations are ignored).
pub fn naive_place(snap: &Snapshot, policy: Naive, market: &MarketParams) -> Decisions {
    let mut providers: Vec<&Provider> = snap.providers.iter().collect();
    providers.sort_by(|a, b| a.id.cmp(&b.id));
    let mut free: Vec<Vec<u64>> = providers
        .iter()
        .map(|p| {
            p.nodes
                .iter()
                .map(|n| n.free.iter().fold(0u64, |m, &g| m | (1u64 << g.min(63))))
                .collect()
        })
        .collect();
    // CPU and memory free per node (`None`: not reported, never the limit).
    let mut avail: Vec<Vec<Option<Resources>>> = providers
        .iter()
        .map(|p| {
            p.nodes
                .iter()
                .map(|n| n.resources.map(|r| r.free.min_each(&r.allocatable)))
                .collect()
        })
        .collect();
    let mut usage: Usage = BTreeMap::new();
    for (pi, p) in providers.iter().enumerate() {
        for n in &p.nodes {
            let e = usage.entry((pi, n.model.as_str())).or_default();
            e.0 += u32::from(n.gpus);
            e.1 += u32::from(n.gpus).saturating_sub(u32::try_from(n.free.len()).unwrap_or(0));
        }
    }
    let mut order: Vec<&Job> = snap.jobs.iter().collect();
    order.sort_by(|a, b| {
        (-i64::from(a.priority), a.submit_time, &a.id).cmp(&(-i64::from(b.priority), b.submit_time, &b.id))
    });
    let mut out = Decisions::default();
    for job in order {
        if let Err(e) = validate(job) {
            out.unplaced.push(Unplaced {
                job: job.id.clone(),
                explanation: Explanation::Invalid(e),
            });
            continue;
        }
        let mut choice: Option<Choice> = None;
        for (pi, p) in providers.iter().enumerate() {
            if !provider_ok(job, p) {
                continue;
            }
            // Units of nodes a gang may share: one model, and one domain if asked.
            let mut units: Vec<Unit<'_>> = Vec::new();
            for (ni, n) in p.nodes.iter().enumerate() {
                if !node_ok(job, n, price_of(&usage, market, pi, p, &n.model)) {
                    continue;
                }
                let dom = if job.interconnect == Interconnect::NvlinkGang {
                    n.nvlink_domain
                } else {
                    None
                };
                let key = (n.model.as_str(), dom);
                match units.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(ni),
                    None => units.push((key, vec![ni])),
                }
            }
            for (_, mut cands) in units {
                let free_gpus: u32 = cands.iter().map(|&n| free[pi][n].count_ones()).sum();
                if policy == Naive::Spread {
                    if choice.as_ref().is_some_and(|c| c.2 >= free_gpus) {
                        continue;
                    }
                    cands.sort_by_key(|&n| std::cmp::Reverse(free[pi][n].count_ones()));
                }
                if let Some(picks) = fill(job, &free[pi], &avail[pi], &cands) {
                    choice = Some((pi, picks, free_gpus));
                    if policy == Naive::FirstFit {
                        break;
                    }
                }
            }
            if policy == Naive::FirstFit && choice.is_some() {
                break;
            }
        }
        let Some((pi, picks, _)) = choice else {
            out.unplaced.push(Unplaced {
                job: job.id.clone(),
                explanation: Explanation::NoFit {
                    providers: providers.len(),
                    reasons: Vec::new(),
                },
            });
            continue;
        };
        let p = providers[pi];
        let g = u32::from(job.gpus_per_worker);
        let mut workers = Vec::new();
        let mut model: &str = "";
        for (n, per) in picks {
            let node = &p.nodes[n];
            model = node.model.as_str();
            if let Some(a) = &mut avail[pi][n] {
                *a = a.minus(&job.worker_resources.times(per));
            }
            for _ in 0..per {
                let mut gpus = Vec::new();
                for _ in 0..g {
                    let bit = free[pi][n].trailing_zeros();
                    free[pi][n] &= !(1u64 << bit);
                    gpus.push(u8::try_from(bit).unwrap_or(u8::MAX));
                }
                workers.push(WorkerPlacement {
                    node: node.name.clone(),
                    gpus,
                });
            }
        }
        let price = price_of(&usage, market, pi, p, model).unwrap_or(0);
        if let Some(e) = usage.get_mut(&(pi, model)) {
            e.1 += g * u32::from(job.workers);
        }
        out.placements.push(Placement {
            job: job.id.clone(),
            provider: p.id.clone(),
            model: model.to_string(),
            workers,
            price,
            evicts: Vec::new(),
        });
    }
    out
}
