//! A live attempt's eviction mark (preemption, drain, tenant policy) that no longer
//! stands is dropped before the plan would end the attempt for it.

use gpufed_api::ComputeJob;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;

/// Drops the live attempt's eviction mark when the job it was evicted for no longer needs
/// the room ([`crate::placement::mark_stands`]): the attempt runs on instead of ending
/// `Preempted`. Only with the job store synced: before that, a missing preemptor may
/// simply not be listed yet.
pub(super) fn drop_stale_mark(ctx: &Context, job: &mut ComputeJob) {
    let Some(mark) = job
        .status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .and_then(|p| p.preempted.clone())
    else {
        return;
    };
    let by = mark.by.clone();
    if let Some(provider) = mark.drained_by() {
        // A drain's mark stands while its provider still drains (or is not listed yet).
        let draining = ctx
            .providers
            .get(&ObjectRef::new(provider))
            .is_none_or(|p| p.spec.drain);
        if draining || !ctx.providers_synced.is_synced() {
            return;
        }
        tracing::info!(provider = %provider, "the provider no longer drains; the attempt runs on");
        if let Some(p) = job.status.as_mut().and_then(|s| s.placement.as_mut()) {
            p.preempted = None;
        }
        return;
    }
    if let Some(provider) = mark.refused_by() {
        let ns = job.namespace().unwrap_or_default();
        if !ctx.providers_synced.is_synced() || crate::placement::tenancy_mark_stands(ctx, provider, &ns) {
            return;
        }
        tracing::info!(provider = %provider, "the provider's tenant policy keeps the namespace's work again; the attempt runs on");
        if let Some(p) = job.status.as_mut().and_then(|s| s.placement.as_mut()) {
            p.preempted = None;
        }
        return;
    }
    if !ctx.jobs_synced.is_synced() {
        return;
    }
    let (ns, name) = by.split_once('/').unwrap_or(("", by.as_str()));
    let preemptor = ctx.jobs.get(&ObjectRef::new(name).within(ns));
    if crate::placement::mark_stands(preemptor.as_deref(), job) {
        return;
    }
    tracing::info!(for_job = %by, "the job this attempt was to be evicted for no longer waits; it runs on");
    if let Some(p) = job.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = None;
    }
}
