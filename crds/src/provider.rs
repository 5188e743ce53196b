//! `GpuProvider`: one member cluster that sells GPU time to the federation.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    COMPUTE_CAPABILITY_PATTERN, Condition, DECIMAL_PATTERN, DNS_LABEL_PATTERN, DURATION_PATTERN,
    GPU_MODEL_PATTERN, SecretKeyRef, WALLET_PATTERN,
};

/// A member cluster that offers GPUs to the federation: how the hub reaches it, who is
/// paid, where it is, and what its GPUs cost.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "GpuProvider",
    plural = "gpuproviders",
    singular = "gpuprovider",
    shortname = "gpup",
    shortname = "gp",
    category = "gpufed",
    status = "GpuProviderStatus",
    doc = "A member cluster that sells GPU time to the gpufed federation.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.inventory.gpus"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.inventory.allocatable"),
    printcolumn(
        name = "Verified",
        type_ = "integer",
        json_path = ".status.verification.verifiedGpus"
    ),
    printcolumn(name = "Reputation", type_ = "string", json_path = ".status.reputation.score"),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.lastHeartbeatTime",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.mode != 'Push' || has(self.kubeconfigSecretRef)").message("spec.kubeconfigSecretRef is required when spec.mode is Push").field_path(".kubeconfigSecretRef"))]
#[x_kube(validation = Rule::new("!has(self.heartbeatGracePeriod) || duration(self.heartbeatGracePeriod) > duration('0s')").message("spec.heartbeatGracePeriod must be longer than 0s").field_path(".heartbeatGracePeriod"))]
#[x_kube(validation = Rule::new("self.prices.all(p, double(p.pricePerGpuHour) > 0.0)").message("every spec.prices[].pricePerGpuHour must be greater than 0").field_path(".prices"))]
#[x_kube(validation = Rule::new("!has(self.tenants) || !has(self.tenants.namespaceSelector) || !has(self.tenants.namespaceSelector.matchExpressions) || self.tenants.namespaceSelector.matchExpressions.all(e, (e.operator == 'In' || e.operator == 'NotIn') == (has(e.values) && size(e.values) > 0))").message("spec.tenants.namespaceSelector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none").field_path(".tenants.namespaceSelector.matchExpressions"))]
#[x_kube(validation = Rule::new("!has(self.workerTolerations) || self.workerTolerations.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || t.value == '')").message("spec.workerTolerations: operator Exists takes no value").field_path(".workerTolerations"))]
#[x_kube(validation = Rule::new("!has(self.workerTolerations) || self.workerTolerations.all(t, (has(t.operator) && t.operator == 'Exists') || (has(t.key) && t.key != ''))").message("spec.workerTolerations: an empty key tolerates every taint only with operator Exists").field_path(".workerTolerations"))]
#[x_kube(validation = Rule::new("!has(self.workerTolerations) || self.workerTolerations.all(t, !has(t.tolerationSeconds) || (has(t.effect) && t.effect == 'NoExecute'))").message("spec.workerTolerations: tolerationSeconds needs effect NoExecute").field_path(".workerTolerations"))]
#[serde(rename_all = "camelCase")]
pub struct GpuProviderSpec {
    /// How the hub and the member cluster talk. `Push`: the hub connects to the member's
    /// API server with the kubeconfig in `kubeconfigSecretRef`. `Pull`: an agent inside
    /// the member cluster connects out to the hub (for clusters behind NAT).
    #[serde(default)]
    pub mode: ConnectionMode,
    /// Secret (in the hub) that holds the kubeconfig of the member cluster. Required in
    /// `Push` mode. Rotating the Secret's content does not interrupt running jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// Solana wallet (base58 public key) that receives this provider's earnings.
    #[schemars(pattern(WALLET_PATTERN))]
    pub payout_wallet: String,
    /// Region of the provider's GPUs, e.g. `eu-west`, `us-east`. Jobs may restrict regions.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub region: String,
    /// Asking price per GPU-hour for each GPU model the provider sells. A model without a
    /// price is not offered.
    #[schemars(
        length(min = 1, max = 32),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["model"])
    )]
    pub prices: Vec<GpuPrice>,
    /// Only member nodes with these labels are offered (in addition to having GPUs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations the operator adds to every worker pod it runs here, for the taints the
    /// data center keeps its GPU nodes apart with (e.g. `dedicated=gpufed:NoSchedule`).
    /// The GPU resource's own taint (`<resourceName>:NoSchedule`, as GKE and AKS taint
    /// GPU pools) is tolerated without being listed. A GPU node with a `NoSchedule` or
    /// `NoExecute` taint that these do not tolerate is not offered: its GPUs are not
    /// counted, and `Ready` names the node and the taint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub worker_tolerations: Vec<crate::tolerations::WorkerToleration>,
    /// Node labels (keys) of this provider's GPU nodes that jobs may select on with a
    /// `nodeSelector` in their pod template, e.g. `example.com/network` for an
    /// InfiniBand pool. The well-known `kubernetes.io/arch`, `kubernetes.io/os`,
    /// `node.kubernetes.io/instance-type` and `topology.kubernetes.io/{region,zone}` are
    /// always exposed; no other label leaves the member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 317)))]
    pub exposed_node_labels: Vec<String>,
    /// Extended resource name the provider's device plugin advertises.
    #[serde(default = "default_resource_name")]
    #[schemars(length(min = 3, max = 253), pattern(r"^[a-z0-9.-]+/[a-z0-9.-]+$"))]
    pub resource_name: String,
    /// How long the provider may miss heartbeats before it is NotReady and its jobs fail
    /// over; longer than `0s` (a zero grace would fail every job over on one missed probe).
    #[serde(default = "default_grace")]
    #[schemars(length(min = 2, max = 16), pattern(DURATION_PATTERN))]
    pub heartbeat_grace_period: String,
    /// A paused provider receives no new jobs; running jobs continue.
    #[serde(default)]
    pub paused: bool,
    /// Drain for maintenance, as `kubectl drain`: no new jobs, and the running attempts
    /// are evicted (ending `Preempted`, queued again elsewhere without using up an
    /// attempt); a ComputeService's replicas only as its disruption budget allows, one
    /// after another as their replacements get ready elsewhere. `false` again (uncordon)
    /// stops evicting; attempts not yet stopped run on.
    #[serde(default)]
    pub drain: bool,
    /// How long a drain may wait for disruption budgets, e.g. `4h`: once `spec.drain` has
    /// been true this long (`status.drainStartTime`), the attempts still running are
    /// evicted whatever their budgets say — a maintenance window that ends, as Karpenter's
    /// `terminationGracePeriod`. Unset: a budget holds the drain as long as it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), pattern(DURATION_PATTERN))]
    pub drain_deadline: Option<String>,
    /// Which tenants (hub namespaces) the provider takes new work from; unset: any.
    /// A job of a namespace it does not admit is placed elsewhere, or waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<crate::tenants::Tenants>,
}

fn default_resource_name() -> String {
    crate::DEFAULT_GPU_RESOURCE.to_owned()
}

fn default_grace() -> String {
    "2m".to_owned()
}

/// How the hub reaches a member cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ConnectionMode {
    /// The hub connects to the member's API server.
    #[default]
    Push,
    /// An in-cluster agent connects out to the hub.
    Pull,
}

/// A provider's asking price for one GPU model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuPrice {
    /// GPU model as the device plugin labels it, e.g. `NVIDIA-H100-80GB-HBM3`.
    #[schemars(pattern(GPU_MODEL_PATTERN))]
    pub model: String,
    /// Asking price per GPU-hour in the settlement token (decimal, up to 6 fractional digits).
    #[schemars(pattern(DECIMAL_PATTERN))]
    pub price_per_gpu_hour: String,
}

/// What the hub last observed of a provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuProviderStatus {
    /// `Ready` (summary), `Reachable`, `Verified`, `Staked`, `Reconciling`, `Stalled`.
    #[serde(default)]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Last time the member cluster answered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_heartbeat_time: Option<String>,
    /// GPUs the member cluster offers, as its nodes and the device plugin report them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Results of GPU verification (compute challenges, uniqueness of UUIDs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The provider's reputation, which placement weighs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation: Option<Reputation>,
    /// When the operator first saw `spec.drain` true (RFC 3339); gone once it is false.
    /// `spec.drainDeadline` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub drain_start_time: Option<String>,
}

impl GpuProviderSpec {
    /// When a drain that began at `start` (RFC 3339, `status.drainStartTime`) stops being
    /// held by disruption budgets (Unix seconds): `start` plus `drainDeadline`. `None`
    /// without either, or when one cannot be read (then budgets hold, as without a
    /// deadline).
    pub fn drain_deadline_at(&self, start: Option<&str>) -> Option<i64> {
        let secs = crate::formats::parse_duration(self.drain_deadline.as_deref()?).ok()?;
        let start = start?.parse::<k8s_openapi::jiff::Timestamp>().ok()?.as_second();
        start.checked_add(i64::try_from(secs).ok()?)
    }

    /// Every toleration the provider's workers carry ([`crate::tolerations::effective`]).
    pub fn effective_tolerations(&self) -> Vec<crate::tolerations::WorkerToleration> {
        crate::tolerations::effective(&self.resource_name, &self.worker_tolerations)
    }
}

/// A provider's GPU inventory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Ready GPU nodes that match the node selector and whose taints the workers
    /// tolerate.
    pub nodes: u32,
    /// GPUs on those nodes.
    pub gpus: u32,
    /// GPUs not allocated to any pod.
    pub allocatable: u32,
    /// GPUs grouped by model.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub models: Vec<ModelInventory>,
}

/// GPUs of one model in a provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelInventory {
    /// GPU model, e.g. `NVIDIA-A100-SXM4-40GB`.
    #[schemars(pattern(GPU_MODEL_PATTERN))]
    pub model: String,
    /// Memory per GPU in MiB.
    pub memory_mib: u64,
    /// CUDA compute capability, e.g. `8.0`.
    #[schemars(pattern(COMPUTE_CAPABILITY_PATTERN))]
    pub compute_capability: String,
    /// GPUs of this model.
    pub count: u32,
    /// GPUs of this model not allocated.
    pub allocatable: u32,
    /// Largest number of these GPUs that share one NVLink domain (1 without NVLink).
    pub largest_nvlink_domain: u32,
}

/// Verification results for a provider's GPUs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// GPUs that passed the last compute challenge and are unique in the fleet.
    pub verified_gpus: u32,
    /// GPUs that failed, or whose UUID another provider also claims.
    pub failed_gpus: u32,
    /// GPUs that passed only between rounds while the hub holds such passes on probation
    /// (`--join-probation`): they count from the next round they pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_gpus: Option<u32>,
    /// When the last verification round finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_run_time: Option<String>,
    /// When every node of the fleet, this provider's included, is challenged next: the
    /// fleet-wide round (RFC 3339). A node that failed is challenged again only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_round_time: Option<String>,
    /// The most recent failures, newest first.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub failures: Vec<VerificationFailure>,
    /// Nodes whose every GPU verified, by name. Jobs with `placement.verifiedOnly` run only
    /// on these nodes (and only while the provider is `Verified` and staked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000))]
    pub verified_nodes: Vec<String>,
}

/// One GPU that did not verify.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationFailure {
    /// The GPU's UUID as reported by the device plugin.
    #[schemars(length(max = 64))]
    pub gpu_uuid: String,
    /// Why, e.g. `DuplicateUuid`, `WrongDigest`, `TimingOutOfBand`, `Simulated`.
    #[schemars(length(max = 64))]
    pub reason: String,
    /// Details for humans.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// A provider's reputation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reputation {
    /// Score from 0 (untrusted) to 100, as a decimal string.
    #[schemars(pattern(DECIMAL_PATTERN))]
    pub score: String,
    /// Fraction of heartbeats answered over the measurement window, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_percent: Option<u32>,
    /// Jobs completed on this provider.
    #[serde(default)]
    pub jobs_completed: u64,
    /// Jobs lost because of the provider (abandoned, GPU errors).
    #[serde(default)]
    pub jobs_failed_by_provider: u64,
}
