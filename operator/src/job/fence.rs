//! I/O: removing what a job's ended attempts left in their members (fencing), and its
//! tenant namespaces when it is deleted.

use gpufed_api::ComputeJob;
use gpufed_api::job_status::ComputeJobStatus;
use kube::ResourceExt;

use super::{build, connect, names, provider};
use crate::context::Context;
use crate::error::Result;
use crate::member::Link;

/// The ended attempts still to be removed whose provider no longer exists in the hub
/// (`exists`): a deleted provider's member is no longer ours to reach, and nothing is left
/// there for the job to clean (deletion counts it done too), so they count removed. Left
/// unmarked, a finished job would be requeued every few seconds for ever and its records
/// would never be archived.
pub(super) fn on_deleted_providers(
    status: Option<&ComputeJobStatus>,
    exists: impl Fn(&str) -> bool,
) -> Vec<u32> {
    status
        .iter()
        .flat_map(|s| s.attempts.iter())
        .filter(|a| !a.removed && !exists(&a.provider))
        .map(|a| a.attempt)
        .collect()
}

/// Removes the pods of finished attempts that may still run (lost, stopped). Returns
/// the attempt numbers now gone. A provider that does not answer keeps its attempt
/// pending: it is fenced by its number and removed when the provider returns; one deleted
/// from the hub has nothing left to remove ([`on_deleted_providers`]).
pub(super) async fn fence_old_attempts(ctx: &Context, job: &ComputeJob) -> Vec<u32> {
    let uid = job.uid().unwrap_or_default();
    let ns = names::tenant_namespace(&job.namespace().unwrap_or_default(), &job.name_any());
    let mut removed = on_deleted_providers(job.status.as_ref(), |name| provider(ctx, name).is_some());
    let pending: Vec<_> = job
        .status
        .iter()
        .flat_map(|s| s.attempts.iter())
        .filter(|a| !a.removed && !removed.contains(&a.attempt))
        .collect();
    // A job with checkpoint credentials leaves no copy of them behind with its attempt.
    let copied = build::credentials::secret_name(&job.spec).is_some();
    for a in pending {
        let Ok((_, link)) = connect(ctx, &a.provider).await else {
            continue;
        };
        let mut result = link.remove_attempt(&ns, &uid, a.attempt).await;
        if result.is_ok() && copied {
            result = link.remove_credentials(&ns, a.attempt).await;
        }
        match result {
            Ok(()) => removed.push(a.attempt),
            Err(e) => tracing::debug!(provider = %a.provider, error = %e, "old attempt not removable yet"),
        }
    }
    removed
}

/// Removes the job's tenant namespace `ns` through `link`, only where it is the job's
/// own (two jobs' names can give one namespace name): [`Link::remove_own_namespace`].
pub(super) async fn remove_namespace(link: &Link, ns: &str, job: &ComputeJob) -> Result<()> {
    link.remove_own_namespace(ns, &job.uid().unwrap_or_default())
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn attempts_on_a_deleted_provider_count_removed_and_only_those() {
        let status: ComputeJobStatus = serde_json::from_value(serde_json::json!({
            "attempts": [
                {"attempt": 1, "provider": "gone", "outcome": "ProviderLost", "gpuSeconds": 10,
                 "pricePerGpuHour": "1", "endTime": "2026-01-01T00:00:00Z"},
                {"attempt": 2, "provider": "here", "outcome": "Failed", "gpuSeconds": 10,
                 "pricePerGpuHour": "1", "endTime": "2026-01-01T01:00:00Z"},
                {"attempt": 3, "provider": "gone", "outcome": "Failed", "gpuSeconds": 10,
                 "pricePerGpuHour": "1", "endTime": "2026-01-01T02:00:00Z", "removed": true},
                {"attempt": 4, "provider": "gone", "outcome": "Succeeded", "gpuSeconds": 10,
                 "pricePerGpuHour": "1", "endTime": "2026-01-01T03:00:00Z"}
            ]
        }))
        .unwrap();
        let gone = on_deleted_providers(Some(&status), |p| p == "here");
        assert_eq!(
            gone,
            [1, 4],
            "the deleted provider's pending attempts; not one already removed"
        );
        assert!(on_deleted_providers(Some(&status), |_| true).is_empty());
        assert!(on_deleted_providers(None, |_| false).is_empty());
    }
}
