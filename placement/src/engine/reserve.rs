//! Reservations: a gang that fits the fleet but not its free GPUs holds nodes, so that
//! smaller jobs behind it backfill only elsewhere and it cannot starve.
//!
//! The nodes chosen are those with the most free GPUs now, in the group (or NVLink
//! domain) where the gang would start soonest; they leave the buckets and drain as their
//! running work ends. A reservation is handed back in [`crate::Decisions::reservations`]
//! and honoured by the next round when passed in [`crate::Snapshot::reservations`].

use std::cmp::Reverse;

use super::Engine;
use crate::explain::{Explanation, Reason};
use crate::filter::JobSt;
use crate::index::Fleet;
use crate::nvlink::DomainFilter;
use crate::snapshot::Interconnect;

impl Engine<'_> {
    /// Reserves nodes for blocked job `h` if it would fit an emptier fleet. Returns
    /// whether a new reservation was planned and none could be found (`skip_plan` skips
    /// planning, known to fail).
    pub(super) fn maybe_reserve(
        &mut self,
        h: u32,
        held: Option<Vec<u32>>,
        expl: &Explanation,
        skip_plan: bool,
    ) -> bool {
        if self.cfg.max_reservations == 0 {
            return false;
        }
        let fits_when_drained = matches!(expl, Explanation::NoFit { reasons, .. }
            if reasons.iter().any(|(r, _)| matches!(r, Reason::Busy { .. } | Reason::NodeResourcesBusy { .. } | Reason::Reserved | Reason::Protected { .. })));
        if !fits_when_drained {
            return false;
        }
        let js = &self.jobs[h as usize];
        if let Some(mut nodes) = held {
            let fleet = &self.fleet;
            // Only nodes the job may still use are held again. A carried reservation may
            // name others (its provider stopped admitting the job's namespace, went
            // unhealthy, a node lost its verification: `load_reservations` left those out)
            // and placements earlier in this round may have raised the group's price past
            // the job's ceiling. Held anyway, they would idle round after round for a job
            // that never starts there, and keep the others off them.
            nodes.retain(|&n| usable(fleet, js, n));
            let cap: u32 = nodes.iter().map(|&n| fleet.node_capacity(n, js)).sum();
            if cap >= u32::from(js.w)
                && nodes
                    .iter()
                    .all(|&n| fleet.nodes[n as usize].reserved_for.is_none())
            {
                for &n in &nodes {
                    self.fleet.reserve(n, h);
                }
                self.reserved.insert(h, nodes);
                return false;
            }
        }
        if skip_plan || self.reserved.len() >= self.cfg.max_reservations {
            return false;
        }
        let Some(nodes) = self.plan_reservation(h) else {
            return true;
        };
        // Nodes held for work that `h` outranks: that reservation is released whole. Those
        // of its nodes `h` does not take come back to the buckets: jobs that failed earlier
        // in the round may fit now, so their memoised failures go (as in `step`).
        for &n in &nodes {
            if let Some(j) = self.fleet.nodes[n as usize].reserved_for {
                for m in self.reserved.remove(&j).into_iter().flatten() {
                    self.fleet.unreserve(m);
                    if !nodes.contains(&m) {
                        self.memo.invalidate();
                    }
                }
            }
        }
        for &n in &nodes {
            self.fleet.reserve(n, h);
        }
        self.reserved.insert(h, nodes);
        false
    }

    /// Whether blocked job `h` may take over the nodes reserved for job `j`: `h` has the
    /// higher priority, or the same and was submitted earlier (ties by id). Reservations
    /// so go to the oldest blocked work of each priority: a stream of younger jobs that
    /// each reserve a node as it drains cannot keep an older gang that needs several of
    /// them from ever holding them all (found by the `no_starvation` property).
    pub(super) fn outranks(&self, h: u32, j: u32) -> bool {
        let job = |x: u32| &self.snap.jobs[self.jobs[x as usize].src as usize];
        let (a, b) = (job(h), job(j));
        (Reverse(a.priority), a.submit_time, &a.id) < (Reverse(b.priority), b.submit_time, &b.id)
    }

    /// Whether `h` outranks a job that holds a reservation now (a plan that failed for
    /// an equal shape may then succeed for `h`).
    pub(super) fn outranks_a_holder(&self, h: u32) -> bool {
        self.reserved.keys().any(|&j| j != h && self.outranks(h, j))
    }

    /// The nodes that would hold job `h` once drained, where it would start soonest (most
    /// GPUs free now; ties to the smaller group): unreserved ones, or held for work `h`
    /// outranks ([`Self::outranks`]) where the unreserved do not suffice.
    fn plan_reservation(&self, h: u32) -> Option<Vec<u32>> {
        let js = &self.jobs[h as usize];
        let fleet = &self.fleet;
        let w = u32::from(js.w);
        let mut best: Option<(u32, Vec<u32>)> = None;
        for &m in &js.models {
            for &gi in &fleet.groups_by_model[usize::from(m)] {
                let group = &fleet.groups[gi as usize];
                let Some(price) = group.price else { continue };
                if !js.provider_ok(&fleet.providers[group.provider as usize], group.provider)
                    || price > js.max_price
                {
                    continue;
                }
                let units: Vec<Vec<u32>> = if js.interconnect == Interconnect::NvlinkGang {
                    // A domain spans the group's pools: its nodes in those that pass.
                    let ok = DomainFilter::new(fleet, js, group);
                    group.domains.iter().map(|d| ok.nodes(fleet, js, d)).collect()
                } else {
                    let pools = group
                        .pools
                        .clone()
                        .map(|p| &fleet.pools[p as usize])
                        .filter(|p| js.pool_ok(p));
                    vec![pools.flat_map(|p| p.nodes.iter().copied()).collect()]
                };
                for mut unit in units {
                    unit.retain(|&n| {
                        let node = &fleet.nodes[n as usize];
                        node.reserved_for.is_none_or(|j| j != h && self.outranks(h, j))
                            && fleet.node_capacity(n, js) > 0
                    });
                    // Unreserved nodes first: take over others' only where needed.
                    unit.sort_by_key(|&n| {
                        let node = &fleet.nodes[n as usize];
                        (node.reserved_for.is_some(), Reverse(fleet.node_workers(n, js)), n)
                    });
                    let (mut cap, mut free_now, mut take) = (0u32, 0u32, 0usize);
                    for &n in &unit {
                        if cap >= w {
                            break;
                        }
                        cap += fleet.node_capacity(n, js);
                        free_now += fleet.node_workers(n, js);
                        take += 1;
                    }
                    if cap >= w && best.as_ref().is_none_or(|(f, _)| free_now > *f) {
                        unit.truncate(take);
                        best = Some((free_now, unit));
                    }
                }
            }
        }
        best.map(|(_, nodes)| nodes)
    }
}

/// Whether job `js` may use node `n` at all, busy or not: the filters
/// [`Engine::plan_reservation`] applies to the groups and pools it chooses from.
pub(super) fn usable(fleet: &Fleet, js: &JobSt, n: u32) -> bool {
    let pool = &fleet.pools[fleet.nodes[n as usize].pool as usize];
    let group = &fleet.groups[pool.group as usize];
    js.models.binary_search(&group.model).is_ok()
        && group.price.is_some_and(|p| p <= js.max_price)
        && js.provider_ok(&fleet.providers[group.provider as usize], group.provider)
        && js.pool_ok(pool)
}
