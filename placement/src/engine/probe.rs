//! Whether a job fits one group as victims are added and dropped, kept up to date node
//! by node.
//!
//! [`Engine::fits_with`] counts every node of the group again for each victim tried, and
//! dropping the unneeded ones again rebuilt what every other victim frees: quadratic in
//! the victims, times the group's nodes, for each group and each preemptor. A probe
//! keeps, per unit (the group; for a gang over one NVLink domain, each domain), the
//! workers of the job its nodes hold with what the chosen victims free, and changes only
//! the nodes a victim holds. It counts the nodes [`Engine::fits_with`] counts, each with
//! [`Fleet::usable_free`](crate::index::Fleet::usable_free) of the same extra (CPU and
//! memory summed in the same order), and a unit's histogram fits the gang exactly when
//! its nodes hold that many workers (best fit takes every bucket before it gives up), so
//! it answers the same.

use std::collections::BTreeMap;

use super::Engine;
use crate::nvlink::DomainFilter;
use crate::snapshot::{Interconnect, Resources};

/// What evictions would free on one node: GPUs, and CPU and memory.
type Entry = (u64, Resources);

/// Job `h`'s view of group `gi` with the victims chosen so far evicted.
pub(super) struct Probe {
    h: u32,
    gi: u32,
    /// The group's pools the job passes.
    pools: DomainFilter,
    /// For a gang over one NVLink domain, the domain of each node it may use there.
    domain_of: Option<BTreeMap<u32, usize>>,
    /// Workers of the job each unit holds.
    workers: Vec<u64>,
    /// Units holding the whole gang.
    fitting: usize,
    /// What the chosen victims free, per node they hold (in the group or not).
    extra: BTreeMap<u32, Entry>,
}

impl Engine<'_> {
    /// A probe of job `h` on group `gi` with nothing evicted.
    pub(super) fn probe(&self, h: u32, gi: u32) -> Probe {
        let js = &self.jobs[h as usize];
        let fleet = &self.fleet;
        let group = &fleet.groups[gi as usize];
        let none = Resources::default();
        let g = u64::from(js.g);
        let held = |n: u32| fleet.usable_free(n, js, 0, &none) as u64 / g;
        let filter = DomainFilter::new(fleet, js, group);
        let (domain_of, workers) = if js.interconnect == Interconnect::NvlinkGang {
            let mut domain_of = BTreeMap::new();
            let mut workers = vec![0u64; group.domains.len()];
            for (d, nodes) in group.domains.iter().enumerate() {
                for &n in nodes {
                    if fleet.nodes[n as usize].reserved_for.is_none() && filter.admits(fleet, js, n) {
                        domain_of.insert(n, d);
                        workers[d] += held(n);
                    }
                }
            }
            (Some(domain_of), workers)
        } else {
            let mut workers = 0u64;
            for p in group.pools.clone() {
                let pool = &fleet.pools[p as usize];
                if !js.pool_ok(pool) {
                    continue;
                }
                if js.plain() {
                    // Free GPUs alone decide: the buckets hold the unreserved nodes by them.
                    let by_free = (0u64..).zip(&pool.buckets);
                    workers += by_free.map(|(k, b)| k / g * b.len() as u64).sum::<u64>();
                } else {
                    let free = pool
                        .nodes
                        .iter()
                        .filter(|&&n| fleet.nodes[n as usize].reserved_for.is_none());
                    workers += free.map(|&n| held(n)).sum::<u64>();
                }
            }
            (None, vec![workers])
        };
        let fitting = workers.iter().filter(|&&k| k >= u64::from(js.w)).count();
        Probe {
            h,
            gi,
            pools: filter,
            domain_of,
            workers,
            fitting,
            extra: BTreeMap::new(),
        }
    }

    /// The unit node `n` counts in for the probe's job: for a node of its group, in a
    /// pool it passes, reserved for nobody (the nodes [`Engine::fits_with`] counts).
    fn unit_of(&self, p: &Probe, n: u32) -> Option<usize> {
        if let Some(domains) = &p.domain_of {
            return domains.get(&n).copied();
        }
        let node = &self.fleet.nodes[n as usize];
        let mine = self.fleet.pools[node.pool as usize].group == p.gi;
        let js = &self.jobs[p.h as usize];
        (mine && node.reserved_for.is_none() && p.pools.admits(&self.fleet, js, n)).then_some(0)
    }

    /// Sets what evictions free on node `n`, with what its unit holds.
    fn set_entry(&self, p: &mut Probe, n: u32, entry: Entry) {
        if let Some(u) = self.unit_of(p, n) {
            let js = &self.jobs[p.h as usize];
            let old = p.extra.get(&n).copied().unwrap_or_default();
            let was = self.fleet.usable_free(n, js, old.0, &old.1) as u64 / u64::from(js.g);
            let now = self.fleet.usable_free(n, js, entry.0, &entry.1) as u64 / u64::from(js.g);
            let w = u64::from(js.w);
            let before = p.workers[u] >= w;
            p.workers[u] = p.workers[u] - was + now;
            match (before, p.workers[u] >= w) {
                (false, true) => p.fitting += 1,
                (true, false) => p.fitting -= 1,
                _ => {}
            }
        }
        p.extra.insert(n, entry);
    }

    /// The nodes allocation `v` holds GPUs or CPU and memory on.
    fn nodes_of(&self, v: usize) -> impl Iterator<Item = u32> + '_ {
        let al = &self.allocs[v];
        al.held
            .iter()
            .map(|&(n, _)| n)
            .chain(al.res.iter().map(|&(n, _)| n))
    }

    /// What the victims `chosen` free on node `n`, summed in their order (as
    /// [`Engine::add_extra`] sums them, so saturation rounds alike).
    fn entry_of(&self, chosen: &[usize], n: u32) -> Entry {
        let mut e = Entry::default();
        for &v in chosen {
            let al = &self.allocs[v];
            for &(_, mask) in al.held.iter().filter(|&&(m, _)| m == n) {
                e.0 |= mask;
            }
            for (_, res) in al.res.iter().filter(|&&(m, _)| m == n) {
                e.1 = e.1.plus(res);
            }
        }
        e
    }

    /// Adds victim `v` (the last of the chosen) to the probe.
    pub(super) fn probe_add(&self, p: &mut Probe, v: usize) {
        let al = &self.allocs[v];
        // Each node once, its GPUs and its CPU and memory together (the victims' CPU and
        // memory summed in their order, as `add_extra` sums them).
        for &(n, mask) in &al.held {
            let mut e = p.extra.get(&n).copied().unwrap_or_default();
            e.0 |= mask;
            if let Some((_, res)) = al.res.iter().find(|&&(m, _)| m == n) {
                e.1 = e.1.plus(res);
            }
            self.set_entry(p, n, e);
        }
        for &(n, res) in &al.res {
            if al.held.iter().all(|&(m, _)| m != n) {
                let mut e = p.extra.get(&n).copied().unwrap_or_default();
                e.1 = e.1.plus(&res);
                self.set_entry(p, n, e);
            }
        }
    }

    /// Whether the probe's job fits its group now (in one of its domains, for a gang
    /// over one NVLink domain).
    pub(super) fn probe_fits(&self, p: &Probe) -> bool {
        p.fitting > 0
    }

    /// Victims added in order until the probe's job fits may include some it does not
    /// need: work on another model's nodes, or on nodes whose other GPUs stay held. On a
    /// probe holding `chosen`, drops each whose eviction the job can do without, the last
    /// added (highest priority) first, as kube-scheduler's preemption does; returns the
    /// GPUs the rest free, and the rest.
    pub(super) fn probe_fewest(&self, mut p: Probe, mut chosen: Vec<usize>) -> (u32, Vec<usize>) {
        for i in (0..chosen.len()).rev() {
            let v = chosen.remove(i);
            let mut nodes: Vec<u32> = self.nodes_of(v).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let before: Vec<Entry> = nodes
                .iter()
                .map(|n| p.extra.get(n).copied().unwrap_or_default())
                .collect();
            for &n in &nodes {
                let e = self.entry_of(&chosen, n);
                self.set_entry(&mut p, n, e);
            }
            if !self.probe_fits(&p) {
                for (&n, e) in nodes.iter().zip(before) {
                    self.set_entry(&mut p, n, e);
                }
                chosen.insert(i, v);
            }
        }
        let freed = chosen
            .iter()
            .map(|&v| {
                self.allocs[v]
                    .held
                    .iter()
                    .map(|&(_, m)| m.count_ones())
                    .sum::<u32>()
            })
            .sum();
        (freed, chosen)
    }
}
