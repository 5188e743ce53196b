//! The label sets of the operator's metrics (`crate::metrics`), and the bounds of its
//! histograms.

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

/// Every [`StallLabel::reason`] a ComputeService's `Stalled` condition takes: the
/// constants the service controller sets it from (`service::plan`: an invalid spec or
/// template, or the progress deadline), so a renamed one is still seeded. Job `Stalled`
/// reasons are not counted: `gpufed_service_stalls_total` is about ComputeServices only.
pub const STALL_REASONS: [&str; 3] = [
    crate::service::progress::DEADLINE_EXCEEDED,
    crate::service::validate::INVALID_SPEC,
    crate::job::plan::INVALID_TEMPLATE,
];

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

// Histogram bounds. `histogram_quantile` never reports more than a histogram's top
// finite bucket, so an alert comparing a quantile with a threshold above it can never
// fire (GpufedChallengeRoundTripNearLimit at 80% of a band's limit,
// GpufedChallengeRoundLagNearGrace at 80% of the round grace). The buckets therefore
// reach past any threshold a sane configuration gives them.

/// `gpufed_challenge_round_trip_seconds`: 50 ms × 2^k up to 819.2 s, past any
/// `--challenge-timeout` of minutes (a commitment later than that is NotAnswered, never
/// measured), so band limits up to 1024 s keep their alert.
pub const ROUND_TRIP_BUCKETS: u16 = 15;

/// `gpufed_challenge_round_lag_seconds`: 10 ms × 2^k up to 655.36 s, so a
/// `--challenge-round-grace` up to 819 s (the default is 5 s) keeps its alert.
pub const ROUND_LAG_BUCKETS: u16 = 17;
