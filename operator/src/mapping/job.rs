//! Pure: a queued ComputeJob as the placement engine's `Job`.

use std::collections::BTreeMap;

use gpufed_api::ComputeJob;
use gpufed_api::formats;
use gpufed_api::job::{GpuTier, Interconnect};
use gpufed_api::serving::{Spread, SpreadDomain};
use gpufed_placement as pl;
use kube::ResourceExt;

use super::spec_facts::SpecFacts;
use super::{is_consumer, job_id};

/// The engine's view of a queued job: its gang, GPU requirements, price ceiling,
/// placement constraints and node selector.
pub(super) fn job_snapshot(
    job: &ComputeJob,
    all_models: &[String],
    facts: &SpecFacts,
    worker_resources: pl::Resources,
) -> pl::Job {
    let spec = &job.spec;
    let mut models = spec.gpu.models.clone();
    if spec.gpu.tier != GpuTier::Any {
        let consumer = spec.gpu.tier == GpuTier::Consumer;
        let pool: &[String] = if models.is_empty() { all_models } else { &models };
        let mut kept: Vec<String> = pool
            .iter()
            .filter(|m| is_consumer(m) == consumer)
            .cloned()
            .collect();
        kept.sort();
        kept.dedup();
        // An empty list would mean "any": name an impossible model instead.
        models = if kept.is_empty() {
            vec![format!("no-{:?}-gpu", spec.gpu.tier)]
        } else {
            kept
        };
    }
    // Workers that must share a node are placed as one worker of all their GPUs and
    // resources; the placement is written back as that many workers on its node
    // (`crate::placement::write`).
    let (workers, gpus_per_worker, worker_resources) = if facts.workers_together {
        (
            1,
            spec.workers.saturating_mul(spec.gpus_per_worker),
            worker_resources.times(spec.workers),
        )
    } else {
        (spec.workers, spec.gpus_per_worker, worker_resources)
    };
    let cc = spec
        .gpu
        .min_compute_capability
        .as_deref()
        .and_then(|c| formats::parse_compute_capability(c).ok());
    pl::Job {
        id: job_id(job),
        namespace: job.namespace().unwrap_or_default(),
        priority: i32::try_from(spec.priority).unwrap_or(i32::MAX),
        submit_time: job
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| u64::try_from(t.0.as_second()).unwrap_or(0)),
        gpus_per_worker: u8::try_from(gpus_per_worker).unwrap_or(u8::MAX),
        workers: u16::try_from(workers).unwrap_or(u16::MAX),
        models,
        min_vram_mib: spec
            .gpu
            .min_memory
            .as_deref()
            .and_then(|m| formats::parse_memory_mib(m).ok())
            .map_or(0, |m| u32::try_from(m).unwrap_or(u32::MAX)),
        min_compute: cc.map_or_else(Default::default, |(a, b)| pl::ComputeCapability::new(a, b)),
        interconnect: match spec.gpu.interconnect {
            Interconnect::Any => pl::Interconnect::Any,
            Interconnect::NVLink => pl::Interconnect::NvlinkWorker,
            Interconnect::NVLinkDomain => pl::Interconnect::NvlinkGang,
        },
        max_price: formats::parse_decimal(&spec.max_price_per_gpu_hour).ok(),
        regions: spec.placement.regions.clone(),
        providers: spec.placement.providers.clone(),
        avoid: Vec::new(), // set by `avoid_forbidding`, which knows the time
        preferred: spec.placement.preferred_providers.clone(),
        min_reputation: f64::from(spec.placement.min_reputation) / 100.0,
        verified_only: spec.placement.verified_only,
        node_selector: node_selector(spec),
        node_affinity: facts.node_affinity.clone(),
        max_workers_per_node: facts.max_workers_per_node,
        worker_resources,
        spread: spec.placement.spread.as_ref().map(spread_snapshot),
        preempt: spec.placement.preempt_lower_priority,
    }
}

/// The pod template's `nodeSelector` (empty when unset; one that is not a map of strings
/// is refused with the template, [`crate::job::build::template_error`]).
fn node_selector(spec: &gpufed_api::ComputeJobSpec) -> BTreeMap<String, String> {
    spec.template
        .spec
        .rest
        .get("nodeSelector")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// A job's spread. The group stays the bare name: the engine scopes it by the job's
/// namespace (and a running allocation's by its namespace), as the API does.
fn spread_snapshot(s: &Spread) -> pl::Spread {
    pl::Spread {
        group: s.group.clone(),
        across: match s.across {
            SpreadDomain::Provider => pl::SpreadDomain::Provider,
            SpreadDomain::Region => pl::SpreadDomain::Region,
        },
    }
}
