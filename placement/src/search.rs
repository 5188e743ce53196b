//! The fast path: find the best-scoring (provider, model) group for a job, then pick its
//! nodes and GPUs best-fit. Touches only the groups of accepted models and, per group,
//! its pools' bucket lengths; never the whole fleet.
//!
//! Candidates are ordered by, best first:
//! 1. for a job with a [spread](crate::spread), the fewest members of its group in the
//!    candidate's domain (provider or region). This comes before the preferred-provider
//!    order: a service's replicas spread over its preferred providers first (with the
//!    default weights the preferred term dominates the score, so among domains of equal
//!    count the preferred list still decides), and only share a domain when every fitting
//!    domain already holds as many members;
//! 2. the [score](crate::score) (price, reputation, packing, preferred order);
//! 3. the smaller group index (deterministic ties).

use crate::filter::JobSt;
use crate::index::{Fleet, Pool};
use crate::nvlink::DomainFilter;
use crate::resources::SLOTS;
use crate::score::{Fit, Weights, best_fit, score};
use crate::snapshot::{Interconnect, Micros};
use crate::spread::SpreadView;

/// Where a job could go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub group: u32,
    /// For gang-wide NVLink: the domain's index in the group ([`crate::index::Group::domains`]).
    pub domain: Option<u32>,
    pub price: Micros,
    pub score: f64,
    /// Members of the job's spread group in the candidate's domain (0 without a spread).
    pub spread: u32,
}

/// Node chosen for some workers: the node, the GPUs taken, how many workers.
pub(crate) type Pick = (u32, u64, u32);

/// The best packing there is, for score bounds.
const PERFECT: Fit = Fit {
    used: 1,
    touched_free: 1,
};

/// Whether a candidate of group `group` with `spread` members and `score` beats `b`.
fn beats(spread: u32, score: f64, group: u32, b: &Candidate) -> bool {
    b.spread
        .cmp(&spread)
        .then(score.total_cmp(&b.score))
        .then(b.group.cmp(&group))
        .is_gt()
}

fn better(a: &Candidate, b: &Option<Candidate>) -> bool {
    b.as_ref().is_none_or(|b| beats(a.spread, a.score, a.group, b))
}

/// Free-count histogram of a domain's unreserved nodes, as job `js` can use them (those
/// in pools it passes, `ok`).
fn domain_counts(fleet: &Fleet, js: &JobSt, ok: &DomainFilter, nodes: &[u32], counts: &mut [u32; SLOTS]) {
    for &n in nodes {
        if fleet.nodes[n as usize].reserved_for.is_none() && ok.admits(fleet, js, n) {
            counts[fleet.usable_free_now(n, js)] += 1;
        }
    }
}

/// The best group for `js`, or `None` when nothing fits now. `only` limits the search to
/// one group (used after preemption); `spread` counts the job's group members per domain.
pub(crate) fn find_best(
    fleet: &Fleet,
    js: &JobSt,
    weights: &Weights,
    only: Option<u32>,
    spread: Option<&SpreadView<'_>>,
) -> Option<Candidate> {
    let reference = if js.max_price == Micros::MAX {
        fleet.max_ask
    } else {
        js.max_price
    };
    let inv_ref = if reference == 0 {
        0.0
    } else {
        1.0 / reference as f64
    };
    let mut best: Option<Candidate> = None;
    let mut counts = [0u32; SLOTS];
    let g = usize::from(js.g);
    let mut visit = |gi: u32, best: &mut Option<Candidate>| {
        let group = &fleet.groups[gi as usize];
        let Some(price) = group.price else { return };
        if price > js.max_price || !js.group_ok(group) {
            return;
        }
        let rep = group.reputation;
        let rank = js.preferred_rank(group.provider);
        let members = spread.map_or(0, |s| s.members(group.provider));
        // Prune: even a perfect fit here would not beat the best so far.
        let bound = score(weights, price, inv_ref, rep, PERFECT, rank);
        if best.as_ref().is_some_and(|b| !beats(members, bound, gi, b)) {
            return;
        }
        let consider = |fit, domain, best: &mut Option<Candidate>| {
            let c = Candidate {
                group: gi,
                domain,
                price,
                score: score(weights, price, inv_ref, rep, fit, rank),
                spread: members,
            };
            if better(&c, best) {
                *best = Some(c);
            }
        };
        if js.interconnect == Interconnect::NvlinkGang {
            // Domains span the group's pools: count their nodes in the pools that pass.
            let ok = DomainFilter::new(fleet, js, group);
            if !ok.any() {
                return;
            }
            for (di, d) in group.domains.iter().enumerate() {
                counts.fill(0);
                domain_counts(fleet, js, &ok, d, &mut counts);
                if let Some(fit) = best_fit(&counts, js.g, js.w) {
                    consider(fit, Some(u32::try_from(di).unwrap_or(u32::MAX)), best);
                }
            }
            return;
        }
        let mut pools = group
            .pools
            .clone()
            .filter(|&p| js.pool_ok(&fleet.pools[p as usize]));
        if !js.plain() && pools.clone().any(|p| !js.gpu_bound(&fleet.pools[p as usize])) {
            // Some node may run out of CPU or memory before GPUs, or the job caps its
            // workers per node: count node by node.
            counts.fill(0);
            for p in pools {
                fleet.add_pool_counts(p, js, &mut counts);
            }
            if let Some(fit) = best_fit(&counts, js.g, js.w) {
                consider(fit, None, best);
            }
            return;
        }
        let Some(first) = pools.next() else { return };
        let slice = |p: u32| {
            let pool = &fleet.pools[p as usize];
            let at = pool.counts_at as usize;
            &fleet.counts[at..=at + usize::from(pool.max_node_gpus)]
        };
        let Some(second) = pools.next() else {
            // One pool (the common case): its bucket sizes, in place.
            if let Some(fit) = best_fit(slice(first), js.g, js.w) {
                consider(fit, None, best);
            }
            return;
        };
        counts.fill(0);
        let mut top = 0;
        for p in [first, second].into_iter().chain(pools) {
            let c = slice(p);
            for k in g..c.len() {
                counts[k] += c[k];
            }
            top = top.max(c.len());
        }
        if top > g
            && let Some(fit) = best_fit(&counts[..top], js.g, js.w)
        {
            consider(fit, None, best);
        }
    };
    // Groups come cheapest ask first and no market price falls below
    // `ask × (1 − discount)`, so once even that price with a perfect reputation and fit
    // cannot beat the best so far, no later group of the list can (without a
    // preferred-provider term, which breaks the order, and unless the best so far shares
    // its domain with members of the job's spread group: a later group may hold fewer).
    let floor = f64::from(10_000 - fleet.market.discount_bp.min(10_000)) / 10_000.0;
    let can_stop = js.preferred.is_empty();
    match only {
        Some(gi) => visit(gi, &mut best),
        None => {
            for &m in &js.models {
                for &gi in &fleet.groups_by_model[usize::from(m)] {
                    if can_stop
                        && let (Some(b), Some(ask)) = (&best, fleet.groups[gi as usize].ask)
                        && b.spread == 0
                    {
                        let cheapest = ask as f64 * floor;
                        let bound = weights.price * (1.0 - (cheapest * inv_ref).min(1.0))
                            + weights.reputation.max(0.0)
                            + weights.packing.max(0.0);
                        if bound < b.score {
                            break;
                        }
                    }
                    visit(gi, &mut best);
                }
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
        let per = fleet.node_workers(n, js).min(*remaining);
        if per > 0 {
            picks.push((n, take(free, per * g), per));
            *remaining -= per;
        }
    };
    let group = &fleet.groups[cand.group as usize];
    if let Some(d) = cand.domain {
        let ok = DomainFilter::new(fleet, js, group);
        let domain = group.domains.get(d as usize).map_or(&[][..], Vec::as_slice);
        let mut nodes: Vec<u32> = domain
            .iter()
            .copied()
            .filter(|&n| fleet.nodes[n as usize].reserved_for.is_none() && ok.admits(fleet, js, n))
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
