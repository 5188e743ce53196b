//! Preemption: a blocked job that asks for it may evict running allocations of strictly
//! lower priority — of its own namespace only, unless the config allows any namespace.
//! Allocations already being evicted (marked by an earlier round) are never chosen again.
//!
//! Per candidate group, victims on that provider are added lowest priority first,
//! youngest first, until the job fits; the group needing the fewest evicted GPUs wins
//! (ties to the smaller group). Evictions are whole allocations. GPUs freed but not used
//! by the job stay unavailable this round (they are still busy until the eviction).
//! A spread does not steer the choice of group here (a blocked job takes the cheapest
//! eviction); evicted members of its group stop counting and the job, once placed, counts.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::Engine;
use crate::decision::Eviction;
use crate::score::best_fit;
use crate::search::find_best;
use crate::snapshot::{Interconnect, MAX_GPUS_PER_NODE};

impl Engine<'_> {
    /// Whether job `h` fits group `gi` if `extra` GPUs were free too.
    fn fits_with(&self, h: u32, gi: u32, extra: &BTreeMap<u32, u64>) -> bool {
        let js = &self.jobs[h as usize];
        let fleet = &self.fleet;
        let group = &fleet.groups[gi as usize];
        let pools = group
            .pools
            .clone()
            .map(|p| &fleet.pools[p as usize])
            .filter(|p| js.pool_ok(p));
        let units: Vec<&[u32]> = if js.interconnect == Interconnect::NvlinkGang {
            pools.flat_map(|p| p.domains.iter().map(Vec::as_slice)).collect()
        } else {
            pools.map(|p| p.nodes.as_slice()).collect()
        };
        let mut counts = [0u32; MAX_GPUS_PER_NODE as usize + 1];
        let per_unit = js.interconnect == Interconnect::NvlinkGang;
        for unit in units {
            for &n in unit {
                let node = &fleet.nodes[n as usize];
                if node.reserved_for.is_none() {
                    let free = node.free | extra.get(&n).copied().unwrap_or(0);
                    counts[free.count_ones() as usize] += 1;
                }
            }
            if per_unit {
                if best_fit(&counts, js.g, js.w).is_some() {
                    return true;
                }
                counts.fill(0);
            }
        }
        !per_unit && best_fit(&counts, js.g, js.w).is_some()
    }

    /// Whether job `h` may evict anything: preemption is on and the job asks for it.
    pub(super) fn may_preempt(&self, h: u32) -> bool {
        self.cfg.preemption && self.snap.jobs[self.jobs[h as usize].src as usize].preempt
    }

    /// What decides the victims a job may choose, for the failed-shape memo: `None` for a
    /// job that never preempts.
    pub(super) fn victims_key(&self, job: &crate::snapshot::Job, ns: u32) -> Option<(i32, Option<u32>)> {
        (self.cfg.preemption && job.preempt)
            .then_some((job.priority, (!self.cfg.preempt_across_namespaces).then_some(ns)))
    }

    /// Places job `h` by evicting lower-priority work, if that makes it fit.
    pub(super) fn try_preempt(&mut self, h: u32) -> bool {
        let js = &self.jobs[h as usize];
        let priority = self.snap.jobs[js.src as usize].priority;
        let ns = self.job_ns[h as usize];
        let any_ns = self.cfg.preempt_across_namespaces;
        let mut best: Option<(u32, u32, Vec<usize>)> = None;
        for &m in &js.models {
            for &gi in &self.fleet.groups_by_model[usize::from(m)] {
                let group = &self.fleet.groups[gi as usize];
                let Some(price) = group.price else { continue };
                if !js.provider_ok(&self.fleet.providers[group.provider as usize], group.provider)
                    || price > js.max_price
                {
                    continue;
                }
                let mut victims: Vec<usize> = (0..self.allocs.len())
                    .filter(|&a| {
                        let al = &self.allocs[a];
                        !al.evicted
                            && al.provider == group.provider
                            && al.priority < priority
                            && (any_ns || al.ns == ns)
                    })
                    .collect();
                victims.sort_by_key(|&a| {
                    let al = &self.allocs[a];
                    (al.priority, Reverse(al.start), al.src)
                });
                let mut extra: BTreeMap<u32, u64> = BTreeMap::new();
                let mut freed = 0u32;
                for (i, &v) in victims.iter().enumerate() {
                    for &(n, mask) in &self.allocs[v].held {
                        *extra.entry(n).or_default() |= mask;
                        freed += mask.count_ones();
                    }
                    if best.as_ref().is_some_and(|b| freed >= b.0) {
                        break;
                    }
                    if self.fits_with(h, gi, &extra) {
                        best = Some((freed, gi, victims[..=i].to_vec()));
                        break;
                    }
                }
            }
        }
        let Some((_, gi, victims)) = best else {
            return false;
        };
        let mut freed: Vec<(u32, u64)> = Vec::new();
        for &v in &victims {
            self.allocs[v].evicted = true;
            if let Some(key) = self.allocs[v].spread {
                self.spreads.count(key, self.allocs[v].provider, false);
            }
            let held = self.allocs[v].held.clone();
            for &(n, mask) in &held {
                let free = self.fleet.nodes[n as usize].free | mask;
                self.fleet.set_free(n, free);
                let model = self.node_model(n);
                self.queue
                    .charge(self.allocs[v].ns, model, -i64::from(mask.count_ones()));
            }
            freed.extend(held);
        }
        let js = &self.jobs[h as usize];
        let spread = self.job_spread[h as usize].and_then(|s| self.spreads.view(s));
        let Some(cand) = find_best(&self.fleet, js, &self.cfg.weights, Some(gi), spread.as_ref()) else {
            // Cannot happen (fits_with said yes); undo so nothing is evicted for nothing.
            for &v in &victims {
                self.allocs[v].evicted = false;
                if let Some(key) = self.allocs[v].spread {
                    self.spreads.count(key, self.allocs[v].provider, true);
                }
                let ns = self.allocs[v].ns;
                for (n, mask) in self.allocs[v].held.clone() {
                    let free = self.fleet.nodes[n as usize].free & !mask;
                    self.fleet.set_free(n, free);
                    self.queue
                        .charge(ns, self.node_model(n), i64::from(mask.count_ones()));
                }
            }
            return false;
        };
        let for_job = self.snap.jobs[js.src as usize].id.clone();
        let mut evicts = Vec::new();
        for &v in &victims {
            let r = &self.snap.running[self.allocs[v].src as usize];
            evicts.push(r.job.clone());
            self.out.evictions.push(Eviction {
                job: r.job.clone(),
                provider: r.provider.clone(),
                for_job: for_job.clone(),
            });
        }
        self.commit(h, cand, evicts);
        for (n, mask) in freed {
            let free = self.fleet.nodes[n as usize].free & !mask;
            self.fleet.set_free(n, free);
        }
        true
    }
}
