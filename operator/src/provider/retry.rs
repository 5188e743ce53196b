//! The provider controller's error policy: [`crate::context::error_policy`]'s backoff,
//! capped at the heartbeat interval while the provider's last probe failed.
//!
//! A reconcile can fail after its probe failed and was recorded (its status write refused,
//! the hub failing a read of the verification's state): with the per-object backoff the
//! next probe would come up to 5 minutes later, and the streak of failed probes — which
//! decides when the provider's jobs fail over ([`crate::fleet::Failing`]) — would stop
//! growing. The probes keep their cadence instead.

use std::sync::Arc;
use std::time::Duration;

use gpufed_api::GpuProvider;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::error::Error;
use crate::metrics::ErrorLabel;

/// When to retry a provider's failed reconcile: after `backoff`, or the heartbeat
/// interval (`beat`) if sooner while its last probe failed (`probe_failed`).
pub(super) fn retry_after(backoff: Duration, probe_failed: bool, beat: Duration) -> Duration {
    if probe_failed { backoff.min(beat) } else { backoff }
}

/// Counts the error and retries the provider ([`retry_after`]).
pub(super) fn error_policy(provider: Arc<GpuProvider>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("provider/{}", ObjectRef::from_obj(provider.as_ref()));
    let backoff = ctx.backoff.fail(&key, rand::random::<f64>());
    let probe_failed = ctx.fleet.probe_failed_now(&provider.name_any());
    let delay = retry_after(backoff, probe_failed, ctx.config.heartbeat_interval);
    ctx.metrics
        .reconcile_errors_total
        .get_or_create(&ErrorLabel {
            controller: "provider",
            category: error.category(),
        })
        .inc();
    tracing::warn!(object = %key, error = %error, retry_in = ?delay, probe_failed, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_whose_probe_failed_is_retried_within_a_heartbeat() {
        let beat = Duration::from_secs(5);
        let backoff = Duration::from_secs(300);
        assert_eq!(retry_after(backoff, true, beat), beat);
        assert_eq!(
            retry_after(Duration::from_secs(1), true, beat),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_after(backoff, false, beat),
            backoff,
            "the hub failing a reachable provider's reconcile backs off as any"
        );
    }

    #[tokio::test]
    async fn the_fleet_says_without_waiting_whether_a_probe_failed() {
        let fleet = crate::fleet::Fleet::default();
        assert!(!fleet.probe_failed_now("a"));
        fleet.mark_unreachable("a", 1, 100, 15).await;
        assert!(fleet.probe_failed_now("a"));
        fleet.update("a", crate::fleet::MemberView::default()).await;
        assert!(!fleet.probe_failed_now("a"));
    }
}
