//! Pure: CPU and memory for the engine — what one worker of a job requests, and what
//! each node of a provider has free beside its GPUs.
//!
//! A member reports, per GPU node, its allocatable CPU and memory and the requests of the
//! pods bound there that are not gpufed's workers ([`crate::fleet::NodeCpuMemory`]).
//! gpufed's own are counted here: a live attempt by its placement (its pods may not exist
//! yet) — each of its workers on a node holds that job's per-worker requests there — and
//! a worker pod of an attempt no longer live by the requests it reports, as its GPUs are.
//! Every reported number is bounded first ([`crate::fleet::CpuMemory::bounded`]) and
//! every sum saturates.

use std::collections::BTreeMap;

use gpufed_api::ComputeJobSpec;
use gpufed_placement as pl;

use crate::fleet::GpuNode;

/// The CPU and memory one worker of a job requests: those of the worker pod
/// [`crate::job::build::build`] makes ([`crate::job::build::worker_requests`]), memory
/// rounded up to whole MiB.
pub fn worker_resources(spec: &ComputeJobSpec) -> pl::Resources {
    crate::job::build::worker_requests(spec).rounded_up().request()
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

    /// Node `n`'s CPU and memory for the engine: its allocatable, and free what neither
    /// the member's other pods nor gpufed's workers hold. `None` when it reports none.
    pub(super) fn node(&self, n: &GpuNode) -> Option<pl::NodeResources> {
        let reported = n.resources?;
        let allocatable = reported.allocatable.capacity();
        let ours = self.0.get(&n.name).copied().unwrap_or_default();
        let used = reported.requested.request().plus(&ours);
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
