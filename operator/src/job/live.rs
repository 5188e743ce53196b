//! I/O: what the hub sees of a job's live attempt in its member cluster — its pods (or
//! why there are none: the provider lost, silent, or refusing the attempt's objects) and a
//! serving job's endpoint.

use gpufed_api::ComputeJob;
use gpufed_api::job_status::ComputeJobStatus;
use kube::ResourceExt;

use super::plan::{self, Member};
use super::{connect, names, provider, serving};
use crate::context::Context;
use crate::error::Error;
use crate::provider::plan::{grace_seconds, provider_lost};

/// What the live attempt's member shows now (`Member::NoAttempt` without one).
pub(super) async fn observe_live(ctx: &Context, job: &ComputeJob, now: i64) -> Member {
    let Some(p) = job.status.as_ref().and_then(|s| s.placement.as_ref()) else {
        return Member::NoAttempt;
    };
    let Some(provider) = provider(ctx, &p.provider) else {
        return Member::ProviderLost { last_heartbeat: now };
    };
    // Lost only when this process has itself failed to reach the provider for the grace
    // period: after a leader change or an outage of the hub the stored heartbeat is old,
    // but the provider may be fine.
    let failing = ctx.fleet.failing(&p.provider, ctx.leadership.term()).await;
    let probe_failed = ctx.fleet.probe_failed(&p.provider).await;
    if provider_lost(&provider, failing, now) {
        let last = provider
            .status
            .as_ref()
            .and_then(|s| s.last_heartbeat_time.as_deref())
            .and_then(crate::time::parse);
        return Member::ProviderLost {
            last_heartbeat: last.unwrap_or(now),
        };
    }
    let Ok(mut link) = ctx.members.link(&provider).await else {
        return Member::Unanswered;
    };
    if probe_failed {
        link = link.uncached();
    }
    let ns = names::tenant_namespace(&job.namespace().unwrap_or_default(), &job.name_any());
    match link
        .attempt_pods(&ns, &job.uid().unwrap_or_default(), p.attempt)
        .await
    {
        Ok((mut pods, lost_nodes)) => {
            if !lost_nodes.is_empty() {
                ctx.fleet.mark_unready(&p.provider, &lost_nodes).await;
            }
            // Unreachable nodes get the provider's grace period, as a silent provider does.
            if plan::expire_unreachable(p, &mut pods, grace_seconds(&provider), now) {
                tracing::warn!(
                    provider = %p.provider,
                    since = p.node_unreachable_since.as_deref().unwrap_or_default(),
                    "nodes under the attempt unreachable past the grace period; counted lost"
                );
            }
            Member::Pods(pods)
        }
        // The member refused the attempt's objects for good (a pull-mode agent's report):
        // the plan ends the attempt as for a refused dispatch.
        Err(Error::Rejected { provider, message }) => {
            tracing::warn!(%provider, error = %message, "member refused the attempt's objects");
            Member::Rejected(message)
        }
        // Its API server forbids them (a pull-mode agent's report): the plan ends the
        // attempt once that has lasted past the grace period.
        Err(Error::Forbidden { provider, message }) => {
            tracing::warn!(%provider, error = %message, "member forbids the attempt's objects");
            Member::Forbidden(message)
        }
        Err(Error::NotTakenUp { provider, message }) => {
            tracing::warn!(%provider, error = %message, "the agent has not taken the attempt up");
            Member::NotTakenUp
        }
        Err(e) => {
            // Within the grace period a silent member is waited for; say why, since a
            // refusal (403 from missing RBAC) looks the same from here as an outage.
            tracing::warn!(provider = %p.provider, error = %e, "cannot observe the attempt in its member");
            Member::Unanswered
        }
    }
}

/// A serving job's endpoint after this round: from the live attempt's pod (its real
/// `Ready` condition) and its Service as the member allocated it. A silent member keeps
/// the last one; no live attempt, none.
pub(super) async fn observe_endpoint(
    ctx: &Context,
    job: &ComputeJob,
    member: &Member,
    status: &ComputeJobStatus,
    now: i64,
) -> Option<gpufed_api::serving::Endpoint> {
    let serving = job.spec.serving.as_ref()?;
    let p = status.placement.as_ref()?;
    let previous = job.status.as_ref().and_then(|s| s.endpoint.as_ref());
    let Member::Pods(pods) = member else {
        return previous.filter(|e| e.provider == p.provider).cloned();
    };
    let ns = names::tenant_namespace(&job.namespace().unwrap_or_default(), &job.name_any());
    let exposure = match connect(ctx, &p.provider).await {
        Ok((_, link)) => link
            .exposure(&ns, job.metadata.uid.as_deref().unwrap_or_default(), p.attempt)
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    Some(serving::endpoint(
        serving,
        &ns,
        &p.provider,
        pods,
        exposure.as_ref(),
        previous,
        &crate::time::format(now),
    ))
}
