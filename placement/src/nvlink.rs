//! NVLink domains for gang-wide NVLink jobs.
//!
//! A domain is a group's (one provider, one model): the nodes of one NVLink fabric may
//! sit in several of the group's pools, which split on verification, selectable labels,
//! VRAM, capability and extended resources. A domain counts for a job with those of its
//! nodes whose pool passes the job's pool filters — as a node-by-node check would — in
//! the search, the choice of nodes, reservations, preemption and explanations alike.

use crate::filter::JobSt;
use crate::index::{Fleet, Group};

/// Which of a group's pools a job passes, to test a domain's nodes one by one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DomainFilter {
    /// The group's first pool.
    start: u32,
    /// Bit `i`: pool `start + i` passes (the first 64 pools; a group with more, rare,
    /// asks [`JobSt::pool_ok`] for the others node by node).
    mask: u64,
    /// Some pool of the group passes.
    any: bool,
}

impl DomainFilter {
    /// The filter of job `js` over `group`'s pools.
    pub fn new(fleet: &Fleet, js: &JobSt, group: &Group) -> Self {
        let (mut mask, mut any) = (0u64, false);
        for p in group.pools.clone() {
            if js.pool_ok(&fleet.pools[p as usize]) {
                any = true;
                if let Some(bit) = 1u64.checked_shl(p.wrapping_sub(group.pools.start)) {
                    mask |= bit;
                }
            }
        }
        DomainFilter {
            start: group.pools.start,
            mask,
            any,
        }
    }

    /// Whether some pool of the group passes (else none of its domains' nodes do).
    #[inline]
    pub fn any(&self) -> bool {
        self.any
    }

    /// Whether job `js` may use node `n` (of this filter's group): its pool passes.
    #[inline]
    pub fn admits(&self, fleet: &Fleet, js: &JobSt, n: u32) -> bool {
        let pool = fleet.nodes[n as usize].pool;
        match 1u64.checked_shl(pool.wrapping_sub(self.start)) {
            Some(bit) => self.mask & bit != 0,
            None => js.pool_ok(&fleet.pools[pool as usize]),
        }
    }

    /// The nodes of `domain` job `js` may use.
    pub fn nodes(&self, fleet: &Fleet, js: &JobSt, domain: &[u32]) -> Vec<u32> {
        domain
            .iter()
            .copied()
            .filter(|&n| self.admits(fleet, js, n))
            .collect()
    }
}

/// The domains of the groups of `pools` (sorted, as the explanation path narrows them),
/// each with its nodes in `pools`: what a domain offers a job once the pools it fails are
/// left out.
pub(crate) fn domains_among<'a>(fleet: &'a Fleet, pools: &'a [u32]) -> impl Iterator<Item = Vec<u32>> + 'a {
    let mut groups: Vec<u32> = pools.iter().map(|&p| fleet.pools[p as usize].group).collect();
    // Sorted as `pools` is (ascending groups, each a range of pools): equal ones adjoin.
    groups.dedup();
    groups
        .into_iter()
        .flat_map(|g| fleet.groups[g as usize].domains.iter())
        .map(|d| {
            d.iter()
                .copied()
                .filter(|&n| pools.binary_search(&fleet.nodes[n as usize].pool).is_ok())
                .collect()
        })
}
