//! `kubectl gpufed rollout …`: a ComputeService's rollouts, as `kubectl rollout` does a
//! Deployment's.

use clap::{Args, Subcommand};

/// `rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the service's replicas all run its current template and are ready;
    /// exit 1 when the operator reports it stuck (e.g. ProgressDeadlineExceeded).
    Status(RolloutStatusArgs),
    /// Replace every replica, within spec.rollout's bounds, by setting the template
    /// annotation gpufed.io/restartedAt.
    Restart {
        /// The ComputeService's name.
        service: String,
    },
    /// Hold rollouts (`spec.paused: true`): template changes wait, a rollout under way
    /// holds where it is; replicas are still replaced and scaled.
    Pause {
        /// The ComputeService's name.
        service: String,
    },
    /// Resume rollouts (`spec.paused: false`): the spec's template is rolled out.
    Resume {
        /// The ComputeService's name.
        service: String,
    },
    /// The templates the service ran, by revision number (`--revision N`: one in full).
    History(RolloutHistoryArgs),
    /// Put an earlier template back (the previous one, or `--to-revision N`): the spec's
    /// template fields are set from the revision, and the operator rolls the replicas
    /// under spec.rollout. Under GitOps, revert in Git instead (the tool would undo this).
    Undo(RolloutUndoArgs),
}

/// `rollout history`.
#[derive(Debug, Clone, Args)]
pub struct RolloutHistoryArgs {
    /// The ComputeService's name.
    pub service: String,
    /// Show this revision's template.
    #[arg(long, value_name = "N")]
    pub revision: Option<i64>,
}

/// `rollout undo`.
#[derive(Debug, Clone, Args)]
pub struct RolloutUndoArgs {
    /// The ComputeService's name.
    pub service: String,
    /// The revision to go back to; 0 or absent: the previous one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub to_revision: i64,
}

/// `rollout status`.
#[derive(Debug, Clone, Args)]
pub struct RolloutStatusArgs {
    /// The ComputeService's name.
    pub service: String,
    /// Watch until the rollout ends; `--watch=false` prints the state once.
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub watch: bool,
    /// Give up after this long, e.g. 5m or 90s (default: no limit).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}
