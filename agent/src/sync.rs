//! One sync round of the agent, hub ↔ member. Level-triggered: every round re-reads the
//! hub's wishes and the member's facts, so a restarted agent, or one back from a hub
//! outage, simply converges.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use gpufed_api::Assignment;
use gpufed_api::assignment::{AssignedPod, AssignmentStatus, reasons};
use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions;
use gpufed_api::pull::{self, AGENT_CONFIGMAP, AGENT_FIELD_MANAGER};
use gpufed_operator::fleet::MemberView;
use gpufed_operator::member::ops;
use gpufed_operator::member::pull::{AgentConfig, assigned_pod};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

pub use crate::withdraw::{Withdrawn, credentials_withdrawn, withdrawn};

/// Condition type on Assignments: whether the agent applied the objects.
pub use gpufed_api::assignment::APPLIED;

/// What the agent remembers between rounds (all of it can be lost: a restart re-reads).
pub struct State {
    pub(crate) interval: Duration,
    pub(crate) sequence: u64,
    /// Assignments applied: name → (uid, generation).
    applied: BTreeMap<String, (String, i64)>,
    /// The challenge data last passed on to the member.
    pub(crate) mirrored: Option<BTreeMap<String, String>>,
    /// The hub's `challengePollMillis` (zero: reports-only rounds off).
    challenge_poll: Duration,
    /// The provider's node selector, from the hub's config.
    pub(crate) node_selector: Option<BTreeMap<String, String>>,
    /// The view last reported.
    pub(crate) view: Option<MemberView>,
}

impl State {
    /// A fresh state, reporting every `interval` until the hub says otherwise.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            sequence: 0,
            applied: BTreeMap::new(),
            mirrored: None,
            challenge_poll: Duration::ZERO,
            node_selector: None,
            view: None,
        }
    }

    /// The current round interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When a challenge is open: how soon the next reports-only round is due
    /// ([`crate::relay`]).
    pub fn fast_every(&self) -> Option<Duration> {
        crate::relay::fast_every(self.challenge_poll, self.mirrored.as_ref())
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(AGENT_FIELD_MANAGER).force()
}

/// One round: config, challenges, report (the heartbeat), assignments, removals.
pub async fn round(hub: &Client, member: &Client, st: &mut State) -> anyhow::Result<()> {
    let hub_cms: Api<ConfigMap> = Api::default_namespaced(hub.clone());
    let cfg_cm = hub_cms
        .get_opt(AGENT_CONFIGMAP)
        .await
        .context("reading the agent config from the hub")?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the hub has not prepared this provider's agent namespace (is the GpuProvider in Pull mode?)"
            )
        })?;
    let cfg = AgentConfig::from_data(&cfg_cm.data.unwrap_or_default()).map_err(anyhow::Error::msg)?;
    (st.interval, st.challenge_poll) = pace(&cfg);
    st.node_selector = Some(cfg.node_selector.clone());

    crate::relay::relay_challenges(hub, member, st).await?;

    let view = ops::probe_with(
        member.clone(),
        &cfg.resource_name,
        &cfg.node_selector,
        &cfg.exposed_node_labels,
    )
    .await
    .context("observing this cluster")?;
    crate::relay::publish(hub, st, view).await?;

    assignments_round(hub, member, st).await
}

/// Pure: the report interval and the challenge poll the hub's config asks for, within
/// bounds: a huge value would overflow the agent's timers (a panic at every round, so no
/// heartbeat ever), and an agent reporting hourly is as good as silent anyway.
pub fn pace(cfg: &AgentConfig) -> (Duration, Duration) {
    (
        Duration::from_secs(cfg.interval_seconds.clamp(1, pull::MAX_INTERVAL_SECONDS)),
        Duration::from_millis(cfg.challenge_poll_millis.min(pull::MAX_CHALLENGE_POLL_MILLIS)),
    )
}

/// The assignments part of a round alone: what a change of the Assignments wakes.
pub async fn assignments_round(hub: &Client, member: &Client, st: &mut State) -> anyhow::Result<()> {
    let assignments: Api<Assignment> = Api::default_namespaced(hub.clone());
    let list = assignments
        .list(&ListParams::default())
        .await
        .context("listing assignments")?
        .items;
    let mut pending = Vec::new();
    for a in &list {
        let status = sync_assignment(member, a, st).await;
        if a.status.as_ref() != Some(&status) {
            pending.push((a, status));
        }
    }
    let writes = pending
        .iter()
        .map(|(a, s)| (*a, report(&assignments, a, s)))
        .collect();
    let failed = crate::status::write_all(writes).await;
    let names: BTreeSet<String> = list.iter().map(ResourceExt::name_any).collect();
    st.applied.retain(|n, _| names.contains(n));
    // The list succeeded: what it no longer names goes, whatever a status write did.
    let removed = crate::withdraw::remove_withdrawn(member, &list).await;
    match failed {
        None => removed,
        Some(e) => {
            if let Err(r) = removed {
                tracing::warn!(error = %format!("{r:#}"), "removing withdrawn work failed; retrying next round");
            }
            Err(e)
        }
    }
}

/// Writes `status` on the Assignment `a` as listed, only if it is still that object: the
/// apply names its resourceVersion, so an Assignment deleted and made again under the same
/// name (a job re-created with the same name gets the same tenant namespace and attempt
/// names) never gets the status of the pods of the one it replaced. A conflict is left to
/// the next round, which reads the new object.
pub async fn report(api: &Api<Assignment>, a: &Assignment, status: &AssignmentStatus) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Assignment",
        "metadata": {"name": a.name_any(), "resourceVersion": a.resource_version()},
        "status": status,
    });
    match api
        .patch_status(&a.name_any(), &apply_params(), &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
            tracing::debug!(assignment = %a.name_any(), reason = %e.message, "assignment changed since listed; reported next round");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reporting Assignment {}", a.name_any())),
    }
}

/// Applies one assignment (when new or when pods are missing) and observes its pods.
async fn sync_assignment(member: &Client, a: &Assignment, st: &mut State) -> AssignmentStatus {
    let generation = a.metadata.generation.unwrap_or(0);
    let now = gpufed_operator::time::format(gpufed_operator::time::now());
    let mut status = a.status.clone().unwrap_or_default();
    status.observed_generation = Some(generation);
    let set = |status: &mut AssignmentStatus, s, reason: &str, msg: String| {
        conditions::set(
            &mut status.conditions,
            conditions::condition(APPLIED, s, reason, msg, Some(generation), &now),
        );
    };
    let objects = match crate::accept::accept(a) {
        Ok(o) => o,
        Err(msg) => {
            tracing::warn!(assignment = %a.name_any(), reason = %msg, "assignment refused");
            set(&mut status, ConditionStatus::False, reasons::REFUSED, msg);
            status.pods.clear();
            return status;
        }
    };
    let key = (a.uid().unwrap_or_default(), generation);
    let tenant = &a.spec.tenant_namespace;
    let mut pods = observe(member, tenant, &a.spec.job_uid, a.spec.attempt).await;
    let fresh = st.applied.get(&a.name_any()) != Some(&key);
    let missing = matches!(&pods, Ok(p) if p.len() < objects.pods.len());
    // A worker missing from a gang that ran whole is not created again: one rank restarted
    // beside peers mid-run is no gang; the hub ends the attempt when it sees the gap, and
    // retries the job as a whole. "Ran whole" is kept in the status (`ranWhole`), not read
    // from the pods last reported: those lose the missing worker one round later, and a
    // restarted agent (everything fresh) has no rounds behind it.
    status.ran_whole = ran_whole_since(&status, pods.as_deref().ok(), objects.pods.len());
    if should_dispatch(fresh, missing, status.ran_whole) {
        // Listed by name: the agent's roles let it list namespaces, not get them.
        let by_name = ListParams::default().fields(&format!("metadata.name={tenant}"));
        let existing = match Api::<Namespace>::all(member.clone()).list(&by_name).await {
            Ok(l) => l.items.into_iter().next(),
            Err(e) => {
                let msg = format!("cannot tell whether namespace {tenant} is someone else's: {e}");
                set(&mut status, ConditionStatus::False, reasons::APPLY_FAILED, msg);
                return status;
            }
        };
        if let Some(msg) = crate::accept::foreign(existing.as_ref()) {
            tracing::warn!(assignment = %a.name_any(), reason = %msg, "assignment refused");
            set(&mut status, ConditionStatus::False, reasons::REFUSED, msg);
            status.pods.clear();
            return status;
        }
        match ops::dispatch(member, &objects).await {
            Ok(()) => {
                st.applied.insert(a.name_any(), key);
                pods = observe(member, tenant, &a.spec.job_uid, a.spec.attempt).await;
            }
            Err(e) => {
                let (reason, msg) = apply_failure(&e);
                tracing::warn!(assignment = %a.name_any(), reason, error = %msg, "applying the assignment failed");
                set(&mut status, ConditionStatus::False, reason, msg);
                return status;
            }
        }
    }
    if objects.exposure.is_some() {
        match ops::exposure(member, tenant, &a.spec.job_uid).await {
            Ok(e) => status.exposure = e,
            Err(e) => tracing::debug!(error = %e, "serving Service not readable"),
        }
    }
    match pods {
        Ok(p) => {
            status.pods = crate::status::merge_pods(&status.pods, p);
            set(
                &mut status,
                ConditionStatus::True,
                reasons::APPLIED,
                format!("{} pods in {tenant}", objects.pods.len()),
            );
        }
        Err(e) => set(
            &mut status,
            ConditionStatus::False,
            reasons::OBSERVE_FAILED,
            e.to_string(),
        ),
    }
    status
}

/// Pure: whether the gang of `workers` has run whole: as kept in the `previous` status, as
/// last reported there, or as `observed` now.
pub fn ran_whole_since(
    previous: &AssignmentStatus,
    observed: Option<&[AssignedPod]>,
    workers: usize,
) -> bool {
    previous.ran_whole
        || ran_whole(&previous.pods, workers)
        || observed.is_some_and(|p| ran_whole(p, workers))
}

/// Pure: whether to apply an assignment's objects: when this process has not applied its
/// generation yet, or a worker is missing; never when a worker is missing from a gang that
/// ran whole (the other objects exist already then, or the namespace went with them).
pub fn should_dispatch(fresh: bool, missing: bool, ran_whole: bool) -> bool {
    !(missing && ran_whole) && (fresh || missing)
}

/// Pure: whether the pods last reported for an assignment were the whole gang of `workers`,
/// every one running or done.
pub fn ran_whole(reported: &[AssignedPod], workers: usize) -> bool {
    workers > 0
        && reported.len() >= workers
        && reported
            .iter()
            .all(|p| p.phase == "Running" || p.phase == "Succeeded")
}

/// Pure: the `Applied=False` reason and message for an apply the member refused or that
/// failed. The member's API server refusing the objects as malformed or invalid (400, 422)
/// is [`reasons::REJECTED`] with its own answer: the same objects get the same answer, so
/// the hub ends the attempt instead of waiting. A 403 that does not pass (a permission this
/// agent lacks, an admission policy) is [`reasons::FORBIDDEN`]: retried, and ended by the
/// hub past its grace period. Anything else (the API server away, a full quota, 409, 5xx)
/// may heal: [`reasons::APPLY_FAILED`], retried next round.
pub fn apply_failure(e: &kube::Error) -> (&'static str, String) {
    let reason = if gpufed_operator::error::is_refusal(e) {
        reasons::REJECTED
    } else if gpufed_operator::error::is_forbidden(e) {
        reasons::FORBIDDEN
    } else {
        return (reasons::APPLY_FAILED, e.to_string());
    };
    let answer = match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        _ => e.to_string(),
    };
    (reason, answer)
}

/// The attempt's pods with the readiness of the nodes under them.
async fn observe(
    member: &Client,
    ns: &str,
    uid: &str,
    attempt: u32,
) -> Result<Vec<AssignedPod>, kube::Error> {
    let (pods, ready) = ops::attempt_pods_and_ready_nodes(member, ns, uid, attempt).await?;
    let mut out: Vec<AssignedPod> = pods.iter().filter_map(|p| assigned_pod(p, &ready)).collect();
    out.sort_by_key(|p| p.rank);
    Ok(out)
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
