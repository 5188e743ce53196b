//! The victims' search: which allocations a preemptor evicts, and on which group.
//!
//! What it finds is defined in [`super::preempt`]; this is how it gets there without
//! trying every group in full for every preemptor:
//!
//! - Allocations are sorted once a round, per provider and per namespace, in the order
//!   victims are tried (the order never changes within a round): a preemptor filters its
//!   provider's instead of collecting and sorting every allocation for each group.
//! - Groups are taken by a lower bound on the GPUs their evictions free
//!   ([`Engine::least_to_free`]), and the search stops at the first whose bound reaches
//!   the best found (with the group as tie-break, as the winner's): no later group can
//!   beat it. Groups where even evicting everything leaves the gang no room are not
//!   searched at all.
//! - Within a group, a [probe](super::probe) keeps the fit up to date victim by victim.
//!
//! `search_tests` checks every answer against the search done the long way.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::Engine;

/// Allocations in the order victims are tried ([`Engine::victim_order`]).
#[derive(Debug, Default)]
pub(super) struct VictimLists {
    /// Per provider index.
    by_provider: Vec<Vec<usize>>,
    /// Per namespace index.
    pub by_ns: Vec<Vec<usize>>,
}

/// What [`Engine::find_victims`] found for a job.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// The GPUs the victims free, their group, and the victims.
    pub best: Option<(u32, u32, Vec<usize>)>,
    /// Victims skipped for a budget, per group that found no room without them: all
    /// that matter when nothing fits (with a best found the search stops early; groups
    /// where even every victim leaves no room are never searched, and what a budget held
    /// back there would have made none either).
    pub held_back: Vec<(u32, usize)>,
}

impl Engine<'_> {
    /// The fewest GPUs evictions must free for job `h` to fit group `gi`, a bound that
    /// holds whichever victims are kept: its gang less the free GPUs of the nodes it may
    /// use there, and a worker's GPUs less the most free on one of them (GPUs that CPU,
    /// memory or a domain keep from a worker count as free: the bound stays low). `None`
    /// when no eviction makes it fit: those nodes, every GPU free, hold fewer workers
    /// than its gang (its victims' search there would try them all for nothing, and so
    /// would a budget's: no budget stood in the way). From the pools' bucket sizes, which
    /// count the unreserved nodes by free GPUs, and their nodes by size.
    fn least_to_free(&self, h: u32, gi: u32) -> Option<u32> {
        let js = &self.jobs[h as usize];
        let fleet = &self.fleet;
        let g = u64::from(js.g);
        let (mut free, mut most, mut room) = (0u64, 0u64, 0u64);
        let pools = fleet.groups[gi as usize]
            .pools
            .clone()
            .map(|p| &fleet.pools[p as usize]);
        for pool in pools.filter(|p| js.pool_ok(p)) {
            for (k, bucket) in (0u64..).zip(&pool.buckets) {
                let nodes = bucket.len() as u64;
                free += k * nodes;
                if nodes > 0 {
                    most = most.max(k);
                }
            }
            room += (0u64..)
                .zip(&pool.size_counts)
                .map(|(k, &c)| u64::from(c) * (k / g))
                .sum::<u64>();
        }
        if room < u64::from(js.w) {
            return None;
        }
        let least = (g * u64::from(js.w))
            .saturating_sub(free)
            .max(g.saturating_sub(most));
        Some(u32::try_from(least).unwrap_or(u32::MAX))
    }

    /// The order victims are tried in: lowest priority, then the latest started, then by
    /// job id — never by position in the snapshot, which follows the operator's cache and
    /// differs between leaders (jobs placed in one round start at the same second).
    pub(super) fn victim_order(&self, a: usize) -> (i32, Reverse<u64>, &str) {
        let al = &self.allocs[a];
        (
            al.priority,
            Reverse(al.start),
            self.snap.running[al.src as usize].job.as_str(),
        )
    }

    /// Allocations in the order victims are tried, per provider and per namespace. The
    /// order never changes within a round, so it is sorted once here rather than for each
    /// group each preemptor tries (a stable sort: equal keys keep the snapshot's order,
    /// as the per-group sort of the filtered allocations did).
    pub(super) fn victim_lists(&self, namespaces: usize) -> VictimLists {
        let mut order: Vec<usize> = (0..self.allocs.len()).collect();
        order.sort_by_key(|&a| self.victim_order(a));
        let mut lists = VictimLists {
            by_provider: vec![Vec::new(); self.fleet.providers.len()],
            by_ns: vec![Vec::new(); namespaces],
        };
        for a in order {
            let al = &self.allocs[a];
            if let Some(l) = lists.by_provider.get_mut(al.provider as usize) {
                l.push(a);
            }
            if let Some(l) = lists.by_ns.get_mut(al.ns as usize) {
                l.push(a);
            }
        }
        lists
    }

    /// The allocations job `h` may evict on `provider`, budgets aside: not being evicted,
    /// of strictly lower priority, and of its namespace unless any may be evicted; in
    /// the order they are tried.
    pub(super) fn candidates(&self, h: u32, provider: u32) -> impl Iterator<Item = usize> + '_ {
        let priority = self.snap.jobs[self.jobs[h as usize].src as usize].priority;
        let ns = self.job_ns[h as usize];
        let any_ns = self.cfg.preempt_across_namespaces;
        let on_provider = self.victims.by_provider.get(provider as usize);
        on_provider.into_iter().flatten().copied().filter(move |&a| {
            let al = &self.allocs[a];
            !al.evicted && al.priority < priority && (any_ns || al.ns == ns)
        })
    }

    /// The groups job `h` may preempt on (its models, its providers, within its price),
    /// each with [`Self::least_to_free`] there, fewest first (then by group); not those
    /// where no eviction makes it fit.
    fn preempt_groups(&self, h: u32) -> Vec<(u32, u32)> {
        let js = &self.jobs[h as usize];
        let mut groups = Vec::new();
        for &m in &js.models {
            for &gi in &self.fleet.groups_by_model[usize::from(m)] {
                let group = &self.fleet.groups[gi as usize];
                let Some(price) = group.price else { continue };
                if js.provider_ok(&self.fleet.providers[group.provider as usize], group.provider)
                    && price <= js.max_price
                    && let Some(least) = self.least_to_free(h, gi)
                {
                    groups.push((least, gi));
                }
            }
        }
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// [`Self::preempt_groups`], for `search_tests` to count where the search's
    /// shortcuts (the early stop, the hopeless groups skipped) fire.
    #[cfg(test)]
    pub(super) fn preempt_groups_for_tests(&self, h: u32) -> Vec<(u32, u32)> {
        self.preempt_groups(h)
    }

    /// The victims to evict for job `h`: on each group it may use, victims are added in
    /// order until it fits, then those it can do without are dropped; the group needing
    /// the fewest evicted GPUs wins (ties to the smaller group).
    pub(super) fn find_victims(&self, h: u32) -> Found {
        let mut found = Found::default();
        for (least, gi) in self.preempt_groups(h) {
            // No eviction there can beat the best found, nor on any group after it (they
            // come by that bound): the search stops.
            if found.best.as_ref().is_some_and(|b| (least, gi) >= (b.0, b.1)) {
                break;
            }
            if let Some((freed, chosen)) = self.victims_in(h, gi, &mut found.held_back)
                && found.best.as_ref().is_none_or(|b| (freed, gi) < (b.0, b.1))
            {
                found.best = Some((freed, gi, chosen));
            }
        }
        found
    }

    /// The victims job `h` needs on group `gi` (see [`Self::find_victims`]) and the GPUs
    /// they free, if evicting there makes it fit. Victims a budget holds back go to
    /// `held_back` unless the job fits without them.
    fn victims_in(&self, h: u32, gi: u32, held_back: &mut Vec<(u32, usize)>) -> Option<(u32, Vec<usize>)> {
        let provider = self.fleet.groups[gi as usize].provider;
        let mut probe = self.probe(h, gi);
        let mut chosen = Vec::new();
        let mut spent: BTreeMap<u32, u32> = BTreeMap::new();
        for v in self.candidates(h, provider) {
            if let Some(b) = self.allocs[v].budget {
                let used = spent.entry(b).or_default();
                if !self.budgets[b as usize].allows(*used + 1) {
                    held_back.push((gi, v));
                    continue;
                }
                *used += 1;
            }
            chosen.push(v);
            self.probe_add(&mut probe, v);
            // Compared only once the unneeded victims are dropped: the GPUs freed so far
            // may count work on nodes the job cannot use, or that a later victim makes
            // unneeded, so they are no bound on what this group needs.
            if self.probe_fits(&probe) {
                held_back.retain(|&(g, _)| g != gi);
                return Some(self.probe_fewest(probe, chosen));
            }
        }
        None
    }
}
