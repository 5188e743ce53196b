//! The provider controller: observe the member cluster (I/O) → plan the status (pure)
//! → write it (server-side apply, one field manager). Runs every heartbeat interval.

mod kept;
mod observe;
mod pacing;
pub mod plan;
mod records;
mod reports;
mod retry;

pub use observe::{count_pods, gpu_node, gpu_pod, probe, probe_with};
pub use reports::probe_reports;
pub(crate) use reports::report_of;

use pacing::{probe_cycle, probe_interval, too_soon, until_round};
use records::{outcome_counts, record_evidence};

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use gpufed_api::GpuProvider;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::federation::LinkError;
use crate::metrics::ControllerLabel;
use crate::verification::plan::Bonded;

/// Reconciles one provider.
#[tracing::instrument(skip_all, fields(provider = %provider.name_any()))]
pub async fn reconcile(provider: Arc<GpuProvider>, ctx: Arc<Context>) -> Result<Action> {
    // Every write below checks that the term this reconcile began in still holds: one can
    // take tens of seconds, and must not write after the Lease lapsed.
    let fence = ctx.leadership.fence();
    if !fence.holds() {
        return Ok(Action::requeue(ctx.config.heartbeat_interval));
    }
    // What this process knew from an earlier term may be stale: another replica led since.
    ctx.verifier.enter_term(fence.term());
    kept::adopt(&ctx, &provider, crate::time::now_millis()).await;
    let started = Instant::now();
    let name = provider.name_any();
    let interval = probe_interval(&ctx, &name);
    // A node published a new report while the hub waits for a commitment: look now, the
    // hub's clock on the challenge is running.
    let woken = ctx.members.report_wakes().take(&name);
    if let Some(wait) = too_soon(
        &ctx,
        &name,
        provider.metadata.generation,
        (started, crate::time::now_millis()),
        interval,
        woken,
    ) {
        return Ok(Action::requeue(until_round(&ctx, wait)));
    }
    // The hub itself failed (reading the kubeconfig Secret, preparing a pull-mode
    // provider's namespace): nothing is known of the provider. Anything else — its Secret
    // forbidden or missing included — is the provider's, said in its status.
    let link = match ctx.members.link_checked(&provider).await {
        Ok(link) => Ok(link),
        Err(LinkError {
            error: Error::Hub(e), ..
        }) => return Err(Error::Hub(e)),
        Err(LinkError { reason, error }) => Err(plan::Unreachable {
            reason,
            message: error.to_string(),
        }),
    };
    let mut reports_only = false;
    let probe = match &link {
        Ok(link) => match observe(&ctx, link, &provider).await {
            Ok((view, only)) => {
                reports_only = only;
                Ok(view)
            }
            // The hub itself failed (pull mode reads the agent's report there).
            Err(Error::Hub(e)) => return Err(Error::Hub(e)),
            Err(e) => Err(plan::Unreachable::from(e.to_string())),
        },
        Err(e) => Err(e.clone()),
    };
    let now = crate::time::now();
    let now_ms = crate::time::now_millis();
    let kept = kept::load(&ctx, &provider, now_ms).await;
    match (&probe, &link) {
        (Ok(view), Ok(link)) => {
            if !reports_only {
                if ctx.fleet.probe_failed(&name).await {
                    wake_jobs_of(&ctx, &name);
                }
                ctx.fleet.update(&name, view.clone()).await;
                // Placement leaves these nodes out (mapping::sanitize); say so once a
                // heartbeat, here, rather than every placement round. (The span names the
                // provider.)
                let ignored = crate::mapping::sanitize::problems(view);
                if !ignored.is_empty() {
                    tracing::warn!(
                        nodes = ignored.iter().map(|p| p.nodes()).sum::<usize>(),
                        problems = %crate::mapping::sanitize::summary(&ignored),
                        "member reports invalid GPU nodes; they are not offered for placement"
                    );
                }
            }
            // Judging recomputes sampled rows (up to seconds for a node of f64 GPUs): off
            // the async workers.
            let step = kept.then(|| {
                let (ctx, name, view) = (ctx.clone(), name.clone(), view.clone());
                tokio::task::spawn_blocking(move || ctx.verifier.step(&name, &view, now_ms))
            });
            let desired = match step {
                Some(handle) => handle.await.unwrap_or_else(|e| {
                    // A panic there would otherwise stop this provider's verification
                    // without a word.
                    tracing::error!(error = %e, "the verification step failed");
                    None
                }),
                None => None,
            };
            ctx.members
                .report_wakes()
                .await_reports(&name, ctx.verifier.challenging(&name));
            if let Some(desired) = desired
                && fence.holds()
                && let Err(e) = link.write_challenges(&desired).await
            {
                tracing::warn!(error = %e, "cannot write challenge requests to the member");
            }
            kept::save(&ctx, &provider, &fence).await;
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, reason = e.reason, "provider unreachable");
            ctx.fleet
                .mark_unreachable(&name, fence.term(), now, probe_cycle(&ctx))
                .await;
            ctx.verifier.member_missed(&name, now_ms);
            if provider.spec.mode == gpufed_api::provider::ConnectionMode::Pull {
                // Its agent namespace may have been deleted out of band.
                ctx.members.recheck_prepared(&name).await;
            }
        }
    }
    let now_text = crate::time::format(now);
    let mut status = plan::status(&provider, &probe, now, &now_text);
    if reports_only
        && let Some(beat) = provider
            .status
            .as_ref()
            .and_then(|s| s.last_heartbeat_time.clone())
    {
        // The heartbeat is the whole probe's: a challenge round writes the status only
        // when a verdict changes it, not every second for the time.
        status.last_heartbeat_time = Some(beat);
    }
    if provider.spec.drain {
        let remaining = ctx
            .jobs
            .state()
            .iter()
            .filter(|j| crate::mapping::is_live(j))
            .filter(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.placement.as_ref())
                    .is_some_and(|p| p.provider == name)
            })
            .count();
        let held: Vec<String> = ctx
            .drain_held
            .read()
            .ok()
            .and_then(|h| h.get(&name).cloned())
            .unwrap_or_default()
            .into_iter()
            .collect();
        plan::drain(&mut status, &provider, remaining, &held, now, &now_text);
    }
    // Until the kept verdicts are loaded, the verification status stays as the hub has it
    // (a new leader knows no verdict yet: it must not write "no challenge answered").
    if kept
        && status
            .conditions
            .iter()
            .all(|c| c.type_ != gpufed_api::conditions::types::STALLED)
    {
        let seed = provider
            .status
            .as_ref()
            .and_then(|s| s.reputation.as_ref()?.uptime_percent)
            .map(|p| f64::from(p) / 100.0);
        let outcomes = outcome_counts(&ctx, &provider, &fence).await;
        let (verdict, problems) = ctx.verifier.verdict(&name, now_ms);
        let next_round = crate::time::format(
            i64::try_from(ctx.verifier.rounds().next_after(now_ms) / 1000).unwrap_or(i64::MAX),
        );
        let uptime = ctx.verifier.uptime(&name, seed, probe.is_ok());
        let inputs = crate::verification::plan::reputation_inputs(&verdict, uptime, outcomes);
        crate::verification::plan::apply(
            &mut status,
            &verdict,
            &problems,
            &inputs,
            provider.metadata.generation,
            (&now_text, &next_round),
        );
        let stake_view = ctx.stakes.read().ok().and_then(|v| v.clone());
        let cfg = ctx.verifier.config();
        let policy = crate::verification::plan::stake_policy(
            &cfg.stake_per_gpu,
            &cfg.stake_multipliers,
            // Unknown until the Stake controller has read the mint: never a made-up 0.
            stake_view.as_ref().map(|v| v.decimals),
        );
        crate::verification::plan::staked(
            &mut status,
            match stake_view {
                Some(v) => Bonded::Known(v.bonded.get(&name).copied().unwrap_or(0)),
                None if ctx.stake_required => Bonded::Unknown,
                None => Bonded::NotRequired,
            },
            &policy,
            &verdict.verified_by_model,
            provider.metadata.generation,
            &now_text,
        );
        if fence.holds()
            && let Some(evidence) = ctx.verifier.failed_challenge_evidence(&name, &verdict, &now_text)
        {
            record_evidence(&ctx, &evidence, now_ms).await;
        }
        ctx.verifier.losses.look(now, || ctx.providers.state());
        let views = ctx.job_views.get(&ctx.jobs, Instant::now());
        let lost = crate::verification::abandoned::evidence(
            &name,
            views.of_provider(&name).iter().map(AsRef::as_ref),
            |end| ctx.verifier.losses.attributable(end, now),
        );
        if let Some(evidence) = lost
            && fence.holds()
        {
            record_evidence(&ctx, &evidence, now_ms).await;
        }
    }
    // Whatever was added since (verification's conditions) fits the schema too.
    plan::fit::messages(&mut status);
    if !fence.holds() {
        tracing::info!("leadership lapsed during the reconcile: nothing more written");
        return Ok(Action::requeue(ctx.config.heartbeat_interval));
    }
    if provider.status.as_ref() != Some(&status) {
        write_status(&ctx, &provider, status).await?;
    }
    ctx.metrics
        .reconcile_duration_seconds
        .get_or_create(&ControllerLabel {
            controller: "provider",
        })
        .observe(started.elapsed().as_secs_f64());
    crate::context::succeeded(&ctx, "provider", provider.as_ref());
    Ok(Action::requeue(until_round(&ctx, probe_interval(&ctx, &name))))
}

/// Probes the member: reports-only ([`crate::member::Link::probe_reports`], merged into
/// the view the fleet holds) while one of the provider's nodes has a challenge open and
/// this process probed it whole within the last heartbeat; else whole. `true` with a
/// reports-only probe. Metered by kind (`gpufed_member_probes_total`: `whole`, `reports`,
/// or `watched` when the reports came from the member's node watch).
async fn observe(
    ctx: &Context,
    link: &crate::member::Link,
    provider: &GpuProvider,
) -> Result<(crate::fleet::MemberView, bool)> {
    let name = provider.name_any();
    let beat = ctx.config.heartbeat_interval.mul_f64(0.9);
    let count = |kind: &'static str| {
        ctx.metrics
            .member_probes_total
            .get_or_create(&crate::metrics::ProbeLabel { kind })
            .inc();
    };
    if ctx.verifier.challenging(&name)
        && ctx.fleet.probed_within(&name, beat).await
        && let Some(fresh) = link.probe_reports(provider).await
    {
        let (fresh, kind) = fresh?;
        if let Some(view) = ctx.fleet.merge_reports(&name, fresh).await {
            count(kind);
            return Ok((view, true));
        }
    }
    let view = link.probe(provider).await?;
    count("whole");
    Ok((view, false))
}

/// The provider answers again: its jobs' reconciles that failed while it was away (their
/// member cleanup on deletion, their pods' view) run now, not when their per-object
/// backoff — grown with every failure of the outage, minutes by then — comes due.
fn wake_jobs_of(ctx: &Context, provider: &str) {
    let jobs: Vec<_> = ctx
        .job_views
        .get(&ctx.jobs, Instant::now())
        .of_provider(provider)
        .iter()
        .filter(|j| crate::job::touches_provider(j, provider))
        .map(|j| kube::runtime::reflector::ObjectRef::from_obj(j.as_ref()))
        .collect();
    for j in &jobs {
        ctx.backoff.reset(&format!("job/{j}"));
    }
    tracing::info!(
        provider,
        jobs = jobs.len(),
        "provider reachable again: waking its jobs"
    );
    ctx.members.wake_jobs(jobs);
}

async fn write_status(
    ctx: &Context,
    provider: &GpuProvider,
    status: gpufed_api::GpuProviderStatus,
) -> Result<()> {
    let api: Api<GpuProvider> = Api::all(ctx.hub.clone());
    // The resourceVersion in an apply body is a precondition: a stale leader's write
    // (or one racing a newer observation) is refused with 409.
    let patch = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "GpuProvider",
        "metadata": {"resourceVersion": provider.resource_version()},
        "status": status,
    });
    api.patch_status(
        &provider.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::hub("GpuProvider status", e))?;
    Ok(())
}

/// The provider controller's watch configuration.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Runs the provider controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    controller: Controller<GpuProvider>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, retry::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
