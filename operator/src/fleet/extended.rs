//! Pure: extended resources beside CPU, memory and storage — RDMA devices, hugepages,
//! the resources of other device plugins — that a node has for pods and a pod requests.
//!
//! A worker that asks for one is bound by kube-scheduler only to a node that has it free,
//! so the hub must count them as it counts CPU: a node that lacks them holds none of the
//! worker's kind, whatever its free GPUs. The provider's GPU resource is not among them
//! (the hub counts GPUs itself), nor are `cpu`, `memory`, `ephemeral-storage` and `pods`.
//! Hugepages (`hugepages-2Mi`, `hugepages-1Gi`) are counted in MiB, everything else in
//! whole units; what a node has is rounded down, what a pod asks rounded up.

use std::collections::BTreeMap;

use gpufed_api::formats::{Rounding, parse_quantity};
use k8s_openapi::api::core::v1::{Node, PodSpec, ResourceRequirements};

use super::requests::pod_amount;

/// Extended resources by name: amounts in whole units, hugepages in MiB.
pub type Extended = BTreeMap<String, u64>;

/// Most extended resources kept of one node or pod: a member may report anything.
pub const MAX_NAMES: usize = 16;
/// Most of one extended resource a node or pod is taken to have or ask for.
pub const MAX_AMOUNT: u64 = 1 << 32;

/// Resources counted apart from the extended ones.
const BUILTIN: [&str; 4] = ["cpu", "memory", "ephemeral-storage", "pods"];

/// Whether `name` is an extended resource the hub counts (not built in, not the GPUs of
/// `gpu_resource`, shaped like a resource name).
pub fn is_extended(name: &str, gpu_resource: &str) -> bool {
    !BUILTIN.contains(&name)
        && name != gpu_resource
        && !name.is_empty()
        && name.len() <= 317
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
}

/// `units` of resource `name` as counted here: MiB for hugepages, else units; bounded.
fn counted(name: &str, units: u128, round: Rounding) -> u64 {
    let n = if gpufed_placement::is_hugepages(name) {
        match round {
            Rounding::Up => units.div_ceil(1 << 20),
            Rounding::Down => units >> 20,
        }
    } else {
        units
    };
    u64::try_from(n).unwrap_or(u64::MAX).min(MAX_AMOUNT)
}

/// The extended resources of a node's allocatable (none stated: an empty map), those it
/// has some of only.
pub fn node_allocatable(node: &Node, gpu_resource: &str) -> Extended {
    let Some(list) = node.status.as_ref().and_then(|s| s.allocatable.as_ref()) else {
        return Extended::new();
    };
    list.iter()
        .filter(|(name, _)| is_extended(name, gpu_resource))
        .filter_map(|(name, q)| {
            let units = parse_quantity(&q.0).ok()?.units(Rounding::Down);
            Some((name.clone(), counted(name, units, Rounding::Down)))
        })
        .filter(|(_, n)| *n > 0)
        .take(MAX_NAMES)
        .collect()
}

/// The extended resources a pod requests, as kube-scheduler counts them (a request, else
/// the limit; init containers at their peak, sidecars throughout, overhead added).
pub fn pod_requests(spec: &PodSpec, gpu_resource: &str) -> Extended {
    let lists = |r: Option<&ResourceRequirements>| {
        r.into_iter()
            .flat_map(|r| r.requests.iter().chain(r.limits.iter()))
            .flat_map(BTreeMap::keys)
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut names: Vec<String> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| lists(c.resources.as_ref()))
        .chain(spec.overhead.iter().flat_map(|o| o.keys().cloned()))
        .filter(|name| is_extended(name, gpu_resource))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let n = counted(&name, pod_amount(spec, &name), Rounding::Up);
            (name, n)
        })
        .filter(|(_, n)| *n > 0)
        .take(MAX_NAMES)
        .collect()
}

/// `a + b` for each name, saturating.
pub fn add(a: &mut Extended, b: &Extended) {
    for (name, n) in b {
        let sum = a.entry(name.clone()).or_default();
        *sum = sum.saturating_add(*n);
    }
}

#[cfg(test)]
#[path = "extended_tests.rs"]
mod tests;
