//! Pure: CPU, memory and extended resources for the engine — what one worker of a job
//! requests, and what each node of a provider has free beside its GPUs.
//!
//! A member reports, per GPU node, its allocatable CPU and memory and the requests of the
//! pods bound there that are not gpufed's workers ([`crate::fleet::NodeCpuMemory`]).
//! gpufed's own are counted here: a live attempt by its placement (its pods may not exist
//! yet) — each of its workers on a node holds that job's per-worker requests there — and
//! a worker pod of an attempt no longer live by the requests it reports, as its GPUs are.
//! Every reported number is bounded first ([`crate::fleet::CpuMemory::bounded`]) and
//! every sum saturates.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_api::ComputeJobSpec;
use gpufed_placement as pl;

use crate::fleet::GpuNode;
use crate::fleet::extended::{self, Extended};

/// The extended resources the engine counts this round, slot by slot
/// ([`pl::Snapshot::extended_resources`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots(Vec<String>);

impl Slots {
    /// The extended resources the workers of queued jobs ask for (`asks`, a job each),
    /// those most jobs ask for first (ties by name), at most [`pl::EXTENDED_SLOTS`]; none
    /// of `gpu_resources` (the hub counts GPUs itself). A job asking for one left out is
    /// placed as if it did not ask for it (its attempt ends at `startTimeout` where the
    /// member lacks it).
    pub fn choose<'a>(asks: impl IntoIterator<Item = &'a Ask>, gpu_resources: &BTreeSet<&str>) -> Slots {
        let mut jobs: BTreeMap<&str, usize> = BTreeMap::new();
        for ask in asks {
            for name in ask.extended.keys() {
                if !gpu_resources.contains(name.as_str()) {
                    *jobs.entry(name).or_default() += 1;
                }
            }
        }
        let mut names: Vec<(usize, &str)> = jobs.into_iter().map(|(n, c)| (c, n)).collect();
        names.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        Slots(
            names
                .into_iter()
                .take(pl::EXTENDED_SLOTS)
                .map(|(_, n)| n.to_owned())
                .collect(),
        )
    }

    /// The names, slot by slot.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// `ext` by slot, each bounded ([`extended::MAX_AMOUNT`]: a pull-mode report arrives
    /// as sent); a name it lacks is `absent`, an unused slot 0.
    fn fill(&self, ext: &Extended, absent: u64) -> [u64; pl::EXTENDED_SLOTS] {
        let mut out = [0; pl::EXTENDED_SLOTS];
        for (slot, name) in out.iter_mut().zip(&self.0) {
            *slot = ext.get(name).map_or(absent, |&n| n.min(extended::MAX_AMOUNT));
        }
        out
    }

    /// Every slot unlimited: a node whose member does not report extended resources.
    fn unlimited(&self) -> [u64; pl::EXTENDED_SLOTS] {
        self.fill(&Extended::new(), u64::MAX)
    }
}

/// What one worker of a job requests, read from its template once: the CPU, memory and
/// extended resources of the worker pod [`crate::job::build::build`] makes
/// ([`crate::job::build::worker_request_pod`]), memory rounded up to whole MiB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// CPU, memory and storage (no extended slots).
    pub resources: pl::Resources,
    /// Extended resources by name.
    pub extended: Extended,
}

impl Ask {
    /// What a worker of `spec` asks for.
    pub fn of(spec: &ComputeJobSpec) -> Ask {
        let pod = crate::job::build::worker_request_pod(spec);
        Ask {
            resources: crate::fleet::requests::pod_requests(&pod).rounded_up().request(),
            extended: extended::pod_requests(&pod, ""),
        }
    }

    /// As the engine counts it this round.
    pub fn engine(&self, slots: &Slots) -> pl::Resources {
        pl::Resources {
            extended: slots.fill(&self.extended, 0),
            ..self.resources
        }
    }
}

/// CPU and memory gpufed's workers hold on a provider's nodes, by node name.
#[derive(Debug, Default)]
pub(super) struct Held(BTreeMap<String, pl::Resources>);

impl Held {
    /// Counts `r` more on `node`.
    pub(super) fn add(&mut self, node: &str, r: pl::Resources) {
        if r.is_zero() {
            return;
        }
        let held = self.0.entry(node.to_owned()).or_default();
        *held = held.plus(&r);
    }

    /// Counts a reported worker pod's requests `r` and extended resources `ext` on `node`.
    pub(super) fn add_pod(&mut self, node: &str, r: &crate::fleet::CpuMemory, ext: &Extended, slots: &Slots) {
        let mut r = r.request();
        r.extended = slots.fill(ext, 0);
        self.add(node, r);
    }

    /// Node `n`'s CPU, memory and extended resources for the engine: its allocatable,
    /// and free what neither the member's other pods nor gpufed's workers hold. `None`
    /// when it reports none.
    pub(super) fn node(&self, n: &GpuNode, slots: &Slots) -> Option<pl::NodeResources> {
        let reported = n.resources.as_ref()?;
        let mut allocatable = reported.allocatable.capacity();
        let mut requested = reported.requested.request();
        match &reported.extended {
            None => allocatable.extended = slots.unlimited(),
            Some(e) => {
                allocatable.extended = slots.fill(&e.allocatable, 0);
                requested.extended = slots.fill(&e.requested, 0);
            }
        }
        let ours = self.0.get(&n.name).copied().unwrap_or_default();
        let used = requested.plus(&ours);
        Some(pl::NodeResources {
            allocatable,
            free: allocatable.minus(&used),
        })
    }
}

/// What a live attempt's workers hold per node: `per_worker` times its workers there.
pub(super) fn by_node<'a>(
    nodes: impl IntoIterator<Item = &'a str>,
    per_worker: pl::Resources,
) -> BTreeMap<String, pl::Resources> {
    let mut out: BTreeMap<String, pl::Resources> = BTreeMap::new();
    if per_worker.is_zero() {
        return out;
    }
    for node in nodes {
        let held = out.entry(node.to_owned()).or_default();
        *held = held.plus(&per_worker);
    }
    out
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
