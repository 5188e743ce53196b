//! `ComputeQuota`: caps on what one namespace's work holds at the market at once.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, DECIMAL_PATTERN};

/// Caps on what a namespace's ComputeJobs (a ComputeService's replicas included) hold at
/// once, as a ResourceQuota caps a namespace's pod requests: GPUs, and spend per hour.
/// A job that would take its namespace past a cap is not placed; it waits, `Placed=False`
/// with reason `QuotaExceeded`, while the namespace's smaller or cheaper jobs go on.
/// Running work is never stopped by a quota. Several quotas in one namespace all apply.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "ComputeQuota",
    plural = "computequotas",
    singular = "computequota",
    shortname = "cquota",
    category = "gpufed",
    namespaced,
    status = "ComputeQuotaStatus",
    doc = "Caps on the GPUs and spend per hour of one namespace's gpufed work.",
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.used.gpus"),
    printcolumn(name = "Reserved", type_ = "integer", json_path = ".status.reserved.gpus"),
    printcolumn(name = "Max GPUs", type_ = "integer", json_path = ".spec.gpus"),
    printcolumn(name = "Spend/h", type_ = "string", json_path = ".status.used.spendPerHour"),
    printcolumn(name = "Max Spend/h", type_ = "string", json_path = ".spec.maxSpendPerHour"),
    printcolumn(name = "Waiting", type_ = "integer", json_path = ".status.waitingJobs"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.gpus) || has(self.maxSpendPerHour)").message("set spec.gpus, spec.maxSpendPerHour or both: a quota without either caps nothing").field_path(".gpus"))]
#[serde(rename_all = "camelCase")]
pub struct ComputeQuotaSpec {
    /// Most GPUs the namespace's live attempts hold at once (each job counts its
    /// workers × GPUs per worker from placement until its attempt has ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub gpus: Option<u32>,
    /// Most the namespace's live attempts may cost per hour at once, in the settlement
    /// token (decimal): the sum over them of price per GPU-hour × GPUs. A job is placed
    /// only at a price that keeps the namespace within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), pattern(DECIMAL_PATTERN))]
    pub max_spend_per_hour: Option<String>,
}

/// GPUs and spend per hour counted against a namespace's caps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// GPUs.
    pub gpus: u32,
    /// Spend per hour (decimal).
    pub spend_per_hour: String,
}

/// Observed state of a quota.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComputeQuotaStatus {
    /// `Ready`: the quota is valid and applied to placement.
    #[serde(default)]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the namespace's live attempts hold now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<QuotaUsage>,
    /// Room kept, beyond `used`, for the namespace's jobs that preempted work and wait for
    /// it to stop: their GPUs, and their spend at their price ceiling (the price they
    /// will pay is not known yet). It counts against the caps as `used` does, so that the
    /// work they evicted is not placed back into it. Unset when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<QuotaUsage>,
    /// Queued jobs of the namespace that its quotas hold back now.
    #[serde(default)]
    pub waiting_jobs: u32,
}
