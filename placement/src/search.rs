//! The fast path: find the best-scoring (provider, model) group for a job, then pick its
//! nodes and GPUs best-fit. Touches only the groups of accepted models and, per group,
//! its pools' bucket lengths; never the whole fleet.

use crate::filter::JobSt;
use crate::index::{Fleet, Pool};
use crate::market::{MarketParams, market_price};
use crate::score::{Weights, best_fit, score};
use crate::snapshot::{Interconnect, MAX_GPUS_PER_NODE, Micros};

/// Where a job could go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub group: u32,
    /// For gang-wide NVLink: the pool and the domain index inside it.
    pub domain: Option<(u32, u32)>,
    pub price: Micros,
    pub score: f64,
}

/// Node chosen for some workers: the node, the GPUs taken, how many workers.
pub(crate) type Pick = (u32, u64, u32);

const SLOTS: usize = MAX_GPUS_PER_NODE as usize + 1;

fn better(a: &Candidate, b: &Option<Candidate>) -> bool {
    match b {
        None => true,
        Some(b) => a.score.total_cmp(&b.score).then(b.group.cmp(&a.group)).is_gt(),
    }
}

/// Free-count histogram of a domain's unreserved nodes.
fn domain_counts(fleet: &Fleet, nodes: &[u32], counts: &mut [u32; SLOTS]) {
    for &n in nodes {
        let node = &fleet.nodes[n as usize];
        if node.reserved_for.is_none() {
            counts[node.free.count_ones() as usize] += 1;
        }
    }
}

/// The best group for `js`, or `None` when nothing fits now. `only` limits the search to
/// one group (used after preemption).
pub(crate) fn find_best(
    fleet: &Fleet,
    js: &JobSt,
    weights: &Weights,
    market: &MarketParams,
    only: Option<u32>,
) -> Option<Candidate> {
    let reference = if js.max_price == Micros::MAX {
        fleet.max_ask
    } else {
        js.max_price
    };
    let mut best: Option<Candidate> = None;
    let mut counts = [0u32; SLOTS];
    let g = usize::from(js.g);
    let only_slice;
    let model_groups: Box<dyn Iterator<Item = &u32>> = match only {
        Some(o) => {
            only_slice = [o];
            Box::new(only_slice.iter())
        }
        None => Box::new(
            js.models
                .iter()
                .flat_map(|&m| fleet.groups_by_model[usize::from(m)].iter()),
        ),
    };
    for &gi in model_groups {
        let group = &fleet.groups[gi as usize];
        let Some(ask) = group.ask else { continue };
        if !js.provider_ok(&fleet.providers[group.provider as usize], group.provider) {
            continue;
        }
        let price = market_price(ask, group.busy, group.total, market);
        if price > js.max_price {
            continue;
        }
        let rep = fleet.providers[group.provider as usize].reputation;
        let rank = js.preferred_rank(group.provider);
        let pools = group
            .pools
            .clone()
            .filter(|&p| js.pool_ok(&fleet.pools[p as usize]));
        if js.interconnect == Interconnect::NvlinkGang {
            for p in pools {
                for (di, d) in fleet.pools[p as usize].domains.iter().enumerate() {
                    counts.fill(0);
                    domain_counts(fleet, d, &mut counts);
                    if let Some(fit) = best_fit(&counts, js.g, js.w) {
                        let di = u32::try_from(di).unwrap_or(u32::MAX);
                        let c = Candidate {
                            group: gi,
                            domain: Some((p, di)),
                            price,
                            score: score(weights, price, reference, rep, fit, rank),
                        };
                        if better(&c, &best) {
                            best = Some(c);
                        }
                    }
                }
            }
            continue;
        }
        let mut top = 0;
        for p in pools {
            let b = &fleet.pools[p as usize].buckets;
            for k in g..b.len() {
                counts[k] += u32::try_from(b[k].len()).unwrap_or(u32::MAX);
            }
            top = top.max(b.len());
        }
        if top <= g {
            continue;
        }
        let fit = best_fit(&counts[..top], js.g, js.w);
        counts[g..top].fill(0);
        if let Some(fit) = fit {
            let c = Candidate {
                group: gi,
                domain: None,
                price,
                score: score(weights, price, reference, rep, fit, rank),
            };
            if better(&c, &best) {
                best = Some(c);
            }
        }
    }
    best
}

/// Takes `per` workers' GPUs (the lowest free indices) from a node.
fn take(free: u64, gpus: u32) -> u64 {
    let mut mask = 0u64;
    let mut rest = free;
    for _ in 0..gpus {
        let low = rest & rest.wrapping_neg();
        mask |= low;
        rest &= !low;
    }
    mask
}

/// Picks the nodes and GPUs for a candidate, best-fit (fullest nodes first).
pub(crate) fn select(fleet: &Fleet, js: &JobSt, cand: &Candidate) -> Vec<Pick> {
    let g = u32::from(js.g);
    let mut remaining = u32::from(js.w);
    let mut picks = Vec::new();
    let visit = |n: u32, remaining: &mut u32, picks: &mut Vec<Pick>| {
        let free = fleet.nodes[n as usize].free;
        let per = (free.count_ones() / g).min(*remaining);
        if per > 0 {
            picks.push((n, take(free, per * g), per));
            *remaining -= per;
        }
    };
    if let Some((p, d)) = cand.domain {
        let mut nodes: Vec<u32> = fleet.pools[p as usize].domains[d as usize]
            .iter()
            .copied()
            .filter(|&n| fleet.nodes[n as usize].reserved_for.is_none())
            .collect();
        nodes.sort_by_key(|&n| (fleet.nodes[n as usize].free.count_ones(), n));
        for n in nodes {
            if remaining == 0 {
                break;
            }
            visit(n, &mut remaining, &mut picks);
        }
        return picks;
    }
    let group = &fleet.groups[cand.group as usize];
    let pools: Vec<&Pool> = group
        .pools
        .clone()
        .map(|p| &fleet.pools[p as usize])
        .filter(|p| js.pool_ok(p))
        .collect();
    let top = pools.iter().map(|p| p.buckets.len()).max().unwrap_or(0);
    for k in usize::from(js.g)..top {
        for pool in &pools {
            for &n in pool.buckets.get(k).map(Vec::as_slice).unwrap_or(&[]) {
                if remaining == 0 {
                    return picks;
                }
                visit(n, &mut remaining, &mut picks);
            }
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::take;

    #[test]
    fn takes_lowest_free_gpus() {
        assert_eq!(take(0b1011_0100, 2), 0b0001_0100);
        assert_eq!(take(0b1111, 4), 0b1111);
        assert_eq!(take(0b1000, 0), 0);
    }
}
