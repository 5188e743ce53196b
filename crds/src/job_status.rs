//! What the operator reports about a `ComputeJob`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, DECIMAL_PATTERN, MINT_AMOUNT_PATTERN, SIGNATURE_PATTERN, STATUS_DECIMAL_PATTERN,
};

/// Status of a `ComputeJob`, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeJobStatus {
    /// Summary for display only; automation reads `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// `Ready`, `Placed`, `Running`, `Complete`, `Failed`, `Reconciling`, `Stalled`.
    #[serde(default)]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The attempt the hub counts as live and bills; absent while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Past attempts, oldest first: the most recent 20, and older ones still to be fenced
    /// or metered (at most 64). Older records are summed up in `archived`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub attempts: Vec<AttemptRecord>,
    /// What the records dropped from `attempts` add up to: `usage` includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<ArchivedAttempts>,
    /// When the first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub start_time: Option<String>,
    /// When the job reached Succeeded or Failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completion_time: Option<String>,
    /// GPU time used and what it cost, over all attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// How much of the usage is settled on chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Billing>,
    /// A serving job's endpoint and readiness (live attempt only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<crate::serving::Endpoint>,
    /// Attempts ended by preemption (`Preempted`). They do not count toward
    /// `spec.failurePolicy.maxAttempts`: being evicted for higher-priority work is not a
    /// failure of the job.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub preemptions: u32,
    /// Attempts ended by the user or while the job waits (`Stopped`: suspended, deleted,
    /// credentials or template unavailable). They do not count toward
    /// `spec.failurePolicy.maxAttempts` either: a job suspended and resumed has not failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stops: u32,
    /// The room this job holds while it waits for the work it evicts to stop (`Placed`
    /// reason `Preempting`): what its planned placement takes on each node beyond its
    /// victims' share. Kept here so that a new leader holds it too; cleared once the job
    /// is placed or no longer waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldRoom>,
}

/// Room held on one provider for a job waiting for its evictions. Atomic for server-side
/// apply: the round writes it whole, and drops it whole.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct HeldRoom {
    /// The provider of the planned placement.
    #[schemars(length(max = 253))]
    pub provider: String,
    /// What the placement takes on each of its nodes.
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub nodes: Vec<HeldNode>,
}

/// What a waiting job will take on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldNode {
    /// The member cluster's node name.
    #[schemars(length(max = 253))]
    pub node: String,
    /// GPUs.
    pub gpus: u32,
    /// CPU in millicores.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub cpu_millis: u64,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub memory_mib: u64,
    /// Local ephemeral storage in MiB.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub ephemeral_mib: u64,
    /// Extended resources by name (whole units; hugepages in MiB).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub extended: std::collections::BTreeMap<String, u64>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Display phase of a job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobPhase {
    /// Waiting for a provider that fits.
    Queued,
    /// A provider was chosen; pods are being created or scheduled.
    Placed,
    /// All workers run.
    Running,
    /// The current attempt was lost; a new one is being placed.
    Recovering,
    /// Suspended by the user.
    Suspended,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully.
    Failed,
}

/// Where the live attempt runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Attempt number, starting at 1. Member-side objects carry it; writes from older
    /// attempts are refused (fencing).
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The `GpuProvider` running the attempt (any object name: up to 253 characters).
    #[schemars(length(max = 253))]
    pub provider: String,
    /// Total GPUs of the gang.
    pub gpus: u32,
    /// Price per GPU-hour fixed when the attempt was placed (decimal).
    #[schemars(pattern(DECIMAL_PATTERN))]
    pub price_per_gpu_hour: String,
    /// Node and GPUs of each worker, by rank.
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub workers: Vec<WorkerPlacement>,
    /// When the placement was decided (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub placed_time: String,
    /// When every worker was Running (RFC 3339): the gang runs, and billing starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub running_time: Option<String>,
    /// When the hub first saw a node under a worker unreachable (its `Ready` condition
    /// `Unknown`: the member's node controller lost contact with its kubelet), RFC 3339,
    /// hub clock. Cleared when every node answers again; the attempt counts `NodeLost`
    /// (billed up to this time) once it is older than the provider's heartbeat grace
    /// period — a short outage of the member's own API server marks every node Unknown
    /// and must not fail its jobs over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub node_unreachable_since: Option<String>,
    /// Set by a placement round that evicts this attempt to make room for a job of
    /// higher priority (`spec.placement.preemptLowerPriority`): the job controller ends
    /// the attempt as `Preempted`, billed up to then, and queues the job again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted: Option<Preemption>,
}

/// The eviction of an attempt for a job of higher priority. Atomic for server-side apply:
/// the whole mark is one value, so the apply that ends the attempt (and drops
/// `placement`) removes it whole — as separate fields, the API server (1.20) left an
/// empty `preempted` behind, and with it a `placement` missing its required fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct Preemption {
    /// The job it makes room for (`namespace/name`).
    #[schemars(length(max = 317))]
    pub by: String,
    /// That job's priority.
    pub priority: u32,
    /// When the placement round decided it (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
}

/// `Preemption::by` of an eviction by a provider's drain: `GpuProvider/<name>` (a
/// namespace, a lowercase DNS label, is never `GpuProvider`, so it is no job's id).
pub const DRAIN_BY_PREFIX: &str = "GpuProvider/";

/// `Preemption::by` of an eviction by a provider's tenant policy (`spec.tenants` with
/// `evictRunning`): `GpuProviderTenants/<name>` (no job's id either).
pub const TENANCY_BY_PREFIX: &str = "GpuProviderTenants/";

impl Preemption {
    /// The provider whose drain evicts the attempt, when it is a drain's mark.
    pub fn drained_by(&self) -> Option<&str> {
        self.by.strip_prefix(DRAIN_BY_PREFIX)
    }

    /// The provider whose tenant policy evicts the attempt, when it is such a mark.
    pub fn refused_by(&self) -> Option<&str> {
        self.by.strip_prefix(TENANCY_BY_PREFIX)
    }
}

/// One worker's node and GPUs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPlacement {
    /// Worker rank, from 0.
    pub rank: u32,
    /// Member-cluster node.
    #[schemars(length(max = 253))]
    pub node: String,
    /// GPU UUIDs the device plugin allocated, once known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub gpu_uuids: Vec<String>,
}

/// How an attempt ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AttemptOutcome {
    /// All workers succeeded.
    Succeeded,
    /// A worker failed.
    Failed,
    /// The provider became unreachable or NotReady past its grace period.
    ProviderLost,
    /// A node or GPU under a worker failed.
    NodeLost,
    /// Evicted for a higher-priority job.
    Preempted,
    /// Stopped by the user (suspend or delete).
    Stopped,
    /// Ran past `spec.maxDuration`.
    DeadlineExceeded,
}

/// The sum of attempt records dropped from a job's history.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedAttempts {
    /// How many records.
    pub attempts: u32,
    /// Their billed GPU-seconds.
    pub gpu_seconds: u64,
    /// Their cost (decimal).
    #[schemars(pattern(STATUS_DECIMAL_PATTERN))]
    pub cost: String,
    /// The providers they ran on (the job's tenant namespace there is removed with the job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub providers: Vec<String>,
}

/// Most characters of an attempt record's `message` (the CRD's `maxLength`): a longer
/// one makes the API server refuse the whole status write (422).
pub const MAX_ATTEMPT_MESSAGE: usize = 1024;

/// A finished attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// Attempt number.
    pub attempt: u32,
    /// Provider that ran it.
    #[schemars(length(max = 253))]
    pub provider: String,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Details for humans.
    #[serde(default)]
    #[schemars(length(max = MAX_ATTEMPT_MESSAGE))]
    pub message: String,
    /// Why it ended, where the outcome alone does not say: `DispatchRejected` (the
    /// provider's API server refused its objects as invalid) or `DispatchForbidden` (the
    /// provider has not granted a permission its objects need; the job is kept off that
    /// provider for a while).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reason: Option<String>,
    /// GPU-seconds billed for this attempt (up to its last heartbeat).
    pub gpu_seconds: u64,
    /// GPUs of the gang during the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// The GPUs billed, by UUID, as the provider's device plugin reported them for the
    /// workers (sorted; at most 64, the first in order; empty when none were reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub gpu_uuids: Vec<String>,
    /// When every worker was Running: billing started here (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub running_time: Option<String>,
    /// Price per GPU-hour of this attempt (decimal).
    #[schemars(pattern(DECIMAL_PATTERN))]
    pub price_per_gpu_hour: String,
    /// When it ended (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub end_time: String,
    /// Whether its member-side pods are gone. An attempt on an unreachable provider is
    /// fenced by its number and removed as soon as the provider answers again.
    #[serde(default)]
    pub removed: bool,
    /// The job (`namespace/name`) this attempt was evicted for (`Preempted`): that job
    /// waits, holding its room, until this attempt's pods are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted_by: Option<String>,
}

/// Usage over all attempts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// GPU-seconds metered.
    pub gpu_seconds: u64,
    /// Cost of those GPU-seconds in the settlement token (decimal).
    #[schemars(pattern(STATUS_DECIMAL_PATTERN))]
    pub cost: String,
}

/// Settlement progress of the job's usage records.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Billing {
    /// Usage records written to the journal.
    pub records: u64,
    /// Records settled on chain at the configured commitment.
    pub settled_records: u64,
    /// GPU-seconds written to the journal (metered); equal to `usage.gpuSeconds` once
    /// every attempt that ended is metered in full.
    #[serde(default)]
    pub metered_gpu_seconds: u64,
    /// Amount settled (decimal, in the settlement mint's unit, with as many fractional
    /// digits as the mint has decimals).
    #[schemars(pattern(MINT_AMOUNT_PATTERN))]
    pub settled_amount: String,
    /// Signatures of the transactions that settled this job's records (most recent 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(pattern(SIGNATURE_PATTERN)))]
    pub signatures: Vec<String>,
}
