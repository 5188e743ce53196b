//! Serving: the parts of a `ComputeJob` that make it one replica of a `ComputeService`
//! (a port exposed through its provider, a readiness probe, a spread group), and what the
//! operator reports about a replica's endpoint.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::DNS_LABEL_PATTERN;
use crate::job::OpenObject;

/// Label on every replica `ComputeJob` naming its `ComputeService` (also the scale
/// subresource's selector).
pub const LABEL_SERVICE: &str = "gpufed.io/service";

/// How a replica's port is exposed in its provider's cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ExposeType {
    /// Reachable inside the provider cluster only (`<svc>.<ns>.svc`).
    ClusterIP,
    /// A port on the replica's node (`nodeIP:nodePort`), routable from the hub.
    #[default]
    NodePort,
    /// The provider's load balancer (its ingress IP or host, once assigned).
    LoadBalancer,
}

/// The port a model server listens on and how it is exposed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingPort {
    /// Container port of the model server (first container).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Port name (an IANA service name, e.g. `http`, `grpc`).
    #[serde(default = "default_port_name")]
    #[schemars(length(min = 1, max = 15), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub name: String,
    /// Service type used to expose the port at the provider.
    #[serde(default, rename = "type")]
    pub type_: ExposeType,
}

fn default_port_name() -> String {
    "http".to_owned()
}

/// Set on a `ComputeJob` that serves: one long-running replica with an endpoint. The
/// `ComputeService` controller writes it on the replicas it owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Serving {
    /// The served port.
    pub port: ServingPort,
    /// Readiness probe (a Kubernetes `Probe`) put on the first container when it has
    /// none; without either, a TCP probe of the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<OpenObject>,
}

/// Which failure domain replicas of one spread group avoid sharing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum SpreadDomain {
    /// One provider.
    #[default]
    Provider,
    /// One region.
    Region,
}

/// Prefer placing jobs of one group on different providers (or regions). A preference:
/// when no other domain fits, a job still shares one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    /// Group name, within the job's namespace (a `ComputeService`'s name for its replicas).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub group: String,
    /// The failure domain.
    #[serde(default)]
    pub across: SpreadDomain,
}

/// What the operator observed of a serving replica's endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The provider the replica runs on.
    #[schemars(length(max = 253))]
    pub provider: String,
    /// Where to reach it: `host:port` (node IP and node port, load-balancer ingress and
    /// port, or the in-cluster Service DNS name); absent until known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 300))]
    pub address: Option<String>,
    /// The serving pod's `Ready` condition as its kubelet reports it.
    pub ready: bool,
    /// When `ready` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub since: Option<String>,
}

/// How a replica's serving Service looks in its member cluster (what the address is
/// made of). Reported by the agent in pull mode, read directly in push mode.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// The Service's type.
    #[serde(rename = "type")]
    pub type_: ExposeType,
    /// The node port allocated by the member's API server (NodePort, LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
    /// The load balancer's ingress IP or host name, once assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub ingress: Option<String>,
}
