//! The label sets of the operator's metrics (`crate::metrics`).

use prometheus_client::encoding::EncodeLabelSet;

/// Label: which controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `provider`, `job` or `placement`.
    pub controller: &'static str,
}

/// Label: controller and error category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// `provider`, `job` or `placement`.
    pub controller: &'static str,
    /// [`crate::error::Error::category`].
    pub category: &'static str,
}

/// Label: provider health state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabel {
    /// `ready` or `not_ready`.
    pub state: &'static str,
}

/// Label: why running attempts were evicted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabel {
    /// `priority` (for a job of higher priority, also one its namespace's quota holds),
    /// `drain`, `drain_deadline` (a drain past its `spec.drainDeadline`, disruption
    /// budgets overridden) or `tenancy` (a tenant policy's `evictRunning`).
    pub cause: &'static str,
}

/// Every [`EvictionLabel::cause`].
pub const EVICTION_CAUSES: [&str; 4] = ["priority", "drain", "drain_deadline", "tenancy"];

/// Every [`StallLabel::reason`] a ComputeService's `Stalled` condition takes.
pub const STALL_REASONS: [&str; 3] = ["ProgressDeadlineExceeded", "InvalidSpec", "InvalidTemplate"];

/// Label: which count of the fleet's GPUs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuStateLabel {
    /// `total` (on ready nodes of the providers placement may use) or `free` (of those,
    /// held by no live attempt and no foreign pod).
    pub state: &'static str,
}

/// Label: outcome of one GPU's challenge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChallengeLabel {
    /// `passed`, or the failure reason (`WrongDigest`, `TooSlow`, `NotAnswered`, …).
    pub result: &'static str,
}

/// Label: why a challenge started (`gpufed_trust::rounds::Why::label`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhyLabel {
    /// `round`, `join`, `changed` or `wanted`.
    pub why: &'static str,
}

/// Label: what became of a verdict kept in the hub when this process loaded it
/// (`crate::verification::verdicts::Outcome::label`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoredLabel {
    /// `restored`, `due`, `expired`, `bands_changed` or `unreadable`.
    pub outcome: &'static str,
}

/// Label: the GPU model a challenge band is for (bounded by the bands loaded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// The band's model, as written in the bands file.
    pub model: String,
}

/// Label: how a member was probed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabel {
    /// `whole` (nodes and pods, every heartbeat), `reports` (the nodes' signed reports
    /// only, listed, every `--challenge-poll` while a challenge is open) or `watched` (the
    /// same from the hub's watch of the member's nodes, when a report changed).
    pub kind: &'static str,
}

/// Label: why a member's GPU nodes sit out placement.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExcludedLabel {
    /// `no_gpus` or `duplicate_node` ([`crate::mapping::sanitize::Problem::label`]).
    pub reason: &'static str,
}

/// Label: why queued jobs were not placed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitingLabel {
    /// The jobs' `Placed` reason ([`crate::placement::UNPLACED_REASONS`]).
    pub reason: &'static str,
}

/// Label: why a ComputeService became stuck.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StallLabel {
    /// The `Stalled` reason (`ProgressDeadlineExceeded`, `InvalidSpec`, `InvalidTemplate`).
    pub reason: String,
}
