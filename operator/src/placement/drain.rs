//! Draining a provider (`GpuProvider.spec.drain`), as `kubectl drain` drains a node: each
//! placement round marks the running attempts on a draining provider evicted — by the
//! same mark as a preemption, `by: GpuProvider/<name>` — so their job controllers end
//! them `Preempted` and queue them again elsewhere (the provider takes no new work). A
//! ComputeService's ready replicas go only as its disruption budget allows: one round
//! takes what the budget spares, the next more once the replacements are ready elsewhere.
//! A drain held by a budget says so on the provider (`Ready=False/Draining`). A tenant
//! policy with `evictRunning` evicts the same way, only the work of the namespaces it
//! refuses (mark `GpuProviderTenants/<name>`). A drain with `spec.drainDeadline` stops
//! waiting for budgets once that long has passed since it began (`status.drainStartTime`).
//!
//! [`round_victims`] is pure. It sees every live attempt (the placement snapshot leaves a
//! draining provider out); the round marks its choice before the engine runs and no
//! longer counts those replicas healthy, so a preemption in the same round cannot spend
//! the same budget twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gpufed_api::job_status::{DRAIN_BY_PREFIX, Preemption as Mark, TENANCY_BY_PREFIX};
use gpufed_api::tenants::Tenants;
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_placement as pl;
use kube::ResourceExt;
use tokio::sync::Mutex;

use super::Written;
use super::evict::write_mark;
use crate::context::Context;
use crate::mapping;

/// Why an attempt must leave its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// The provider drains (`spec.drain`).
    Drain,
    /// The provider drains and its `spec.drainDeadline` has passed: disruption budgets no
    /// longer hold the attempt (it still counts against them for the others).
    DrainOverdue,
    /// The provider's tenant policy no longer admits the attempt's namespace and evicts
    /// (`spec.tenants.evictRunning`).
    Tenancy,
}

/// What one round does to the draining providers (and to work a provider's tenant
/// policy evicts).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drain {
    /// Running allocations (job ids) to evict now, with their provider and why.
    pub evict: Vec<(String, String, Leave)>,
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
                resources: BTreeMap::new(), // as its GPUs: a drain judges work, not room
            })
        })
        .collect()
}

/// The attempts to evict: every allocation `leave` names (why it must leave), not
/// already leaving, save those whose eviction would take a budget below its minimum
/// (`budgets`; healthy counted over all providers, minus what this round already
/// takes). Oldest first, so the longest-serving replicas move first — any order keeps
/// the budget. Budgets that hold work back are reported for drains only (a provider's
/// status says what its drain waits for).
pub fn victims_by(
    running: &[pl::RunningAllocation],
    budgets: &BTreeMap<String, u32>,
    leave: impl Fn(&pl::RunningAllocation) -> Option<Leave>,
) -> Drain {
    let mut out = Drain::default();
    let mut healthy: BTreeMap<&str, u32> = BTreeMap::new();
    for r in running.iter().filter(|r| !r.evicting) {
        if let Some(k) = r.budget.as_deref().filter(|k| budgets.contains_key(*k)) {
            *healthy.entry(k).or_default() += 1;
        }
    }
    let mut here: Vec<(&pl::RunningAllocation, Leave)> = running
        .iter()
        .filter(|r| !r.evicting)
        .filter_map(|r| Some((r, leave(r)?)))
        .collect();
    here.sort_by(|(a, _), (b, _)| (a.start_time, &a.job).cmp(&(b.start_time, &b.job)));
    for (r, why) in here {
        let budget = r.budget.as_deref().and_then(|k| Some((k, *budgets.get(k)?)));
        if let Some((k, min)) = budget {
            let h = healthy.entry(k).or_default();
            if *h <= min && why != Leave::DrainOverdue {
                if why == Leave::Drain {
                    out.held
                        .entry(r.provider.clone())
                        .or_default()
                        .insert(k.to_owned());
                }
                continue;
            }
            *h = h.saturating_sub(1);
        }
        out.evict.push((r.job.clone(), r.provider.clone(), why));
    }
    out
}

/// This round's evictions (at `now`): every attempt on a draining provider, and those whose
/// namespace an evicting tenant policy (`spec.tenants.evictRunning`) no longer admits.
/// `labels` answers a namespace's labels; a namespace whose labels are not known is never
/// evicted by a selector (unlike placement, which a selector then keeps out: evicting
/// running work on a guess would be worse than not placing new work).
pub fn round_victims(
    jobs: &[Arc<ComputeJob>],
    providers: &[Arc<GpuProvider>],
    replicas: &BTreeMap<String, String>,
    budgets: &BTreeMap<String, u32>,
    labels: impl Fn(&str) -> Option<BTreeMap<String, String>>,
    now: i64,
) -> Drain {
    // Per draining provider: whether its deadline has passed.
    let draining: BTreeMap<String, bool> = providers
        .iter()
        .filter(|p| p.spec.drain)
        .map(|p| {
            let start = p.status.as_ref().and_then(|s| s.drain_start_time.as_deref());
            (
                p.name_any(),
                p.spec.drain_deadline_at(start).is_some_and(|at| at <= now),
            )
        })
        .collect();
    let evicting: BTreeMap<String, &Tenants> = providers
        .iter()
        .filter_map(|p| Some((p.name_any(), evicting_policy(p)?)))
        .collect();
    if draining.is_empty() && evicting.is_empty() {
        return Drain::default();
    }
    let running = running(jobs, replicas);
    let known: BTreeMap<&str, Option<BTreeMap<String, String>>> = running
        .iter()
        .filter(|r| evicting.contains_key(&r.provider))
        .map(|r| (r.namespace.as_str(), labels(&r.namespace)))
        .collect();
    victims_by(&running, budgets, |r| {
        if let Some(&overdue) = draining.get(&r.provider) {
            return Some(if overdue {
                Leave::DrainOverdue
            } else {
                Leave::Drain
            });
        }
        let policy = evicting.get(&r.provider)?;
        let labels = known.get(r.namespace.as_str())?.as_ref();
        refuses(policy, &r.namespace, labels).then_some(Leave::Tenancy)
    })
}

/// The provider's tenant policy when it evicts running work: `evictRunning`, something
/// to refuse, and a spec that passes the operator's checks — a malformed selector (its
/// CEL rule dropped by an old API server) matches nothing and must not evict everyone.
fn evicting_policy(provider: &GpuProvider) -> Option<&Tenants> {
    let t = provider.spec.tenants.as_ref()?;
    (t.evict_running && t.restricts() && gpufed_api::check::provider_spec(&provider.spec).is_empty())
        .then_some(t)
}

/// Whether an evicting `policy` refuses running work of `ns`: its name lists do, or —
/// with the namespace's labels known — its selector does. Unknown labels never evict.
fn refuses(policy: &Tenants, ns: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
    if !policy.admits_by_name(ns) {
        return true;
    }
    (labels.is_some() || policy.namespace_selector.is_none()) && !policy.admits(ns, labels)
}

/// Whether `provider`'s tenant policy still evicts work of namespace `ns` (labels per
/// `labels`): an evicting policy that does not admit it — or whose answer is not known
/// (the provider not listed, a selector without the namespace's labels): the mark
/// stands until it is.
pub fn tenancy_evicts(
    provider: Option<&GpuProvider>,
    ns: &str,
    labels: impl Fn(&str) -> Option<BTreeMap<String, String>>,
) -> bool {
    let Some(provider) = provider else { return true };
    let Some(policy) = evicting_policy(provider) else {
        return false;
    };
    let labels = labels(ns);
    // Not known: the mark stands until the labels say.
    refuses(policy, ns, labels.as_ref()) || (labels.is_none() && policy.namespace_selector.is_some())
}

/// Marks the chosen attempts evicted by their provider's drain or tenant policy; returns
/// how many were marked now. Fenced like a preemption's mark: one that changed meanwhile
/// is left for the next round.
pub(super) async fn mark(
    ctx: &Context,
    jobs: &mapping::JobIndex<'_>,
    evict: &[(String, String, Leave)],
    now: i64,
    written: &Mutex<Written>,
) -> usize {
    let mut marked = 0;
    for (id, provider, why) in evict {
        let Some(victim) = jobs.get(id) else {
            continue;
        };
        let (prefix, cause) = match why {
            Leave::Drain => (DRAIN_BY_PREFIX, "drain"),
            Leave::DrainOverdue => (DRAIN_BY_PREFIX, "drain_deadline"),
            Leave::Tenancy => (TENANCY_BY_PREFIX, "tenancy"),
        };
        let mark = Mark {
            by: format!("{prefix}{provider}"),
            priority: 0,
            time: crate::time::format(now),
        };
        if write_mark(ctx, victim, &mark, cause, written).await {
            marked += 1;
            tracing::info!(job = %id, provider = %provider, cause = ?why, "evicting from the provider");
        }
    }
    marked
}

#[cfg(test)]
#[path = "drain_tests.rs"]
mod tests;
