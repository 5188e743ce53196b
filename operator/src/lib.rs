//! gpufed hub operator: federates GPU provider clusters and runs ComputeJobs on them.
//!
//! Controllers follow observe (I/O) → plan (pure) → apply (I/O) → status:
//! - [`provider`]: probes each member cluster, keeps inventory and heartbeat in status;
//! - [`placement`]: global rounds of the pure placement engine over queued jobs;
//! - [`job`]: dispatches placed attempts to members, meters them, fails them over.
//! - [`stake`]: verifies Stake deposits on Solana, unbonds and slashes them.
//!
//! Only the Lease holder ([`lease`]) acts; every status write carries the
//! resourceVersion it was computed from, so a stale leader's write is refused.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod context;
pub mod error;
pub mod federation;
pub mod fleet;
pub mod job;
pub mod lease;
pub mod mapping;
pub mod member;
pub mod metrics;
pub mod placement;
pub mod provider;
pub mod quota;
pub mod report;
pub mod service;
pub mod settlement;
pub mod stake;
pub mod synced;
pub mod telemetry;
pub mod time;
pub mod verification;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod test_http;

use std::sync::Arc;

use anyhow::Context as _;
use gpufed_api::{ComputeJob, GpuProvider};
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

/// The field manager of every write the operator makes, but for jobs' `status.billing`
/// ([`settlement::billing::BILLING_FIELD_MANAGER`], which says why).
pub const FIELD_MANAGER: &str = "gpufed-operator";

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: cli::Args) -> anyhow::Result<()> {
    let hub = Client::try_default()
        .await
        .context("connecting to the hub API server (KUBECONFIG)")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    run_with(hub, args, rx).await
}

/// Runs the operator against `hub` until `shutdown` turns true (tests drive this).
pub async fn run_with(hub: Client, args: cli::Args, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    // Fail early, with a hint, when the CRDs are missing.
    Api::<ComputeJob>::all(hub.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("listing ComputeJobs: are the gpufed CRDs installed? (kubectl apply -f crds/)")?;
    // The newest kind: without it placement would wait forever for the quotas' cache.
    Api::<gpufed_api::ComputeQuota>::all(hub.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("listing ComputeQuotas: are the gpufed CRDs up to date? (upgrade the gpufed-crds chart, or kubectl apply -f crds/)")?;
    let settlement_cfg = args.settlement().map_err(anyhow::Error::msg)?;
    let stake_cfg = args.stake().map_err(anyhow::Error::msg)?;
    let verify_cfg = args.verification().map_err(anyhow::Error::msg)?;
    for band in &verify_cfg.bands.bands {
        let (note, weak) = crate::verification::clock_note(band, args.challenge_poll);
        if weak {
            tracing::warn!(model = %band.model, "{note}");
        } else {
            tracing::info!(model = %band.model, "{note}");
        }
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gpufed".into());
        format!("{host}-{}", std::process::id())
    });
    let elector = Arc::new(lease::Elector::new(
        hub.clone(),
        &args.namespace,
        identity.clone(),
        args.lease_duration,
    ));
    let (provider_ctl, providers_synced) =
        synced::controller(Api::<GpuProvider>::all(hub.clone()), provider::watch_config());
    // A push member's node publishing a commitment wakes its provider at once.
    let (report_changes, woken_providers) = futures::channel::mpsc::unbounded();
    let provider_ctl = provider_ctl
        .trigger_backoff(backoff::WatchBackoff::default())
        .reconcile_on(woken_providers);
    // Member pods' changes (from the push members' watches) wake their jobs at once.
    let (pod_changes, changed_jobs) = futures::channel::mpsc::unbounded();
    let (job_ctl, jobs_synced) = synced::controller(Api::<ComputeJob>::all(hub.clone()), job::watch_config());
    let job_ctl = job_ctl
        .trigger_backoff(backoff::WatchBackoff::default())
        .reconcile_on(changed_jobs);
    let service::Controllers {
        controller: service_ctl,
        services_synced,
        revisions,
        revisions_synced,
    } = service::controller(&hub);
    let (quota_ctl, quotas_synced) = quota::controller(&hub);
    // Namespaces' labels, for providers' tenant selectors (placement waits for them
    // only while some provider has a selector).
    let (namespaces, namespaces_synced, fill_namespaces) = synced::cache(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(hub.clone()),
        watcher::Config::default().any_semantic(),
    );
    let metrics = metrics::Metrics::new();
    metrics.set_round_trip_limits(&verify_cfg.bands);
    metrics
        .challenge_round_grace_seconds
        .set(verify_cfg.round_grace.as_secs_f64());
    let ctx = Arc::new(context::Context {
        hub: hub.clone(),
        members: federation::Members::new(hub.clone(), args.member_timeout)
            .with_agent_interval(args.heartbeat_interval, args.challenge_poll)
            .with_secret_recheck(args.heartbeat_interval)
            .with_job_trigger(pod_changes)
            .with_provider_trigger(report_changes),
        fleet: fleet::Fleet::default(),
        providers: provider_ctl.store(),
        providers_synced,
        jobs: job_ctl.store(),
        jobs_synced,
        services: service_ctl.store(),
        services_synced,
        quotas: quota_ctl.store(),
        quotas_synced,
        namespaces,
        namespaces_synced,
        revisions,
        revisions_synced,
        leadership: elector.leadership(),
        metrics: metrics.clone(),
        backoff: backoff::Backoff::default(),
        placement_trigger: tokio::sync::Notify::new(),
        config: context::Timing {
            heartbeat_interval: args.heartbeat_interval,
            placement_interval: args.placement_interval,
            challenge_poll: args.challenge_poll,
            preemption: args.preemption,
        },
        settles: settlement_cfg.is_some(),
        serving_cidrs: args.serving_endpoint_cidrs.clone(),
        held_tenants: Default::default(),
        drain_held: Default::default(),
        job_views: Default::default(),
        settlement_paused: Default::default(),
        probed: Default::default(),
        verifier: verification::Verifier::new(verify_cfg).with_metrics(metrics.clone()),
        stakes: Default::default(),
        stake_required: stake_cfg.is_some(),
        reporter: report::Reporter::new(hub.clone(), &identity),
    });
    let readiness = admin::Readiness::default();
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin = tokio::spawn(admin::serve(
        args.admin_addr,
        readiness.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let ready = {
        let (ctx, readiness) = (ctx.clone(), readiness.clone());
        tokio::spawn(async move {
            if ctx.providers_synced.wait().await.is_ok()
                && ctx.jobs_synced.wait().await.is_ok()
                && ctx.services_synced.wait().await.is_ok()
                && ctx.revisions_synced.wait().await.is_ok()
                && ctx.quotas_synced.wait().await.is_ok()
                && ctx.namespaces_synced.wait().await.is_ok()
            {
                readiness.set_ready();
                tracing::info!("caches synced: ready");
            }
        })
    };
    // Pull-mode agents' reports wake their providers while a challenge is open.
    let agent_reports = tokio::spawn(member::wakes::watch_agent_reports(
        hub.clone(),
        ctx.members.report_wakes().clone(),
    ));
    let leader_gauge = {
        let (mut changes, metrics) = (ctx.leadership.subscribe(), metrics.clone());
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                metrics.leader.set(i64::from(*changes.borrow()));
            }
        })
    };
    // The Lease stays held (renewed) after shutdown until the controllers drained: a
    // successor must not start while this replica still finishes reconciles and rounds.
    let (drained, drained_rx) = watch::channel(false);
    let election = {
        let (elector, rx) = (elector.clone(), shutdown.clone());
        tokio::spawn(async move { elector.run(rx, drained_rx).await })
    };
    let settle = {
        let (ctx, rx) = (ctx.clone(), shutdown.clone());
        async move {
            match settlement_cfg {
                Some(cfg) => settlement::run(ctx, cfg, rx).await,
                None => tracing::info!("settlement off (no --solana-rpc)"),
            }
        }
    };
    let stakes = {
        let (ctx, rx) = (ctx.clone(), shutdown.clone());
        async move {
            if let Some(cfg) = stake_cfg {
                stake::run(ctx, cfg, rx).await;
            }
        }
    };
    let namespace_cache = {
        let rx = shutdown.clone();
        async move {
            tokio::select! {
                () = fill_namespaces => {}
                () = stop(rx) => {}
            }
        }
    };
    tokio::join!(
        namespace_cache,
        provider::run(ctx.clone(), provider_ctl, stop(shutdown.clone())),
        job::run(ctx.clone(), job_ctl, stop(shutdown.clone())),
        service::run(ctx.clone(), service_ctl, stop(shutdown.clone())),
        quota::run(ctx.clone(), quota_ctl, stop(shutdown.clone())),
        placement::run(ctx.clone(), shutdown.clone()),
        settle,
        stakes,
    );
    // The controllers drained; give up the Lease so a successor starts at once.
    let _ = drained.send(true);
    let _ = election.await;
    ready.abort();
    leader_gauge.abort();
    agent_reports.abort();
    if let Ok(Err(e)) = admin.await {
        tracing::warn!(error = %e, "admin server failed");
    }
    Ok(())
}
