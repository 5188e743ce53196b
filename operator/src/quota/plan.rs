//! Pure: what each namespace's quotas allow, what its live work holds, and a quota's
//! status. The placement round hands [`caps`] to the engine; the quota controller writes
//! [`status`].

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions::{self, types};
use gpufed_api::formats::{format_decimal, parse_decimal};
use gpufed_api::quota::{ComputeQuotaStatus, QuotaUsage};
use gpufed_api::{ComputeJob, ComputeQuota, check};
use gpufed_placement as pl;
use kube::ResourceExt;

use crate::mapping;

/// The `Placed` reason of a job its namespace's quota holds back.
pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";

/// GPUs and spend per hour (micros) of a namespace's live attempts.
pub fn usage<'a>(jobs: impl IntoIterator<Item = &'a ComputeJob>) -> (u32, pl::Micros) {
    let mut gpus = 0u32;
    let mut spend = 0u64;
    for job in jobs.into_iter().filter(|j| mapping::is_live(j)) {
        let Some(p) = job.status.as_ref().and_then(|s| s.placement.as_ref()) else {
            continue;
        };
        gpus = gpus.saturating_add(p.gpus);
        // A price the operator wrote itself; one it cannot read counts as free rather
        // than blocking the namespace (the job's status says what it pays).
        let price = parse_decimal(&p.price_per_gpu_hour).unwrap_or(0);
        spend = spend.saturating_add(price.saturating_mul(u64::from(p.gpus)));
    }
    (gpus, spend)
}

/// GPUs and spend per hour (micros) of the jobs that wait for their evictions
/// ([`mapping::evictions`], at `now`), per namespace: room of the quota they already took
/// by evicting, not yet theirs as live work. Counted as used, or the victim, queued again
/// as its pods go, would be placed back into the room freed for its preemptor, and evicted
/// for it again, and again. The price the round planned for a waiting job is not kept
/// (only its room, `status.held`): its spend is counted at its ceiling, which that price
/// never exceeds — counted at nothing, a namespace under a spend cap would refill the
/// money freed for the preemptor the same way.
fn reserved(jobs: &[Arc<ComputeJob>], now: i64) -> BTreeMap<&str, (u32, pl::Micros)> {
    let waiting: std::collections::BTreeSet<&str> = mapping::evictions(jobs.iter().map(AsRef::as_ref), now)
        .into_values()
        .map(|e| e.by)
        .collect();
    let mut out: BTreeMap<&str, (u32, pl::Micros)> = BTreeMap::new();
    if waiting.is_empty() {
        return out;
    }
    for job in jobs.iter().filter(|j| !mapping::is_live(j)) {
        if let Some(ns) = job.metadata.namespace.as_deref()
            && waiting.contains(mapping::job_id(job).as_str())
        {
            let gang = job.spec.workers.saturating_mul(job.spec.gpus_per_worker);
            // Its CRD's pattern makes the ceiling a decimal; one that is not caps nothing
            // (as `usage` reads an unreadable price).
            let ceiling = parse_decimal(&job.spec.max_price_per_gpu_hour).unwrap_or(0);
            let (gpus, spend) = out.entry(ns).or_default();
            *gpus = gpus.saturating_add(gang);
            *spend = spend.saturating_add(ceiling.saturating_mul(u64::from(gang)));
        }
    }
    out
}

/// [`reserved`] with the namespaces owned, for the quota controller to keep between
/// reconciles: the victims of a namespace's waiting jobs may be any namespace's, so it
/// reads the whole job cache, once for every quota.
pub fn reserved_by_namespace(jobs: &[Arc<ComputeJob>], now: i64) -> BTreeMap<String, (u32, pl::Micros)> {
    reserved(jobs, now)
        .into_iter()
        .map(|(ns, room)| (ns.to_owned(), room))
        .collect()
}

/// Per namespace with at least one valid quota: the lowest cap of each kind (every
/// quota applies) and what its live work holds now, and its jobs waiting for their
/// evictions will ([`reserved`]). A quota the operator finds invalid (its CEL rule dropped
/// by an old API server) caps nothing; its status says why.
pub fn caps(quotas: &[Arc<ComputeQuota>], jobs: &[Arc<ComputeJob>], now: i64) -> BTreeMap<String, pl::Quota> {
    let mut out: BTreeMap<String, pl::Quota> = BTreeMap::new();
    for q in quotas.iter().filter(|q| check::quota_spec(&q.spec).is_empty()) {
        let ns = q.namespace().unwrap_or_default();
        let entry = out.entry(ns).or_default();
        if let Some(g) = q.spec.gpus {
            entry.gpus = Some(entry.gpus.map_or(g, |e| e.min(g)));
        }
        if let Some(s) = q
            .spec
            .max_spend_per_hour
            .as_deref()
            .and_then(|s| parse_decimal(s).ok())
        {
            entry.spend_per_hour = Some(entry.spend_per_hour.map_or(s, |e| e.min(s)));
        }
    }
    if out.is_empty() {
        return out;
    }
    // One pass over the jobs (a round runs every second or two), none without quotas.
    let mut mine: BTreeMap<&str, Vec<&ComputeJob>> = BTreeMap::new();
    for job in jobs {
        if let Some(ns) = job.metadata.namespace.as_deref()
            && out.contains_key(ns)
        {
            mine.entry(ns).or_default().push(job);
        }
    }
    let used: Vec<(String, (u32, pl::Micros))> = mine
        .into_iter()
        .map(|(ns, jobs)| (ns.to_owned(), usage(jobs)))
        .collect();
    let reserved = reserved(jobs, now);
    for (ns, (gpus, spend)) in used {
        if let Some(quota) = out.get_mut(&ns) {
            let (waiting_gpus, waiting_spend) = reserved.get(ns.as_str()).copied().unwrap_or_default();
            quota.used_gpus = gpus.saturating_add(waiting_gpus);
            quota.used_spend_per_hour = spend.saturating_add(waiting_spend);
        }
    }
    out
}

/// Whether a queued job waits because its namespace's quota holds it.
pub fn held_by_quota(job: &ComputeJob) -> bool {
    // The condition first: `is_queued` checks the pod template, and most jobs are not held.
    job.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, types::PLACED))
        .is_some_and(|c| c.status == False && c.reason == QUOTA_EXCEEDED)
        && mapping::is_queued(job)
}

/// The status of `quota`, given the jobs of its namespace, at `now` (RFC 3339), with
/// nothing reserved: [`status_reserving`] with `(0, 0)`.
pub fn status(quota: &ComputeQuota, jobs: &[&ComputeJob], now: &str) -> ComputeQuotaStatus {
    status_reserving(quota, jobs, (0, 0), now)
}

/// The status of `quota`, given the jobs of its namespace and the room `reserved` for
/// those waiting for their evictions (GPUs, spend per hour in micros:
/// [`reserved_by_namespace`]), at `now` (RFC 3339). The reserved room is shown apart from
/// `used` (live work), and the Ready message adds the two up as the caps count them: else
/// a job held "the namespace holds 8 of its 8 GPUs" meets a quota that says it holds 4.
pub fn status_reserving(
    quota: &ComputeQuota,
    jobs: &[&ComputeJob],
    reserved: (u32, pl::Micros),
    now: &str,
) -> ComputeQuotaStatus {
    let generation = quota.metadata.generation;
    let mut st = quota.status.clone().unwrap_or_default();
    let (gpus, spend) = usage(jobs.iter().copied());
    st.used = Some(QuotaUsage {
        gpus,
        spend_per_hour: format_decimal(spend),
    });
    let (kept_gpus, kept_spend) = reserved;
    st.reserved = (kept_gpus > 0 || kept_spend > 0).then(|| QuotaUsage {
        gpus: kept_gpus,
        spend_per_hour: format_decimal(kept_spend),
    });
    st.waiting_jobs = u32::try_from(jobs.iter().filter(|j| held_by_quota(j)).count()).unwrap_or(u32::MAX);
    st.observed_generation = generation;
    let errors = check::quota_spec(&quota.spec);
    if errors.is_empty() {
        conditions::remove(&mut st.conditions, types::STALLED);
    }
    let ready = if errors.is_empty() {
        let mut caps = Vec::new();
        if let Some(g) = quota.spec.gpus {
            caps.push(format!("{g} GPUs"));
        }
        if let Some(s) = &quota.spec.max_spend_per_hour {
            caps.push(format!("{s} per hour"));
        }
        let mut message = format!(
            "caps the namespace at {}; it holds {gpus} GPUs at {} per hour",
            caps.join(" and "),
            format_decimal(spend)
        );
        if st.reserved.is_some() {
            message.push_str(&format!(
                ", and reserves {kept_gpus} GPUs at up to {} per hour for jobs waiting for \
                 the work they preempted to stop: {} GPUs at {} per hour count against the caps",
                format_decimal(kept_spend),
                gpus.saturating_add(kept_gpus),
                format_decimal(spend.saturating_add(kept_spend))
            ));
        }
        conditions::condition(types::READY, True, "Enforced", message, generation, now)
    } else {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        // Stuck until the spec changes, as kstatus (Flux) and Argo CD read `Stalled`.
        let stalled = conditions::condition(
            types::STALLED,
            True,
            "InvalidSpec",
            message.clone(),
            generation,
            now,
        );
        conditions::set(&mut st.conditions, stalled);
        conditions::condition(types::READY, False, "InvalidSpec", message, generation, now)
    };
    conditions::set(&mut st.conditions, ready);
    st
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
