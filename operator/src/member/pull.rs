//! Pull mode, hub side. A pull-mode provider's agent lives in the hub namespace
//! [`agent_namespace`]: the hub prepares it (ServiceAccount, bindings to the chart's
//! `gpufed-agent` ClusterRoles, the agent's config), writes [`Assignment`]s and the
//! challenge ConfigMap there, and reads the agent's report and the Assignments' status.
//! The agent's heartbeat is a new version of its report: the operator notes, on its own
//! clock, when it first saw each version, so neither the agent's clock nor the API
//! server's matters (the API server's stamp of the write, in `managedFields`, is only
//! shown).

mod owner;
mod prepare;
mod status;

pub use owner::{TAKEN, taken_by};
pub use prepare::ensure;
pub use status::{assigned_pod, pod_views, read_assignment};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gpufed_api::assignment::Assignment;
use gpufed_api::pull::{
    self, AGENT_CONFIGMAP, AGENT_FIELD_MANAGER, LABEL_TENANT_NAMESPACE, REPORT_CONFIGMAP, REPORT_KEY,
    agent_namespace,
};
use gpufed_trust::ChallengeRequest;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fleet::MemberView;
use crate::job::build::MemberObjects;
use crate::job::names;
use crate::job::plan::PodView;

/// What an agent writes into its report ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentReport {
    /// The member as the agent sees it (already filtered by the provider's selector).
    pub view: MemberView,
    /// How often the agent reports, in seconds.
    pub interval_seconds: u64,
    /// Increases with every report, so each report is a write the API server stamps.
    pub sequence: u64,
    /// The agent's version.
    pub agent_version: String,
}

/// What the hub tells the agent (ConfigMap [`AGENT_CONFIGMAP`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentConfig {
    /// The provider's GPU extended resource.
    pub resource_name: String,
    /// The provider's node selector.
    pub node_selector: BTreeMap<String, String>,
    /// The provider's `spec.exposedNodeLabels`.
    pub exposed_node_labels: Vec<String>,
    /// How often to report, in seconds.
    pub interval_seconds: u64,
    /// While a challenge is open on one of its nodes, how often to report the nodes'
    /// signed reports (milliseconds; 0, as from an older hub: only every interval). The
    /// hub's own `--challenge-poll`: the round trip it times then costs no more than a push
    /// member's.
    pub challenge_poll_millis: u64,
}

impl AgentConfig {
    /// The ConfigMap data: one key per field, as JSON where structured.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("resourceName".to_owned(), self.resource_name.clone()),
            (
                "nodeSelector".to_owned(),
                serde_json::to_string(&self.node_selector).unwrap_or_default(),
            ),
            ("intervalSeconds".to_owned(), self.interval_seconds.to_string()),
            (
                "challengePollMillis".to_owned(),
                self.challenge_poll_millis.to_string(),
            ),
            (
                "exposedNodeLabels".to_owned(),
                serde_json::to_string(&self.exposed_node_labels).unwrap_or_default(),
            ),
        ])
    }

    /// Reads [`Self::to_data`] back; the error names the key.
    pub fn from_data(data: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let get = |k: &str| {
            data.get(k)
                .ok_or_else(|| format!("{AGENT_CONFIGMAP}: missing key {k}"))
        };
        Ok(Self {
            resource_name: get("resourceName")?.clone(),
            node_selector: serde_json::from_str(get("nodeSelector")?)
                .map_err(|e| format!("{AGENT_CONFIGMAP}: nodeSelector: {e}"))?,
            interval_seconds: get("intervalSeconds")?
                .parse()
                .map_err(|e| format!("{AGENT_CONFIGMAP}: intervalSeconds: {e}"))?,
            challenge_poll_millis: match data.get("challengePollMillis") {
                Some(text) => text
                    .parse()
                    .map_err(|e| format!("{AGENT_CONFIGMAP}: challengePollMillis: {e}"))?,
                None => 0,
            },
            // Absent from an older hub's config: nothing exposed beyond the well-known.
            exposed_node_labels: match data.get("exposedNodeLabels") {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| format!("{AGENT_CONFIGMAP}: exposedNodeLabels: {e}"))?,
                None => Vec::new(),
            },
        })
    }
}

/// How often the hub tells pull-mode agents to report ([`AgentConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentPace {
    /// Every round, seconds (at least 1).
    pub interval_seconds: u64,
    /// Reports-only while a challenge is open, milliseconds.
    pub challenge_poll_millis: u64,
}

/// A report older than this (seconds) means the agent is silent: three of the rounds its
/// report names, but of at most six times the interval the hub sets (`hub_seconds`). An
/// agent claiming a huge interval would never be judged silent (no failover); one still
/// on the longer interval of before an operator restart with a shorter
/// `--heartbeat-interval` (it reads the new one at its next round) must not be judged
/// silent by the new one at once, failing over every job of the provider.
pub fn silent_after(reported_seconds: u64, hub_seconds: u64) -> i64 {
    stale_after(reported_seconds.min(hub_seconds.saturating_mul(6)))
}

/// A report older than this (seconds) means an agent reporting every `interval_seconds`
/// is silent.
pub fn stale_after(interval_seconds: u64) -> i64 {
    i64::try_from(interval_seconds.saturating_mul(3))
        .unwrap_or(i64::MAX)
        .max(10)
}

/// When the API server last stamped a write of the agent's manager on `cm`.
pub fn report_time(cm: &ConfigMap) -> Option<i64> {
    cm.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(AGENT_FIELD_MANAGER))
        .filter_map(|m| m.time.as_ref())
        .map(|t| t.0.as_second())
        .max()
}

/// Since when this process has reached the hub without an error, and when it first saw
/// each agent's current report. A report is judged stale by the age of its version on
/// this process's clock (not by the API server's stamp, which a skewed clock would make
/// look old, or new), and only from the later of that and the hub's return, so an outage
/// of the hub itself is never taken for a silent agent.
#[derive(Clone, Default)]
pub struct HubHealth {
    hub: Arc<Mutex<(bool, i64)>>,
    /// Provider → (resourceVersion of its report, when this process first saw it).
    seen: Arc<Mutex<BTreeMap<String, (String, i64)>>>,
}

impl HubHealth {
    /// Healthy since `now` (process start: no report is stale yet).
    pub fn new(now: i64) -> Self {
        Self {
            hub: Arc::new(Mutex::new((false, now))),
            seen: Arc::default(),
        }
    }

    fn record(&self, ok: bool, now: i64) -> i64 {
        let Ok(mut g) = self.hub.lock() else {
            return now;
        };
        match (g.0, ok) {
            (true, true) => *g = (false, now),
            (false, false) => g.0 = true,
            _ => {}
        }
        g.1
    }

    /// When this process first saw `provider`'s report at `version` (`now` if it is new).
    fn heard(&self, provider: &str, version: &str, now: i64) -> i64 {
        let Ok(mut seen) = self.seen.lock() else {
            return now;
        };
        match seen.get(provider) {
            Some((v, at)) if v == version => *at,
            _ => {
                seen.insert(provider.to_owned(), (version.to_owned(), now));
                now
            }
        }
    }

    /// Forgets a deleted provider's report.
    pub fn forget(&self, provider: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(provider);
        }
    }
}

/// Whether a hub error means the hub is out (no answer, 5xx, throttled): only then are
/// agents forgiven their silence once it answers again ([`HubHealth::record`]). A refusal
/// of one request (403 on a terminating namespace, 409, 422) says the hub answers: were it
/// counted, one such error recurring would keep every silent agent from failing over.
fn hub_outage(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The hub side of one pull-mode provider.
#[derive(Clone)]
pub struct PullLink {
    hub: Client,
    provider: String,
    namespace: String,
    health: HubHealth,
    pace: AgentPace,
}

impl PullLink {
    /// The link for `provider`, whose agent namespace must already be prepared
    /// ([`ensure`]), paced by the hub at `pace`.
    pub fn new(hub: Client, provider: &str, health: HubHealth, pace: AgentPace) -> Self {
        Self {
            hub,
            provider: provider.to_owned(),
            namespace: agent_namespace(provider),
            health,
            pace,
        }
    }

    fn member_err(&self, e: impl std::fmt::Display) -> Error {
        Error::member(&self.provider, e)
    }

    fn hub_err(&self, what: &str, e: kube::Error) -> Error {
        if hub_outage(&e) {
            self.health.record(false, crate::time::now());
        }
        Error::hub(what, e)
    }

    fn assignments(&self) -> Api<Assignment> {
        Api::namespaced(self.hub.clone(), &self.namespace)
    }

    /// The agent's last report, if it is fresh.
    pub async fn probe(&self) -> Result<MemberView> {
        let api: Api<ConfigMap> = Api::namespaced(self.hub.clone(), &self.namespace);
        let cm = api
            .get_opt(REPORT_CONFIGMAP)
            .await
            .map_err(|e| self.hub_err("agent report", e))?;
        let now = crate::time::now();
        let healthy_since = self.health.record(true, now);
        let text = cm
            .as_ref()
            .and_then(|c| c.data.as_ref()?.get(REPORT_KEY).cloned())
            .ok_or_else(|| self.member_err("the agent has not reported yet (has it registered?)"))?;
        let report: AgentReport =
            serde_json::from_str(&text).map_err(|e| self.member_err(format!("agent report: {e}")))?;
        let version = cm
            .as_ref()
            .and_then(|c| c.metadata.resource_version.as_deref())
            .unwrap_or_default();
        let heard = self.health.heard(&self.provider, version, now);
        if now - heard.max(healthy_since) > silent_after(report.interval_seconds, self.pace.interval_seconds)
        {
            let at = cm.as_ref().and_then(report_time).unwrap_or(0);
            return Err(self.member_err(format!(
                "agent silent: no new report for {}s (the last written at {} by the API server's clock)",
                now - heard,
                crate::time::format(at),
            )));
        }
        let mut view = report.view;
        // An agent of an older release sends the device plugin's `none` as a domain.
        for n in &mut view.nodes {
            n.nvlink_domain = n
                .nvlink_domain
                .take()
                .filter(|d| crate::fleet::labels::is_nvlink_domain(d));
        }
        Ok(view)
    }

    /// Writes the challenge requests for the agent to pass on to its device plugins.
    pub async fn write_challenges(&self, writes: &BTreeMap<String, ChallengeRequest>) -> Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(self.hub.clone(), &self.namespace);
        let data = crate::verification::challenge_data(writes);
        crate::verification::write_challenge_data(&api, &data, crate::FIELD_MANAGER)
            .await
            .map_err(|e| self.hub_err("challenge ConfigMap", e))
    }

    /// Writes (or rewrites, unchanged) the attempt's Assignment; never over another job's
    /// of that name ([`taken_by`]: [`Error::Forbidden`], nothing written).
    pub async fn dispatch(&self, objects: &MemberObjects) -> Result<()> {
        let body = assignment(objects)?;
        let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let spec = &body["spec"];
        let (tenant, uid) = (spec["tenantNamespace"].as_str(), spec["jobUid"].as_str());
        self.refuse_taken(&name, tenant.unwrap_or_default(), uid.unwrap_or_default())
            .await?;
        self.assignments()
            .patch(
                &name,
                &PatchParams::apply(crate::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| self.hub_err("Assignment", e))?;
        Ok(())
    }

    /// The attempt's pods as the agent last reported them, or why there are none
    /// ([`read_assignment`]).
    pub async fn attempt_pods(
        &self,
        namespace: &str,
        uid: &str,
        attempt: u32,
    ) -> Result<(Vec<PodView>, Vec<String>)> {
        let found = self.assignment(namespace, attempt).await?;
        read_assignment(&self.provider, found.as_ref(), uid, attempt)
    }

    /// The Assignment of an attempt, if the hub has written one.
    async fn assignment(&self, namespace: &str, attempt: u32) -> Result<Option<Assignment>> {
        self.assignments()
            .get_opt(&pull::assignment_name(namespace, attempt))
            .await
            .map_err(|e| self.hub_err("Assignment", e))
    }

    /// A serving attempt's Service as the agent last reported it: job `uid`'s only (two
    /// jobs' names can give one tenant namespace, and so one Assignment name).
    pub async fn exposure(
        &self,
        namespace: &str,
        uid: &str,
        attempt: u32,
    ) -> Result<Option<gpufed_api::serving::Exposure>> {
        let found = self.assignment(namespace, attempt).await?;
        Ok(exposure_of_own(found, uid))
    }
}

/// The exposure `found` reports, if it is job `uid`'s Assignment.
fn exposure_of_own(found: Option<Assignment>, uid: &str) -> Option<gpufed_api::serving::Exposure> {
    found
        .filter(|a| a.spec.job_uid == uid)
        .and_then(|a| a.status?.exposure)
}

/// The Assignment (apply body) that carries `objects`.
pub fn assignment(objects: &MemberObjects) -> Result<serde_json::Value> {
    use crate::job::dispatch::manifest;
    let tenant = objects.namespace.name_any();
    let first = objects
        .pods
        .first()
        .map(|p| p.labels().clone())
        .unwrap_or_default();
    let attempt: u32 = first
        .get(names::LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Error::InvalidSpec("an attempt without pods cannot be assigned".into()))?;
    let uid = first.get(names::LABEL_JOB_UID).cloned().unwrap_or_default();
    let pods: Vec<serde_json::Value> = objects
        .pods
        .iter()
        .map(manifest)
        .collect::<std::result::Result<_, _>>()?;
    Ok(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "Assignment",
        "metadata": {
            "name": pull::assignment_name(&tenant, attempt),
            "labels": {LABEL_TENANT_NAMESPACE: tenant, names::LABEL_JOB_UID: uid},
        },
        "spec": {
            "jobUid": uid,
            "attempt": attempt,
            "tenantNamespace": tenant,
            "namespace": manifest(&objects.namespace)?,
            "objects": objects_of(objects)?,
            "pods": pods,
        }
    }))
}

fn objects_of(objects: &MemberObjects) -> Result<Vec<serde_json::Value>> {
    use crate::job::dispatch::manifest;
    let mut out = vec![manifest(&objects.network_policy)?, manifest(&objects.quota)?];
    for svc in objects.service.iter().chain(&objects.exposure) {
        out.push(manifest(svc)?);
    }
    // The checkpoint credentials travel inside the Assignment: the agent, which needs them
    // to create the pods, reads nothing else of the hub's Secrets (docs/api.md).
    if let Some(secret) = &objects.credentials {
        out.push(manifest(secret)?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
