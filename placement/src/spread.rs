//! Soft spread: jobs of one group (scoped by namespace) prefer the provider or region
//! holding the fewest members of their group.
//!
//! Members are the group's running allocations ([`RunningAllocation::spread_group`]) and
//! the group's jobs placed earlier in the same round; an evicted allocation stops
//! counting. The count only orders the feasible candidates (see [`crate::search`]): it
//! never filters one out, so a job whose only fitting domain already hosts its group is
//! still placed there.

use std::collections::BTreeMap;

use crate::index::Fleet;
use crate::snapshot::{Job, RunningAllocation, Snapshot, SpreadDomain};

fn idx(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A job's spread group, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JobSpread {
    pub key: u32,
    pub across: SpreadDomain,
}

/// Members of one group per provider and per region (absent: none).
#[derive(Debug, Default)]
struct Members {
    by_provider: BTreeMap<u32, u32>,
    by_region: BTreeMap<u32, u32>,
}

/// The spread groups of one round and where their members are.
#[derive(Debug, Default)]
pub(crate) struct Spreads<'s> {
    /// (namespace, group) → key; only groups some queued job spreads over.
    keys: BTreeMap<(&'s str, &'s str), u32>,
    members: Vec<Members>,
    /// Region index of each provider (fleet order).
    region_of: Vec<u32>,
}

impl<'s> Spreads<'s> {
    /// The groups of the snapshot's queued jobs, with no members yet.
    pub fn new(snap: &'s Snapshot, fleet: &Fleet) -> Self {
        let mut regions: BTreeMap<&str, u32> = BTreeMap::new();
        let region_of = fleet
            .providers
            .iter()
            .map(|p| {
                let next = idx(regions.len());
                *regions.entry(p.region.as_str()).or_insert(next)
            })
            .collect();
        let mut keys = BTreeMap::new();
        for job in &snap.jobs {
            if let Some(s) = &job.spread {
                let next = idx(keys.len());
                keys.entry((job.namespace.as_str(), s.group.as_str()))
                    .or_insert(next);
            }
        }
        let members = (0..keys.len()).map(|_| Members::default()).collect();
        Spreads {
            keys,
            members,
            region_of,
        }
    }

    /// The spread of a queued job.
    pub fn of_job(&self, job: &Job) -> Option<JobSpread> {
        let s = job.spread.as_ref()?;
        let key = *self.keys.get(&(job.namespace.as_str(), s.group.as_str()))?;
        Some(JobSpread {
            key,
            across: s.across,
        })
    }

    /// The group key of a running allocation, when a queued job shares its group.
    pub fn of_running(&self, r: &RunningAllocation) -> Option<u32> {
        let group = r.spread_group.as_deref()?;
        self.keys.get(&(r.namespace.as_str(), group)).copied()
    }

    /// One more (`add`) or one fewer member of group `key` on `provider`.
    pub fn count(&mut self, key: u32, provider: u32, add: bool) {
        let Some(m) = self.members.get_mut(key as usize) else {
            return;
        };
        let region = self.region_of.get(provider as usize).copied().unwrap_or(u32::MAX);
        for (map, k) in [(&mut m.by_provider, provider), (&mut m.by_region, region)] {
            let n = map.entry(k).or_default();
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        }
    }

    /// What a job of this spread sees.
    pub fn view(&self, s: JobSpread) -> Option<SpreadView<'_>> {
        Some(SpreadView {
            members: self.members.get(s.key as usize)?,
            region_of: &self.region_of,
            across: s.across,
        })
    }
}

/// Member counts of one group, per domain of one job's spread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpreadView<'a> {
    members: &'a Members,
    region_of: &'a [u32],
    across: SpreadDomain,
}

impl SpreadView<'_> {
    /// Members of the group in the domain of `provider`.
    pub fn members(&self, provider: u32) -> u32 {
        let (map, k) = match self.across {
            SpreadDomain::Provider => (&self.members.by_provider, provider),
            SpreadDomain::Region => (
                &self.members.by_region,
                self.region_of.get(provider as usize).copied().unwrap_or(u32::MAX),
            ),
        };
        map.get(&k).copied().unwrap_or(0)
    }
}
