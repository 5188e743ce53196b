//! Taints and tolerations: which of a member's tainted GPU nodes gpufed's workers may run
//! on, with Kubernetes' matching rules (`ToleratesTaint` of `k8s.io/api/core/v1`), as our
//! own types so the operator and effect are enums in the schema and the inventory can
//! judge a node without a scheduler.
//!
//! Data centers taint their GPU nodes so that nothing lands there by accident (GKE and
//! AKS taint GPU pools `nvidia.com/gpu=present:NoSchedule`; many taint dedicated pools
//! `dedicated=<team>:NoSchedule`). A node whose hard taints the workers would not
//! tolerate is one the member's scheduler will never bind them to: counting its GPUs
//! would sell capacity that cannot start.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Taint key the node lifecycle controller sets on a node whose `Ready` is `False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint key the node lifecycle controller sets on a node whose `Ready` is `Unknown`.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// A toleration the operator adds to every worker pod it runs on the provider, as
/// Kubernetes' `Toleration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerToleration {
    /// The taint key; empty with `operator: Exists` tolerates every taint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 317))]
    pub key: String,
    /// `Equal` (the default): the taint's value must be `value`. `Exists`: any value.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// The taint value `Equal` matches; empty for `Exists`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63))]
    pub value: String,
    /// The taint effect tolerated; unset: every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// For `NoExecute` only: how long a running worker stays after such a taint appears
    /// (unset: for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub toleration_seconds: Option<i64>,
}

/// How a toleration matches a taint's value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TolerationOperator {
    /// The values are equal.
    #[default]
    Equal,
    /// Any value.
    Exists,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum TaintEffect {
    /// No new pods are scheduled there.
    NoSchedule,
    /// The scheduler avoids the node where it can (a preference, never a refusal).
    PreferNoSchedule,
    /// No new pods, and running ones are evicted.
    NoExecute,
}

impl TaintEffect {
    /// The effect's name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }

    /// Parses Kubernetes' spelling; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::NoSchedule, Self::PreferNoSchedule, Self::NoExecute]
            .into_iter()
            .find(|e| e.as_str() == text)
    }

    /// Whether the scheduler refuses an untolerating pod (not a mere preference).
    pub fn is_hard(self) -> bool {
        self != Self::PreferNoSchedule
    }
}

/// A node taint, as Kubernetes' `Taint` (without its time).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeTaint {
    /// The key.
    pub key: String,
    /// The value (often empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// The effect.
    pub effect: TaintEffect,
}

impl std::fmt::Display for NodeTaint {
    /// kubectl's spelling: `key=value:Effect`, or `key:Effect` without a value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

impl WorkerToleration {
    /// `key` tolerated with any value, for `effect`.
    pub fn exists(key: &str, effect: Option<TaintEffect>) -> Self {
        Self {
            key: key.to_owned(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect,
            toleration_seconds: None,
        }
    }

    /// Why the toleration is malformed (as the API server would refuse it in a pod);
    /// `None` when it is well formed.
    pub fn problem(&self) -> Option<&'static str> {
        match self.operator {
            TolerationOperator::Exists if !self.value.is_empty() => Some("operator Exists takes no value"),
            TolerationOperator::Equal if self.key.is_empty() => {
                Some("an empty key tolerates every taint only with operator Exists")
            }
            _ if self.toleration_seconds.is_some() && self.effect != Some(TaintEffect::NoExecute) => {
                Some("tolerationSeconds needs effect NoExecute")
            }
            _ => None,
        }
    }

    /// Whether this toleration tolerates `taint` (Kubernetes' `ToleratesTaint`).
    pub fn tolerates(&self, taint: &NodeTaint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            // An empty key with Exists matches every taint.
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => !self.key.is_empty() && self.value == taint.value,
        }
    }

    /// As Kubernetes' `Toleration`, for a worker pod.
    pub fn to_k8s(&self) -> k8s_openapi::api::core::v1::Toleration {
        let operator = match self.operator {
            TolerationOperator::Equal => "Equal",
            TolerationOperator::Exists => "Exists",
        };
        k8s_openapi::api::core::v1::Toleration {
            key: (!self.key.is_empty()).then(|| self.key.clone()),
            operator: Some(operator.to_owned()),
            value: (!self.value.is_empty()).then(|| self.value.clone()),
            effect: self.effect.map(|e| e.as_str().to_owned()),
            toleration_seconds: self.toleration_seconds,
        }
    }
}

/// The tolerations every gpufed worker on a provider has: the provider's
/// `spec.workerTolerations`, the operator's own for the GPU resource's taint
/// (`<resource>:NoSchedule`, any value — what the `ExtendedResourceToleration` admission
/// plugin adds to pods requesting that resource), and the two that the API server's
/// `DefaultTolerationSeconds` admission plugin adds to every pod (a node that is not
/// ready is judged by its `Ready` condition instead).
pub fn effective(resource: &str, provider: &[WorkerToleration]) -> Vec<WorkerToleration> {
    let mut all = provider.to_vec();
    all.push(WorkerToleration::exists(resource, Some(TaintEffect::NoSchedule)));
    for key in [NOT_READY, UNREACHABLE] {
        let mut t = WorkerToleration::exists(key, Some(TaintEffect::NoExecute));
        t.toleration_seconds = Some(300);
        all.push(t);
    }
    all
}

/// The hard taints (`NoSchedule`, `NoExecute`) of `taints` that no toleration of
/// `tolerations` tolerates: the reasons a worker would never be scheduled there.
pub fn untolerated<'a>(taints: &'a [NodeTaint], tolerations: &[WorkerToleration]) -> Vec<&'a NodeTaint> {
    taints
        .iter()
        .filter(|t| t.effect.is_hard())
        .filter(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
        .collect()
}

#[cfg(test)]
mod tests;
