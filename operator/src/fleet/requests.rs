//! Pure: the CPU, memory and local ephemeral storage a pod requests, counted as
//! kube-scheduler's resource fit counts them, and what a node has of them for pods.
//!
//! A pod's request is `max(Σ regular containers + Σ sidecars, max over the other init
//! containers of each one + the sidecars started before it) + spec.overhead`; pod-level
//! requests (`spec.resources`), where set, replace the containers' part. A container (or
//! pod) that states a limit but no request requests its limit: the API server defaults
//! it so. Quantities that do not parse count as nothing: the member's API server
//! validated them, so only a lying member sends such, and it lies about itself.

use std::collections::BTreeMap;

use gpufed_api::formats::{Rounding, parse_quantity};
use k8s_openapi::api::core::v1::{Container, Node, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

use super::CpuMemory;

const CPU: &str = "cpu";
const MEMORY: &str = "memory";
const EPHEMERAL: &str = "ephemeral-storage";
const MIB: u128 = 1 << 20;

/// CPU in millicores, memory and ephemeral storage in bytes, each rounded up as the
/// scheduler rounds a request (`MilliValue`, `Value`); sums saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU in millicores.
    pub cpu_millis: u128,
    /// Memory in bytes.
    pub memory_bytes: u128,
    /// Local ephemeral storage in bytes.
    pub ephemeral_bytes: u128,
}

impl Requests {
    fn plus(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            ephemeral_bytes: self.ephemeral_bytes.saturating_add(other.ephemeral_bytes),
        }
    }

    /// In whole millicores and MiB (memory and storage rounded up, a request is never
    /// understated; no storage stated when none is asked), bounded
    /// ([`CpuMemory::bounded`]).
    pub fn rounded_up(&self) -> CpuMemory {
        let mib = |bytes: u128| u64::try_from(bytes.div_ceil(MIB)).unwrap_or(u64::MAX);
        CpuMemory {
            cpu_millis: u64::try_from(self.cpu_millis).unwrap_or(u64::MAX),
            memory_mib: mib(self.memory_bytes),
            ephemeral_mib: (self.ephemeral_bytes > 0).then(|| mib(self.ephemeral_bytes)),
        }
        .bounded()
    }

    /// Summed over `all`, saturating.
    pub fn sum(all: impl IntoIterator<Item = Requests>) -> Requests {
        all.into_iter().fold(Requests::default(), Requests::plus)
    }
}

/// The amount of `name` in a resource list, in millicores (CPU) or bytes, rounded up;
/// `None` when absent or not a quantity.
fn amount(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<u128> {
    let q = parse_quantity(&list?.get(name)?.0).ok()?;
    Some(if name == CPU {
        q.millis(Rounding::Up)
    } else {
        q.units(Rounding::Up)
    })
}

/// The request of `name` in `r`: the stated request, else the limit (as the API server
/// defaults it).
fn request(r: Option<&ResourceRequirements>, name: &str) -> Option<u128> {
    let r = r?;
    amount(r.requests.as_ref(), name).or_else(|| amount(r.limits.as_ref(), name))
}

/// What one container (or a pod's pod-level `resources`) requests.
pub fn container_requests(r: Option<&ResourceRequirements>) -> Requests {
    Requests {
        cpu_millis: request(r, CPU).unwrap_or(0),
        memory_bytes: request(r, MEMORY).unwrap_or(0),
        ephemeral_bytes: request(r, EPHEMERAL).unwrap_or(0),
    }
}

/// What a pod requests, as kube-scheduler counts it (see the module's documentation).
pub fn pod_requests(spec: &PodSpec) -> Requests {
    Requests {
        cpu_millis: pod_amount(spec, CPU),
        memory_bytes: pod_amount(spec, MEMORY),
        ephemeral_bytes: pod_amount(spec, EPHEMERAL),
    }
}

/// What a pod requests of resource `name`, in millicores (CPU) or units (bytes, devices),
/// as kube-scheduler counts it (see the module's documentation); sums saturate.
pub fn pod_amount(spec: &PodSpec, name: &str) -> u128 {
    let of = |c: &Container| request(c.resources.as_ref(), name).unwrap_or(0);
    let mut total = spec.containers.iter().map(of).fold(0, u128::saturating_add);
    let (mut sidecars, mut init) = (0u128, 0u128);
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        if c.restart_policy.as_deref() == Some("Always") {
            // A sidecar runs beside the regular containers and every later init container.
            total = total.saturating_add(r);
            sidecars = sidecars.saturating_add(r);
            init = init.max(sidecars);
        } else {
            init = init.max(r.saturating_add(sidecars));
        }
    }
    total = total.max(init);
    // Pod-level resources cover CPU and memory only: the rest stays the containers'.
    if (name == CPU || name == MEMORY)
        && let Some(pod_level) = request(spec.resources.as_ref(), name)
    {
        total = pod_level;
    }
    total.saturating_add(amount(spec.overhead.as_ref(), name).unwrap_or(0))
}

/// A container of a JSON pod template, with only what decides its requests (no
/// resources, when they are malformed).
fn template_container(c: &serde_json::Map<String, serde_json::Value>) -> Container {
    Container {
        resources: c
            .get("resources")
            .and_then(|v| ResourceRequirements::deserialize(v).ok()),
        restart_policy: c
            .get("restartPolicy")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        ..Container::default()
    }
}

/// The pod spec of a JSON pod template (`containers`, and the other fields by name),
/// with only what decides its requests: read without converting the whole template.
pub fn template_pod<'a>(
    containers: impl IntoIterator<Item = &'a serde_json::Map<String, serde_json::Value>>,
    rest: &BTreeMap<String, serde_json::Value>,
) -> PodSpec {
    let field = |name: &str| rest.get(name).filter(|v| !v.is_null());
    let init = field("initContainers")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(serde_json::Value::as_object)
                .map(template_container)
                .collect()
        });
    PodSpec {
        containers: containers.into_iter().map(template_container).collect(),
        init_containers: init,
        overhead: field("overhead").and_then(|v| BTreeMap::deserialize(v).ok()),
        resources: field("resources").and_then(|v| ResourceRequirements::deserialize(v).ok()),
        ..PodSpec::default()
    }
}

/// A node's allocatable CPU (millicores), memory and ephemeral storage (MiB), all rounded
/// down (what it surely holds) and bounded; `None` unless it reports CPU and memory
/// (storage, where it reports none, is no limit).
pub fn allocatable(node: &Node) -> Option<CpuMemory> {
    let list = node.status.as_ref()?.allocatable.as_ref()?;
    let cpu = parse_quantity(&list.get(CPU)?.0).ok()?.millis(Rounding::Down);
    let memory = parse_quantity(&list.get(MEMORY)?.0).ok()?.mib(Rounding::Down);
    let ephemeral = list
        .get(EPHEMERAL)
        .and_then(|q| parse_quantity(&q.0).ok())
        .map(|q| u64::try_from(q.mib(Rounding::Down)).unwrap_or(u64::MAX));
    Some(
        CpuMemory {
            cpu_millis: u64::try_from(cpu).unwrap_or(u64::MAX),
            memory_mib: u64::try_from(memory).unwrap_or(u64::MAX),
            ephemeral_mib: ephemeral,
        }
        .bounded(),
    )
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
