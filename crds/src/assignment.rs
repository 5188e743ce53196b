//! `Assignment`: one attempt of a ComputeJob handed to a pull-mode provider's agent.
//!
//! In pull mode the hub never connects to the member. Instead it writes, into the
//! provider's own hub namespace (see [`crate::pull`]), the very member-side objects it
//! would apply in push mode; the provider's `gpufed-agent` applies them in its cluster
//! and reports the pods it sees back in `status`. The agent's identity may read only
//! the Assignments of its own namespace and write only their status.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, DNS_LABEL_PATTERN};

/// Condition type on Assignments, written by the agent: whether it applied the objects.
pub const APPLIED: &str = "Applied";

/// Reasons of the `Applied` condition. The hub ends the attempt on [`REFUSED`] and
/// [`REJECTED`] (no retry of the same Assignment heals them) and waits through the others;
/// a reason it does not know (a newer agent's) is read as before: by the reported pods.
pub mod reasons {
    /// `True`: the objects exist in the member.
    pub const APPLIED: &str = "Applied";
    /// `False`: the agent's own checks refused the Assignment (it reaches beyond its
    /// tenant namespace, or a pod fails the `restricted` profile); nothing was created.
    /// Permanent for this generation.
    pub const REFUSED: &str = "Refused";
    /// `False`: the member's API server refused the objects as invalid (HTTP 400 or 422),
    /// the message its answer. Permanent for this generation.
    pub const REJECTED: &str = "Rejected";
    /// `False`: the member's API server forbade the objects (HTTP 403 for a permission the
    /// agent lacks or an admission policy; not a full quota), the message its answer. The
    /// agent retries every round; the hub ends the attempt once it lasts past a grace
    /// period and keeps the job off this provider for a while.
    pub const FORBIDDEN: &str = "Forbidden";
    /// `False`: applying failed otherwise (member API server away, a full quota, 409,
    /// 5xx); the agent retries every round.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// `False`: applied, but the pods could not be read; retried every round.
    pub const OBSERVE_FAILED: &str = "ObserveFailed";
}

/// The member-side objects of one job attempt, for a pull-mode provider's agent.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "Assignment",
    plural = "assignments",
    singular = "assignment",
    shortname = "asgn",
    category = "gpufed",
    namespaced,
    status = "AssignmentStatus",
    doc = "One ComputeJob attempt assigned to a pull-mode provider; its agent applies it.",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantNamespace"),
    printcolumn(name = "Attempt", type_ = "integer", json_path = ".spec.attempt"),
    printcolumn(
        name = "Applied",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Applied")].status"#
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentSpec {
    /// UID of the hub ComputeJob.
    #[schemars(length(min = 1, max = 64))]
    pub job_uid: String,
    /// The attempt number (pods carry it as the label `gpufed.io/attempt`).
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The tenant namespace in the member cluster that holds the attempt's objects.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub tenant_namespace: String,
    /// The tenant Namespace object.
    #[schemars(extend("type" = "object", "x-kubernetes-preserve-unknown-fields" = true))]
    pub namespace: serde_json::Value,
    /// Namespaced objects applied before the pods: NetworkPolicy, ResourceQuota, Service.
    #[serde(default)]
    #[schemars(length(max = 8), extend("items" = {"type": "object", "x-kubernetes-preserve-unknown-fields": true}))]
    pub objects: Vec<serde_json::Value>,
    /// The worker pods, by rank. Missing ones are created; existing ones are left alone
    /// (pod specs are immutable).
    #[serde(default)]
    #[schemars(length(max = 512), extend("items" = {"type": "object", "x-kubernetes-preserve-unknown-fields": true}))]
    pub pods: Vec<serde_json::Value>,
}

/// What the agent last saw of the assignment in its member cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentStatus {
    /// `Applied`: whether the agent could apply the objects (reason and message when not:
    /// `Refused` and `Rejected` are permanent and end the attempt, `ApplyFailed` and
    /// `ObserveFailed` are retried).
    #[serde(default)]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the agent acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The attempt's pods as the member cluster reports them.
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub pods: Vec<AssignedPod>,
    /// A serving attempt's Service, as the member cluster allocated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<crate::serving::Exposure>,
    /// Set once every worker of the gang has been seen running (or done), and never
    /// cleared: from then on a missing worker is not created again (one rank restarted
    /// beside peers mid-run is no gang), across the agent's restarts too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ran_whole: bool,
}

/// One worker pod of an assignment, as the agent observed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignedPod {
    /// Pod name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Worker rank.
    pub rank: u32,
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[schemars(length(max = 16))]
    pub phase: String,
    /// The node the pod is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub node_name: Option<String>,
    /// Whether that node is Ready (false also when the node is gone).
    #[serde(default)]
    pub node_ready: bool,
    /// Whether that node's `Ready` condition is `Unknown` (the member's node controller
    /// lost contact with it; it may come back): the hub waits the provider's heartbeat
    /// grace period before counting it lost. Agents that do not send it report such a
    /// node only as not Ready (lost at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_unreachable: bool,
    /// When the pod's containers started running (Unix seconds, the earliest), for
    /// metering: billing starts when every worker runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When the last container finished (Unix seconds), for metering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// The pod's `Ready` condition (serving replicas).
    #[serde(default)]
    pub ready: bool,
    /// Where the pod's node is reached: its `ExternalIP` if it has one, else the pod's
    /// `status.hostIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub host_ip: Option<String>,
    /// The GPUs the node's device plugin says the pod holds (sorted UUIDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub gpu_uuids: Vec<String>,
    /// What a pod that does not run yet waits for, as its scheduler or kubelet says
    /// (`Unschedulable: 0/4 nodes are available: …`, `ImagePullBackOff: …`): the hub
    /// puts it in the record of an attempt that did not start in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 320))]
    pub waiting: Option<String>,
}
