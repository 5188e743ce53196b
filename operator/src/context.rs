//! State shared by the controllers of one operator process.

use std::sync::Arc;
use std::time::Duration;

use gpufed_api::{ComputeJob, GpuProvider};
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::federation::Members;
use crate::fleet::Fleet;
use crate::lease::Leadership;
use crate::metrics::{ErrorLabel, Metrics};

/// Timing knobs.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Provider probe period.
    pub heartbeat_interval: Duration,
    /// Provider probe period while one of its nodes has a challenge open: the hub's clock
    /// for a node's answer has this granularity (docs/trust.md).
    pub challenge_poll: Duration,
    /// Placement round period when nothing triggers one.
    pub placement_interval: Duration,
    /// Whose running work a job with `preemptLowerPriority` may evict.
    pub preemption: crate::placement::Preemption,
}

/// A provider's last probe: when, at which generation, and when on the wall clock (ms).
pub type Probed = (std::time::Instant, Option<i64>, u64);

/// Everything a reconcile needs.
pub struct Context {
    /// Hub client.
    pub hub: Client,
    /// Member clients.
    pub members: Members,
    /// Last observation of each member.
    pub fleet: Fleet,
    /// Providers as the hub stores them.
    pub providers: Store<GpuProvider>,
    /// Whether `providers` holds its first complete listing (wait on this, never on the
    /// store: see [`crate::synced`]).
    pub providers_synced: crate::synced::Synced,
    /// Jobs as the hub stores them.
    pub jobs: Store<ComputeJob>,
    /// `jobs` grouped by provider and namespace, for the per-heartbeat readers.
    pub job_views: crate::job::views::JobViews,
    /// Whether `jobs` holds its first complete listing.
    pub jobs_synced: crate::synced::Synced,
    /// Hub ComputeServices (the service controller's cache): their disruption budgets.
    pub services: Store<gpufed_api::ComputeService>,
    /// Whether `services` holds its first listing.
    pub services_synced: crate::synced::Synced,
    /// Hub ComputeQuotas (the quota controller's cache): the namespaces' caps.
    pub quotas: Store<gpufed_api::ComputeQuota>,
    /// Whether `quotas` holds its first listing.
    pub quotas_synced: crate::synced::Synced,
    /// Hub namespaces (their labels decide providers' `spec.tenants.namespaceSelector`).
    pub namespaces: Store<k8s_openapi::api::core::v1::Namespace>,
    /// Whether `namespaces` holds its first listing (until then no selector admits).
    pub namespaces_synced: crate::synced::Synced,
    /// The ComputeServices' revision history (ControllerRevisions labelled
    /// `gpufed.io/service`).
    pub revisions: Store<k8s_openapi::api::apps::v1::ControllerRevision>,
    /// Whether `revisions` holds its first listing.
    pub revisions_synced: crate::synced::Synced,
    /// Leadership.
    pub leadership: Leadership,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-object backoff.
    pub backoff: Backoff,
    /// Wakes the placement round.
    pub placement_trigger: Notify,
    /// Timing knobs.
    pub config: Timing,
    /// Settlement runs (usage is metered into the journal and `status.billing`).
    pub settles: bool,
    /// Networks a serving replica's address must lie in to be routed at the hub (empty:
    /// any but loopback, link-local, multicast, unspecified).
    pub serving_cidrs: Vec<ipnet::IpNet>,
    /// Tenants (namespaces) whose new jobs are held from starting because settlement
    /// cannot charge them (no escrow, or the escrow cannot cover their usage), with why.
    /// Written by settlement, read by placement; running jobs are never touched.
    pub held_tenants: std::sync::RwLock<std::collections::BTreeMap<String, String>>,
    /// Per draining provider, the disruption budgets that keep some of its work for now
    /// (the placement leader's last round); its provider status says so.
    pub drain_held: std::sync::RwLock<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
    /// Why settlement is not running rounds (cannot start, or its last term failed);
    /// `None` while it runs. Deletions waiting for usage to be journaled say this.
    pub settlement_paused: std::sync::RwLock<Option<String>>,
    /// When each provider was last probed (and on the wall clock, ms), and at which
    /// generation: its own status writes wake the controller, which must not probe again
    /// before the heartbeat interval (that was a probe-and-write loop as fast as the API
    /// server answered) — unless a challenge round started since.
    pub probed: std::sync::Mutex<std::collections::BTreeMap<String, Probed>>,
    /// GPU verification state (challenges in flight, verdicts, uptime).
    pub verifier: crate::verification::Verifier,
    /// Publishes Kubernetes Events on hub objects.
    pub reporter: crate::report::Reporter,
    /// Bonded stake per provider, published by the Stake controller after each round;
    /// `None` while it does not run (then no `Staked` condition is computed).
    pub stakes: std::sync::RwLock<Option<StakeView>>,
    /// Whether the Stake controller runs: then a provider whose stake it has not read yet
    /// is `Staked=Unknown` (its GPUs not counted as verified), not exempt.
    pub stake_required: bool,
}

/// What the Stake controller last saw bonded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StakeView {
    /// Decimals of the stake mint.
    pub decimals: u8,
    /// Bonded base units per provider (sum over its Bonded / Unbonding Stakes).
    pub bonded: std::collections::BTreeMap<String, u64>,
}

impl Context {
    /// Why settlement is paused, if it is.
    pub fn settlement_paused(&self) -> Option<String> {
        self.settlement_paused.read().ok()?.clone()
    }

    /// Records whether settlement runs (`None`) or why it does not.
    pub fn set_settlement_paused(&self, why: Option<String>) {
        if let Ok(mut p) = self.settlement_paused.write() {
            *p = why;
        }
    }

    /// Why `tenant`'s new jobs are held, if they are.
    pub fn held(&self, tenant: &str) -> Option<String> {
        self.held_tenants.read().ok()?.get(tenant).cloned()
    }
}

/// Error policy shared by the controllers: count the error by category and retry the
/// object with its own exponential backoff.
pub fn error_policy<K: kube::Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        let key = format!(
            "{controller}/{}",
            kube::runtime::reflector::ObjectRef::from_obj(obj.as_ref())
        );
        let delay = ctx.backoff.fail(&key, rand::random::<f64>());
        ctx.metrics
            .reconcile_errors_total
            .get_or_create(&ErrorLabel {
                controller,
                category: error.category(),
            })
            .inc();
        tracing::warn!(object = %key, error = %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }
}

/// Forgets an object's failures after a successful reconcile.
pub fn succeeded<K: kube::Resource<DynamicType = ()>>(ctx: &Context, controller: &str, obj: &K) {
    ctx.backoff.reset(&format!(
        "{controller}/{}",
        kube::runtime::reflector::ObjectRef::from_obj(obj)
    ));
}

/// Runs one reconcile of `obj` under `finalizer_name` (apply, or cleanup on deletion),
/// timing it for the `controller`'s metrics and forgetting its backoff on success.
pub async fn finalized<K, A, C, FA, FC>(
    ctx: &Context,
    controller: &'static str,
    finalizer_name: &str,
    obj: Arc<K>,
    apply: A,
    cleanup: C,
) -> crate::error::Result<Action>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + Sync
        + 'static,
    A: FnOnce(Arc<K>) -> FA,
    C: FnOnce(Arc<K>) -> FC,
    FA: std::future::Future<Output = crate::error::Result<Action>>,
    FC: std::future::Future<Output = crate::error::Result<Action>>,
{
    use kube::ResourceExt;
    use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};
    let started = std::time::Instant::now();
    let api: kube::Api<K> = kube::Api::namespaced(ctx.hub.clone(), &obj.namespace().unwrap_or_default());
    let result = finalizer(&api, finalizer_name, obj.clone(), |event| async move {
        match event {
            Event::Apply(o) => apply(o).await,
            Event::Cleanup(o) => cleanup(o).await,
        }
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconcile_duration_seconds
        .get_or_create(&crate::metrics::ControllerLabel { controller })
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        succeeded(ctx, controller, obj.as_ref());
    }
    result
}
