//! `ComputeService`: N long-running replicas of a model server, each a one-worker
//! `ComputeJob` placed on its own, spread over providers, exposed and kept ready.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, DECIMAL_PATTERN};
use crate::disruption::DisruptionBudget;
use crate::job::{GpuRequirements, OpenObject, PlacementConstraints, WorkerTemplate};
use crate::job_status::Usage;
use crate::rollout::Rollout;
use crate::serving::{ServingPort, SpreadDomain};

/// Most replicas of one service.
pub const MAX_REPLICAS: u32 = 64;

/// Most entries of `status.replicaStatus` (its schema's `maxItems`): the operator lists
/// the serving replicas first and leaves out retiring and finished ones beyond it
/// (`status.unlistedReplicas` counts them), so no status write is ever refused for it.
pub const MAX_REPLICA_STATUS: usize = 128;

/// Longest service name: it names the hub Service (a DNS-1035 label) and is the value of
/// the replicas' `gpufed.io/service` label and their spread group (DNS-1123 labels).
pub const MAX_NAME: usize = 63;

/// What is wrong with `name` as a ComputeService's name, naming `metadata.name` and the
/// rule: a DNS-1035 label of at most 63 characters, since the name is the hub Service's
/// and the replicas' label value and spread group. `None` when it is fine.
///
/// The operator enforces it (`Stalled=True`, `InvalidSpec`, no replica), not the API
/// server: a root-level CEL rule would run on every update of the object, its status
/// writes and finalizer removal included, so a service created before the rule with a
/// name it refuses could no longer be written nor deleted.
pub fn name_error(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last() != Some(&b'-');
    (!ok).then(|| format!("metadata.name: {name:?} {NAME_RULE}"))
}

/// Why [`name_error`] refuses a name.
const NAME_RULE: &str = "must be a DNS-1035 label of at most 63 characters (lowercase letters, digits and '-', starting with a letter, ending with a letter or digit): it names the hub Service and labels and spreads the replicas";

/// Serving on the federation: `replicas` copies of a model server, each placed on its
/// own (no gang) and replaced when lost, reachable through their providers and through
/// one Service at the hub.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "ComputeService",
    plural = "computeservices",
    singular = "computeservice",
    namespaced,
    shortname = "csvc",
    category = "gpufed",
    status = "ComputeServiceStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    doc = "A model server run on the gpufed federation: N replicas, each a one-worker ComputeJob, spread over providers and kept ready.",
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableReplicas",
        priority = 1
    ),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        priority = 1
    ),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address"),
    printcolumn(name = "Cost", type_ = "string", json_path = ".status.usage.cost"),
    printcolumn(
        name = "Revision",
        type_ = "integer",
        json_path = ".status.revision",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "Allowed-Disruptions",
        type_ = "integer",
        json_path = ".status.disruption.disruptionsAllowed",
        priority = 1
    ),
    printcolumn(
        name = "GPUs/Replica",
        type_ = "integer",
        json_path = ".spec.gpusPerReplica",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("double(self.maxPricePerGpuHour) > 0.0").message("spec.maxPricePerGpuHour must be greater than 0").field_path(".maxPricePerGpuHour"))]
#[x_kube(validation = Rule::new("!has(self.placement) || !has(self.placement.spread)").message("spec.placement.spread is not used by a ComputeService: set spec.spread").field_path(".placement.spread"))]
#[x_kube(validation = Rule::new("self.gpu.interconnect != 'NVLink' || self.gpusPerReplica >= 2").message("spec.gpu.interconnect NVLink needs spec.gpusPerReplica of at least 2").field_path(".gpu.interconnect"))]
#[x_kube(validation = Rule::new("!has(self.disruptionBudget) || has(self.disruptionBudget.minAvailable) != has(self.disruptionBudget.maxUnavailable)").message("spec.disruptionBudget: set exactly one of minAvailable and maxUnavailable").field_path(".disruptionBudget"))]
#[serde(rename_all = "camelCase")]
pub struct ComputeServiceSpec {
    /// Replicas to keep ready (`kubectl scale` sets it).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 64))]
    pub replicas: u32,
    /// Pod template of every replica (the model server is the first container).
    pub template: WorkerTemplate,
    /// GPUs each replica gets.
    #[schemars(range(min = 1, max = 16))]
    pub gpus_per_replica: u32,
    /// What kind of GPU a replica needs.
    #[serde(default)]
    pub gpu: GpuRequirements,
    /// Highest price per GPU-hour paid for a replica (decimal).
    #[schemars(length(min = 1, max = 20), pattern(DECIMAL_PATTERN))]
    pub max_price_per_gpu_hour: String,
    /// The served port and how providers expose it.
    pub port: ServingPort,
    /// Readiness probe (a Kubernetes `Probe`) for the first container when its template
    /// has none; without either, a TCP probe of the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<OpenObject>,
    /// Where replicas may run.
    #[serde(default)]
    pub placement: PlacementConstraints,
    /// Failure domain replicas prefer not to share.
    #[serde(default)]
    pub spread: ServiceSpread,
    /// Higher priorities are placed first.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
    /// How a template change replaces running replicas (surge and unavailability bounds,
    /// as a Deployment's rolling update).
    #[serde(default)]
    pub rollout: Rollout,
    /// How many ready replicas a higher-priority job's preemption may take away, as a
    /// PodDisruptionBudget (`minAvailable` or `maxUnavailable`). Unlike the
    /// kube-scheduler's preemption, gpufed's never breaks it: the preemptor waits. Absent:
    /// no protection beyond `priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudget>,
    /// Old revisions of the replica template kept for `kubectl gpufed rollout history` and
    /// `rollout undo` (as ControllerRevisions `<name>-<hash>`), besides the current one and
    /// any that replicas still run; as a Deployment's. Default 10.
    #[serde(default = "ten")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: u32,
    /// Seconds a ready replica must stay ready before it counts as available, as a
    /// Deployment's: a rollout retires an old replica only for an available new one, and
    /// the service is `Ready` only with `replicas` available (a model server that passes
    /// its probe and falls over under its first load never replaces a good one). Routing
    /// does not wait: a ready replica gets traffic. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub min_ready_seconds: u32,
    /// Hold rollouts, as a Deployment's `paused` (`kubectl gpufed rollout pause`): a
    /// template change is neither recorded nor rolled out until this is false again, and
    /// a rollout under way holds where it is. Replicas are still replaced and scaled,
    /// with the template in effect (the latest revision).
    #[serde(default)]
    pub paused: bool,
}

fn one() -> u32 {
    1
}

fn ten() -> u32 {
    10
}

fn default_priority() -> u32 {
    100
}

/// How replicas spread over failure domains (a preference, never a reason to stay down).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ServiceSpread {
    /// Prefer a different provider for each replica.
    #[default]
    Provider,
    /// Prefer a different region for each replica.
    Region,
    /// No preference.
    None,
}

impl ServiceSpread {
    /// The spread domain of the replica jobs, if any.
    pub fn domain(self) -> Option<SpreadDomain> {
        match self {
            Self::Provider => Some(SpreadDomain::Provider),
            Self::Region => Some(SpreadDomain::Region),
            Self::None => None,
        }
    }
}

/// Status of a `ComputeService`, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeServiceStatus {
    /// `Ready` (all desired replicas ready), `Reconciling`, `Stalled`.
    #[serde(default)]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas that exist and are not being retired (the scale subresource's count).
    #[serde(default)]
    pub replicas: u32,
    /// Replicas whose serving pod is Ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Ready replicas that have been ready for `spec.minReadySeconds` (all ready ones when
    /// it is 0).
    #[serde(default)]
    pub available_replicas: u32,
    /// Replicas of the current template (not retiring): `replicas` of them once a rollout
    /// is done.
    #[serde(default)]
    pub updated_replicas: u32,
    /// Label selector of the replica `ComputeJob`s (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The stable address at the hub: the Service `<name>` in this namespace, whose
    /// endpoints are the ready replicas (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Every replica, by name; beyond 128 entries the serving ones first, retiring and
    /// finished ones left out (counted in `unlistedReplicas`).
    // An atomic list, always sent (`[]` included): as a granular (`map`) list, a
    // server-side apply that removed its last item — left out or sent as `[]` alike —
    // made the 1.20 apiserver store `null`, which the schema ("must be of type array")
    // then refused on every later status write: a service scaled to zero could never
    // update its status again (seen in CI; `serving` scales to zero and back). One field
    // manager writes it, so replacing it whole loses nothing.
    #[serde(default)]
    #[schemars(length(max = 128), extend("x-kubernetes-list-type" = "atomic"))]
    pub replica_status: Vec<ReplicaStatus>,
    /// Replica jobs left out of `replicaStatus` (retiring or finished ones beyond its 128
    /// entries); absent when every replica is listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlisted_replicas: Option<u32>,
    /// GPU time and cost of the current replicas (retired replicas keep theirs on their
    /// own `ComputeJob` until it is metered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// While the service is short of its desired state (a rollout, a scale-up, a lost
    /// replica): its last progress, measured against `spec.rollout.progressDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ServiceProgress>,
    /// The number of the current template's revision: its ControllerRevision
    /// `<name>-<hash>` (the hash is the replicas' `gpufed.io/service-revision` label) has
    /// this `revision`; `kubectl gpufed rollout history` lists them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// With a `spec.disruptionBudget`: how many replicas preemption may take now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<DisruptionStatus>,
}

/// A disruption budget's state, as a PodDisruptionBudget's status. Atomic: removed whole
/// when the budget goes (no emptied object left behind by the 1.20 API server).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct DisruptionStatus {
    /// Ready replicas that are not being retired or evicted.
    pub current_healthy: u32,
    /// The fewest that must stay (`spec.disruptionBudget` resolved against `replicas`).
    pub desired_healthy: u32,
    /// How many preemption may take now: `currentHealthy - desiredHealthy`, at least 0.
    pub disruptions_allowed: u32,
}

/// Progress toward the desired state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProgress {
    /// Ready replicas of the current template when progress was last seen.
    pub updated_ready_replicas: u32,
    /// When the service last progressed (RFC 3339): it fell short of its desired state,
    /// its spec changed, or one more replica of the current template became ready.
    #[schemars(extend("format" = "date-time"))]
    pub last_progress_time: String,
}

/// One replica as the service sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// The replica's `ComputeJob`.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Its provider, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Where it is reachable (`host:port`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its serving pod is Ready.
    pub ready: bool,
    /// The job's phase (`Queued`, `Running`, …), or `Retiring` while scaled away.
    #[schemars(length(max = 32))]
    pub phase: String,
    /// GPU-seconds used so far.
    #[serde(default)]
    pub gpu_seconds: u64,
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
