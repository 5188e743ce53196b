//! Preemption: a blocked job that asks for it may evict running allocations of strictly
//! lower priority — of its own namespace only, unless the config allows any namespace.
//! Allocations already being evicted (marked by an earlier round) are never chosen again.
//!
//! Per candidate group, victims on that provider are added lowest priority first,
//! youngest first (then by job id), until the job fits; then each the job can do without
//! is dropped again, the last added first (work on another model's nodes, on nodes it
//! cannot use, or more than it needs). The group needing the fewest evicted GPUs wins
//! (ties to the smaller group); see [`super::victims`] for how the search gets there
//! quickly. Evictions are whole allocations. GPUs freed but not used
//! by the job stay unavailable this round (they are still busy until the eviction), and so
//! do the victims' CPU and memory: a node's free CPU and memory count them until they stop.
//! A spread does not steer the choice of group here (a blocked job takes the cheapest
//! eviction); evicted members of its group stop counting and the job, once placed, counts.
//!
//! Disruption budgets are hard: a victim that counts toward a budget is skipped when
//! evicting it (with the others chosen this round) would leave fewer healthy than the
//! budget's minimum. A job that could have made room only by breaking a budget is told so
//! ([`Reason::Protected`](crate::Reason)) on the providers concerned.

use std::collections::BTreeMap;

use super::Engine;
use super::victims::Found;
use crate::decision::Eviction;
use crate::nvlink::DomainFilter;
use crate::resources::{SLOTS, Saved};
use crate::score::best_fit;
use crate::search::find_best;
use crate::snapshot::{Interconnect, Resources};

/// What evictions would free per node: GPUs, and CPU and memory.
pub(super) type Extra = BTreeMap<u32, (u64, Resources)>;

/// What [`Engine::evict_all`] did: the GPUs it freed per node, and the victims' nodes as
/// they were.
pub(super) struct Evicted {
    freed: Vec<(u32, u64)>,
    saved: Saved,
}

impl Engine<'_> {
    /// Whether job `h` fits group `gi` if `extra` were free too.
    pub(super) fn fits_with(&self, h: u32, gi: u32, extra: &Extra) -> bool {
        let js = &self.jobs[h as usize];
        let fleet = &self.fleet;
        let group = &fleet.groups[gi as usize];
        let per_unit = js.interconnect == Interconnect::NvlinkGang;
        // A domain spans the group's pools: only its nodes in those that pass count.
        let domains = per_unit.then(|| DomainFilter::new(fleet, js, group));
        let units: Vec<&[u32]> = if per_unit {
            group.domains.iter().map(Vec::as_slice).collect()
        } else {
            group
                .pools
                .clone()
                .map(|p| &fleet.pools[p as usize])
                .filter(|p| js.pool_ok(p))
                .map(|p| p.nodes.as_slice())
                .collect()
        };
        let mut counts = [0u32; SLOTS];
        for unit in units {
            for &n in unit {
                let node = &fleet.nodes[n as usize];
                if node.reserved_for.is_none() && domains.is_none_or(|ok| ok.admits(fleet, js, n)) {
                    let (gpus, res) = extra.get(&n).copied().unwrap_or_default();
                    counts[fleet.usable_free(n, js, gpus, &res)] += 1;
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

    /// Adds what evicting allocation `v` frees to `extra`; returns its GPUs.
    pub(super) fn add_extra(&self, v: usize, extra: &mut Extra) -> u32 {
        let al = &self.allocs[v];
        for &(n, mask) in &al.held {
            extra.entry(n).or_default().0 |= mask;
        }
        for &(n, res) in &al.res {
            let e = extra.entry(n).or_default();
            e.1 = e.1.plus(&res);
        }
        al.held.iter().map(|&(_, m)| m.count_ones()).sum()
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

    /// Places job `h` by evicting lower-priority work, if that makes it fit. Otherwise
    /// says on which providers only disruption budgets stood in the way (and whose).
    pub(super) fn try_preempt(&mut self, h: u32) -> Result<(), BTreeMap<u32, String>> {
        let Found { best, held_back } = self.find_victims(h);
        let Some((_, gi, victims)) = best else {
            return Err(self.protected_room(h, &held_back));
        };
        let evicted = self.evict_all(&victims);
        let js = &self.jobs[h as usize];
        let spread = self.job_spread[h as usize].and_then(|s| self.spreads.view(s));
        let Some(cand) = find_best(&self.fleet, js, &self.cfg.weights, Some(gi), spread.as_ref()) else {
            // Cannot happen (the probe said it fits); undo so nothing is evicted for nothing.
            self.unevict_all(&victims, evicted);
            return Err(BTreeMap::new());
        };
        self.commit_evicting(h, cand, &victims, evicted);
        Ok(())
    }

    /// Marks `victims` evicted and frees their GPUs, CPU and memory for the job deciding
    /// now; returns what [`Self::unevict_all`] and [`Self::commit_evicting`] need.
    pub(super) fn evict_all(&mut self, victims: &[usize]) -> Evicted {
        let nodes = victims.iter().flat_map(|&v| {
            let al = &self.allocs[v];
            al.held
                .iter()
                .map(|&(n, _)| n)
                .chain(al.res.iter().map(|&(n, _)| n))
        });
        let saved = self.fleet.save(nodes);
        let mut freed: Vec<(u32, u64)> = Vec::new();
        for &v in victims {
            self.allocs[v].evicted = true;
            if let Some(b) = self.allocs[v].budget {
                self.budgets[b as usize].healthy -= 1;
            }
            if let Some(key) = self.allocs[v].spread {
                self.spreads.count(key, self.allocs[v].provider, false);
            }
            for (n, res) in self.allocs[v].res.clone() {
                self.fleet.give_resources(n, &res);
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
        Evicted { freed, saved }
    }

    /// Undoes [`Self::evict_all`] when the job found no place after all (or only probed):
    /// exactly, the victims' nodes as they were, their free CPU and memory included.
    pub(super) fn unevict_all(&mut self, victims: &[usize], evicted: Evicted) {
        for &v in victims {
            self.allocs[v].evicted = false;
            if let Some(b) = self.allocs[v].budget {
                self.budgets[b as usize].healthy += 1;
            }
            if let Some(key) = self.allocs[v].spread {
                self.spreads.count(key, self.allocs[v].provider, true);
            }
            let ns = self.allocs[v].ns;
            for (n, res) in self.allocs[v].res.clone() {
                self.fleet.take_resources(n, &res);
            }
            for (n, mask) in self.allocs[v].held.clone() {
                let free = self.fleet.nodes[n as usize].free & !mask;
                self.fleet.set_free(n, free);
                self.queue
                    .charge(ns, self.node_model(n), i64::from(mask.count_ones()));
            }
        }
        self.fleet.restore(evicted.saved);
    }

    /// Commits job `h` on `cand` with the evictions of `victims`; the GPUs they free
    /// that the job does not take stay busy this round (they are until the victims stop).
    pub(super) fn commit_evicting(
        &mut self,
        h: u32,
        cand: crate::search::Candidate,
        victims: &[usize],
        evicted: Evicted,
    ) {
        let for_job = self.snap.jobs[self.jobs[h as usize].src as usize].id.clone();
        let mut evicts = Vec::new();
        for &v in victims {
            let r = &self.snap.running[self.allocs[v].src as usize];
            evicts.push(r.job.clone());
            self.out.evictions.push(Eviction {
                job: r.job.clone(),
                provider: r.provider.clone(),
                for_job: for_job.clone(),
            });
        }
        let before: Vec<Resources> = evicted
            .saved
            .avail()
            .iter()
            .map(|&(n, _)| self.fleet.nodes[n as usize].avail)
            .collect();
        self.commit(h, cand, evicts);
        for (n, mask) in evicted.freed {
            let free = self.fleet.nodes[n as usize].free & !mask;
            self.fleet.set_free(n, free);
        }
        // So do their CPU and memory: each of their nodes has what it had before the
        // evictions, less what the job took there. (Not the victims' requests taken again:
        // given back capped at what the node has, that would leave less than it had.)
        for (&(n, had), before) in evicted.saved.avail().iter().zip(before) {
            let took = before.minus(&self.fleet.nodes[n as usize].avail);
            self.fleet.nodes[n as usize].avail = had.minus(&took);
            self.fleet.note_headroom(n);
        }
    }

    /// The providers where the victims a budget held back (`held_back`, per group) would
    /// have made room for job `h`, with those budgets' keys.
    pub(super) fn protected_room(&self, h: u32, held_back: &[(u32, usize)]) -> BTreeMap<u32, String> {
        let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for &(gi, v) in held_back {
            groups.entry(gi).or_default().push(v);
        }
        let mut out: BTreeMap<u32, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for (gi, kept) in groups {
            let provider = self.fleet.groups[gi as usize].provider;
            // Everything the job may evict there, the held-back victims included.
            let mut extra = Extra::new();
            for v in self.candidates(h, provider) {
                self.add_extra(v, &mut extra);
            }
            if self.fits_with(h, gi, &extra) {
                let keys = out.entry(provider).or_default();
                keys.extend(
                    kept.iter()
                        .filter_map(|&v| self.allocs[v].budget)
                        .map(|b| self.budgets[b as usize].key),
                );
            }
        }
        out.into_iter()
            .map(|(p, keys)| (p, keys.into_iter().collect::<Vec<_>>().join(", ")))
            .collect()
    }
}
