//! `ComputeJob`: work an AI team runs on the federation, possibly a gang of workers.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    COMPUTE_CAPABILITY_PATTERN, DECIMAL_PATTERN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, DURATION_PATTERN,
    GPU_MODEL_PATTERN, MEMORY_PATTERN,
};
use crate::job_status::ComputeJobStatus;

/// Most GPUs one job may ask for (`workers × gpusPerWorker`).
pub const MAX_TOTAL_GPUS: u32 = 512;
/// Most GPUs a gang may ask for when it must sit inside one NVLink domain (an NVL72 rack).
pub const MAX_NVLINK_DOMAIN_GPUS: u32 = 72;

/// A unit of GPU work: a pod template run as a gang of `workers` pods with
/// `gpusPerWorker` GPUs each, placed whole on one provider that meets the requirements.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "ComputeJob",
    plural = "computejobs",
    singular = "computejob",
    namespaced,
    // Not `cj`: that is CronJob's short name, and kubectl resolves it to CronJobs first.
    shortname = "cjob",
    category = "gpufed",
    status = "ComputeJobStatus",
    doc = "GPU work run on the gpufed federation: a gang of worker pods placed whole on one provider.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.placement.provider"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.placement.gpus"),
    printcolumn(name = "Price", type_ = "string", json_path = ".status.placement.pricePerGpuHour"),
    printcolumn(name = "Cost", type_ = "string", json_path = ".status.usage.cost"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#, priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#, priority = 1),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".spec.workers", priority = 1),
    printcolumn(name = "GPUs/Worker", type_ = "integer", json_path = ".spec.gpusPerWorker", priority = 1),
    printcolumn(name = "Attempt", type_ = "integer", json_path = ".status.placement.attempt", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.placement) || (self.spec.workers == oldSelf.spec.workers && self.spec.gpusPerWorker == oldSelf.spec.gpusPerWorker && self.spec.gpu == oldSelf.spec.gpu)").message("spec.workers, spec.gpusPerWorker and spec.gpu are immutable once the job is placed").field_path(".spec")
)]
#[x_kube(validation = Rule::new("self.workers * self.gpusPerWorker <= 512").message("spec.workers × spec.gpusPerWorker must be at most 512 GPUs").field_path(".workers"))]
#[x_kube(validation = Rule::new("self.gpu.interconnect != 'NVLinkDomain' || self.workers * self.gpusPerWorker <= 72").message("a gang with spec.gpu.interconnect NVLinkDomain may use at most 72 GPUs (one NVLink domain)").field_path(".gpu.interconnect"))]
#[x_kube(validation = Rule::new("self.gpu.interconnect != 'NVLink' || self.gpusPerWorker >= 2").message("spec.gpu.interconnect NVLink needs spec.gpusPerWorker of at least 2").field_path(".gpu.interconnect"))]
#[x_kube(validation = Rule::new("!has(self.serving) || self.workers == 1").message("a serving job (spec.serving) has exactly one worker").field_path(".workers"))]
#[x_kube(validation = Rule::new("double(self.maxPricePerGpuHour) > 0.0").message("spec.maxPricePerGpuHour must be greater than 0").field_path(".maxPricePerGpuHour"))]
#[x_kube(validation = Rule::new("!has(self.maxDuration) || duration(self.maxDuration) > duration('0s')").message("spec.maxDuration must be longer than 0s").field_path(".maxDuration"))]
#[serde(rename_all = "camelCase")]
pub struct ComputeJobSpec {
    /// Pod template for every worker. The operator adds GPU requests, node pinning, the
    /// gang's rendezvous environment and the checkpoint location; `spec.containers` is
    /// required. Validated in full when the job is dispatched.
    pub template: WorkerTemplate,
    /// Number of worker pods (gang size). The gang is placed whole or not at all.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 512))]
    pub workers: u32,
    /// GPUs each worker gets.
    #[schemars(range(min = 1, max = 16))]
    pub gpus_per_worker: u32,
    /// What kind of GPU the job needs.
    #[serde(default)]
    pub gpu: GpuRequirements,
    /// Highest price per GPU-hour the job pays, in the settlement token (decimal).
    #[schemars(length(min = 1, max = 20), pattern(DECIMAL_PATTERN))]
    pub max_price_per_gpu_hour: String,
    /// Longest time the job may run (all attempts together, time queued or suspended not
    /// counted), e.g. `36h`. Unbounded if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 18), pattern(DURATION_PATTERN))]
    pub max_duration: Option<String>,
    /// Longest time a placed attempt may take to get its whole gang running at the
    /// provider (scheduled there, images pulled, containers started), e.g. `30m`; default
    /// `15m`. Past it the attempt ends (`Failed`, record reason `StartTimeout`, saying
    /// what its workers were waiting for), the GPUs it held are freed, whatever it created
    /// is removed, and the job is kept off that provider for 15 minutes while the failure
    /// policy places it again elsewhere — so a provider that advertises GPUs it cannot
    /// start work on does not hold the job forever. Counts as an attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 18), pattern(DURATION_PATTERN))]
    pub start_timeout: Option<String>,
    /// Where the job may run.
    #[serde(default)]
    pub placement: PlacementConstraints,
    /// What happens when an attempt fails or its provider disappears.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Where workers write and resume checkpoints; a failed-over attempt resumes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    /// Where the workers may connect to (their tenant namespace's NetworkPolicy, where
    /// the provider's network plugin enforces it). A checkpoint location outside the
    /// cluster (`s3`, `gs`, `az`, `https`) implies `Internet`.
    #[serde(default, skip_serializing_if = "Egress::is_default")]
    pub egress: Egress,
    /// Higher priorities are placed first and may preempt lower ones when allowed.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
    /// A suspended job is not placed; a running one is stopped and resumes when unsuspended.
    #[serde(default)]
    pub suspend: bool,
    /// Deletes the job this many seconds after it finished (`Succeeded` or `Failed`), as
    /// a Kubernetes Job's field of that name; its usage is metered before it goes. Unset:
    /// kept until deleted. (Under GitOps, a tool that syncs the job back re-creates it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u32>,
    /// Makes the job one serving replica (`workers` must be 1): its port is exposed at
    /// the provider, readiness is reported in `status.endpoint`. Set by `ComputeService`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<crate::serving::Serving>,
}

fn one() -> u32 {
    1
}

/// Seconds a placed attempt may take to start when `spec.startTimeout` is unset.
pub const DEFAULT_START_TIMEOUT_SECS: u64 = 900;

impl ComputeJobSpec {
    /// Seconds a placed attempt may take to get its gang running (`spec.startTimeout`,
    /// else [`DEFAULT_START_TIMEOUT_SECS`]; an unreadable value counts as the default:
    /// [`crate::check::job_spec`] reports it).
    pub fn start_timeout_secs(&self) -> u64 {
        self.start_timeout
            .as_deref()
            .and_then(|d| crate::formats::parse_duration(d).ok())
            .filter(|&s| s > 0)
            .unwrap_or(DEFAULT_START_TIMEOUT_SECS)
    }
}

/// Egress of a job's workers. Ingress is always only from the gang itself (and, for a
/// serving replica, to its port).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Egress {
    /// The pods of the job's own tenant namespace (its gang) and the cluster DNS only.
    #[default]
    Namespace,
    /// Also the public internet (object stores, model hubs, package indexes): every
    /// address outside the private, shared, loopback and link-local ranges, so the
    /// provider's own network and cloud metadata endpoints stay unreachable.
    Internet,
}

impl Egress {
    /// Whether this is the default (left out of manifests).
    pub fn is_default(&self) -> bool {
        *self == Egress::Namespace
    }
}

fn default_priority() -> u32 {
    100
}

/// The worker pod template: Kubernetes `PodTemplateSpec` fields, kept open in the schema
/// (their full schema would dwarf the CRD) and validated by the operator at dispatch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct WorkerTemplate {
    /// Labels and annotations for the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The pod spec (`containers` required).
    pub spec: WorkerPodSpec,
}

/// Labels and annotations copied onto every worker pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
pub struct TemplateMetadata {
    /// Labels for the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub annotations: BTreeMap<String, String>,
}

/// A Kubernetes `PodSpec`; only `containers` is checked by the CRD schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct WorkerPodSpec {
    /// The worker's containers (Kubernetes `Container` objects).
    #[schemars(length(min = 1, max = 16))]
    pub containers: Vec<OpenObject>,
    /// All other `PodSpec` fields.
    #[serde(flatten)]
    #[schemars(skip)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

/// A Kubernetes object whose fields the CRD schema leaves to the operator's validation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OpenObject(
    /// The object's fields.
    pub serde_json::Map<String, serde_json::Value>,
);

impl JsonSchema for OpenObject {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpenObject".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A structural schema may not say `additionalProperties: true`; keeping unknown
        // fields is spelled `x-kubernetes-preserve-unknown-fields`.
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// GPU requirements of each worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GpuRequirements {
    /// Acceptable GPU models (empty: any model that meets the other requirements).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(pattern(GPU_MODEL_PATTERN)))]
    pub models: Vec<String>,
    /// Which class of hardware is acceptable.
    #[serde(default)]
    pub tier: GpuTier,
    /// Least memory per GPU, e.g. `80Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(MEMORY_PATTERN))]
    pub min_memory: Option<String>,
    /// Least CUDA compute capability, e.g. `8.0` (Ampere) or `9.0` (Hopper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(COMPUTE_CAPABILITY_PATTERN))]
    pub min_compute_capability: Option<String>,
    /// How the GPUs must be connected.
    #[serde(default)]
    pub interconnect: Interconnect,
}

/// Acceptable class of hardware.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum GpuTier {
    /// Any GPU that meets the other requirements.
    #[default]
    Any,
    /// Data-center GPUs only (ECC memory, server form factor).
    Datacenter,
    /// Consumer GPUs only (usually the cheapest; fine for inference).
    Consumer,
}

/// Interconnect requirement between GPUs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Interconnect {
    /// No requirement.
    #[default]
    Any,
    /// Each worker's GPUs share one NVLink domain.
    NVLink,
    /// The whole gang shares one NVLink domain.
    NVLinkDomain,
}

/// Where a job may run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraints {
    /// Allowed regions (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(pattern(DNS_LABEL_PATTERN)))]
    pub regions: Vec<String>,
    /// Allowed providers by name (empty: any). `GpuProvider` names, so DNS subdomains
    /// (`dc1.example.com`), not only labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253), pattern(DNS_SUBDOMAIN_PATTERN)))]
    pub providers: Vec<String>,
    /// Providers to try first, in order; others follow by score.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253), pattern(DNS_SUBDOMAIN_PATTERN)))]
    pub preferred_providers: Vec<String>,
    /// Least provider reputation, 0–100.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub min_reputation: u32,
    /// Only GPUs that passed verification (compute challenge, unique UUID).
    #[serde(default = "yes")]
    pub verified_only: bool,
    /// Whether this job may evict running jobs of strictly lower priority when it fits
    /// nowhere — of its own namespace unless the operator allows any
    /// (docs/placement.md#preemption). Evicted attempts end `Preempted` and are re-queued.
    #[serde(default)]
    pub preempt_lower_priority: bool,
    /// Prefer providers (or regions) where no other job of the same group runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<crate::serving::Spread>,
}

impl Default for PlacementConstraints {
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            providers: Vec::new(),
            preferred_providers: Vec::new(),
            min_reputation: 0,
            verified_only: true,
            preempt_lower_priority: false,
            spread: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// What happens when an attempt fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Most attempts in total, the first included.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,
    /// What to do when the provider running the job is lost.
    #[serde(default)]
    pub on_provider_loss: ProviderLossAction,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            on_provider_loss: ProviderLossAction::default(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}

/// Reaction to losing the provider of a running attempt.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ProviderLossAction {
    /// Start a new attempt on another provider, resuming from the checkpoint.
    #[default]
    Failover,
    /// Fail the job.
    Fail,
}

/// Checkpoint location shared by all attempts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// URI of the checkpoint directory, e.g. `s3://bucket/run-42/`. Workers receive it as
    /// `GPUFED_CHECKPOINT_URI` and the attempt number as `GPUFED_ATTEMPT`.
    #[schemars(length(min = 6, max = 1024), pattern(r"^(s3|gs|az|https|nfs|pvc)://[^\s]+$"))]
    pub uri: String,
    /// Name of a Secret in the job's namespace with credentials for the location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub credentials_secret: Option<String>,
}
