//! Draining a provider (`GpuProvider.spec.drain`), as `kubectl drain` drains a node: each
//! placement round marks the running attempts on a draining provider evicted — by the
//! same mark as a preemption, `by: GpuProvider/<name>` — so their job controllers end
//! them `Preempted` and queue them again elsewhere (the provider takes no new work). A
//! ComputeService's ready replicas go only as its disruption budget allows: one round
//! takes what the budget spares, the next more once the replacements are ready elsewhere.
//! A drain held by a budget says so on the provider (`Ready=False/Draining`).
//!
//! [`victims`] is pure. It sees every live attempt (the placement snapshot leaves a
//! draining provider out); the round marks its choice before the engine runs and no
//! longer counts those replicas healthy, so a preemption in the same round cannot spend
//! the same budget twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gpufed_api::ComputeJob;
use gpufed_api::job_status::{DRAIN_BY_PREFIX, Preemption as Mark};
use gpufed_placement as pl;
use kube::ResourceExt;
use tokio::sync::Mutex;

use super::Written;
use super::evict::write_mark;
use crate::context::Context;
use crate::mapping;

/// What one round does to the draining providers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drain {
    /// Running allocations (job ids) to evict now, with their provider.
    pub evict: Vec<(String, String)>,
    /// Per draining provider, the disruption budgets that keep some of its work for now.
    pub held: BTreeMap<String, BTreeSet<String>>,
}

/// The live attempts of `jobs`, as the engine's allocations (no GPUs): job id,
/// provider, start, whether already leaving, and — for a healthy replica — its budget's
/// key (`replicas`, from [`crate::service::budget::keys`]). Every provider's, also those
/// the placement snapshot leaves out (a draining one is among them).
pub fn running(jobs: &[Arc<ComputeJob>], replicas: &BTreeMap<String, String>) -> Vec<pl::RunningAllocation> {
    jobs.iter()
        .filter(|j| mapping::is_live(j))
        .filter_map(|j| {
            let p = j.status.as_ref()?.placement.as_ref()?;
            let id = mapping::job_id(j);
            Some(pl::RunningAllocation {
                budget: replicas.get(&id).cloned(),
                job: id,
                namespace: j.namespace().unwrap_or_default(),
                priority: i32::try_from(j.spec.priority).unwrap_or(i32::MAX),
                start_time: mapping::start_time(p),
                provider: p.provider.clone(),
                gpus: Vec::new(),
                spread_group: None,
                evicting: p.preempted.is_some(),
            })
        })
        .collect()
}

/// The attempts to evict from the `draining` providers: every allocation there not
/// already leaving, save those whose eviction would take a budget below its minimum
/// (`budgets`; healthy counted over all providers, minus what this round already
/// takes). Oldest first, so the longest-serving replicas move first — any order keeps
/// the budget.
pub fn victims(
    running: &[pl::RunningAllocation],
    budgets: &BTreeMap<String, u32>,
    draining: &BTreeSet<String>,
) -> Drain {
    let mut out = Drain::default();
    if draining.is_empty() {
        return out;
    }
    let mut healthy: BTreeMap<&str, u32> = BTreeMap::new();
    for r in running.iter().filter(|r| !r.evicting) {
        if let Some(k) = r.budget.as_deref().filter(|k| budgets.contains_key(*k)) {
            *healthy.entry(k).or_default() += 1;
        }
    }
    let mut here: Vec<&pl::RunningAllocation> = running
        .iter()
        .filter(|r| !r.evicting && draining.contains(&r.provider))
        .collect();
    here.sort_by(|a, b| (a.start_time, &a.job).cmp(&(b.start_time, &b.job)));
    for r in here {
        let budget = r.budget.as_deref().and_then(|k| Some((k, *budgets.get(k)?)));
        if let Some((k, min)) = budget {
            let h = healthy.entry(k).or_default();
            if *h <= min {
                out.held
                    .entry(r.provider.clone())
                    .or_default()
                    .insert(k.to_owned());
                continue;
            }
            *h -= 1;
        }
        out.evict.push((r.job.clone(), r.provider.clone()));
    }
    out
}

/// Marks the chosen attempts evicted by their provider's drain; returns how many were
/// marked now. Fenced like a preemption's mark: one that changed meanwhile is left for
/// the next round.
pub(super) async fn mark(
    ctx: &Context,
    jobs: &[Arc<ComputeJob>],
    evict: &[(String, String)],
    now: i64,
    written: &Mutex<Written>,
) -> usize {
    let mut marked = 0;
    for (id, provider) in evict {
        let Some(victim) = jobs.iter().find(|j| mapping::job_id(j) == *id) else {
            continue;
        };
        let mark = Mark {
            by: format!("{DRAIN_BY_PREFIX}{provider}"),
            priority: 0,
            time: crate::time::format(now),
        };
        if write_mark(ctx, victim, &mark, written).await {
            marked += 1;
            tracing::info!(job = %id, provider = %provider, "evicting: the provider drains");
        }
    }
    marked
}

#[cfg(test)]
#[path = "drain_tests.rs"]
mod tests;
