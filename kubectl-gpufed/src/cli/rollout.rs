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
    // A negative number is taken as the flag's value (then refused), not as a flag.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = revision_number
    )]
    pub to_revision: i64,
}

/// `--to-revision N`: a revision number, or 0 for the previous one.
fn revision_number(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a revision number (1, 2, …; 0 or no --to-revision: the previous revision)"
        )),
    }
}

/// `rollout status`.
#[derive(Debug, Clone, Args)]
pub struct RolloutStatusArgs {
    /// The ComputeService's name.
    pub service: String,
    /// Watch until the rollout ends (the default; `-w` alone says so too);
    /// `--watch=false` prints the state once.
    // A bare flag means true and a value needs `=`, as kubectl's boolean flags: else
    // `-w` would take the next argument for its value.
    #[arg(
        short = 'w',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub watch: bool,
    /// Give up after this long, e.g. 5m or 90s (default: no limit).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::RolloutCommand;
    use crate::cli::{Cli, Command};

    fn watch(args: &[&str]) -> Result<bool, clap::Error> {
        let all = ["kubectl-gpufed", "rollout", "status", "llm"];
        match Cli::try_parse_from(all.iter().chain(args))?.command {
            Command::Rollout {
                command: RolloutCommand::Status(s),
            } => Ok(s.watch),
            other => panic!("not rollout status: {other:?}"),
        }
    }

    #[test]
    fn watch_is_a_kubectl_style_boolean() {
        assert_eq!(watch(&[]).ok(), Some(true));
        assert_eq!(watch(&["-w"]).ok(), Some(true));
        assert_eq!(watch(&["--watch"]).ok(), Some(true));
        assert_eq!(watch(&["--watch=false"]).ok(), Some(false));
        assert_eq!(watch(&["-w=false"]).ok(), Some(false));
        assert_eq!(watch(&["--watch=true", "--timeout", "5m"]).ok(), Some(true));
        // A bare flag takes no value from the next argument: `false` is a second NAME.
        assert!(watch(&["--watch", "false"]).is_err());
        let e = watch(&["--watch=maybe"]).unwrap_err();
        assert!(e.to_string().contains("--watch"), "{e}");
    }

    fn to_revision(args: &[&str]) -> Result<i64, clap::Error> {
        let all = ["kubectl-gpufed", "rollout", "undo", "llm"];
        match Cli::try_parse_from(all.iter().chain(args))?.command {
            Command::Rollout {
                command: RolloutCommand::Undo(u),
            } => Ok(u.to_revision),
            other => panic!("not rollout undo: {other:?}"),
        }
    }

    #[test]
    fn a_negative_to_revision_is_an_invalid_flag_value() {
        assert_eq!(to_revision(&[]).ok(), Some(0));
        assert_eq!(to_revision(&["--to-revision", "3"]).ok(), Some(3));
        assert_eq!(to_revision(&["--to-revision=0"]).ok(), Some(0));
        for args in [
            &["--to-revision", "-5"][..],
            &["--to-revision=-5"],
            &["--to-revision", "x"],
        ] {
            let e = to_revision(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}: {e}");
            let text = e.to_string();
            assert!(
                text.contains("--to-revision") && text.contains("is not a revision number"),
                "{args:?}: {text}"
            );
        }
    }
}
