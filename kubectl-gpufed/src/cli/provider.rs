//! `kubectl gpufed provider …`: what a provider's owner does to a GpuProvider —
//! bootstrap tokens, and cordon, uncordon and drain as for a node.

use clap::{Args, Subcommand};

/// `provider` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Create a bootstrap token for a pull-mode provider's agent and print the helm
    /// command that installs it (like `kubeadm token create`), or revoke its tokens.
    Token(TokenArgs),
    /// No new jobs on the provider (`spec.paused: true`); running work continues.
    Cordon {
        /// The GpuProvider's name.
        provider: String,
    },
    /// New jobs again, and no more evictions (`spec.paused` and `spec.drain` false).
    Uncordon {
        /// The GpuProvider's name.
        provider: String,
    },
    /// Move the provider's work elsewhere (`spec.drain: true`): its running attempts are
    /// evicted and queued again, a ComputeService's replicas only as its disruption
    /// budget allows; waits until nothing runs there.
    Drain(DrainArgs),
}

/// `provider drain`.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// The GpuProvider's name.
    pub provider: String,
    /// Wait until the provider is drained (the default; `--wait` alone says so too);
    /// `--wait=false` sets the drain and returns.
    // A bare flag means true and a value needs `=`, as kubectl's boolean flags: else
    // `--wait` would take the next argument for its value.
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub wait: bool,
    /// Give up waiting after this long, e.g. 30m (default: no limit; the drain goes on).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Also set `spec.drainDeadline`, e.g. 4h: this long after the drain began, what still
    /// runs is evicted whatever the disruption budgets say (default: a deadline already
    /// set stays; none: budgets hold the drain as long as they need).
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,
}

/// `provider token`: a bootstrap token for a pull-mode provider's agent.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The GpuProvider's name (its `spec.mode` must be `Pull`).
    pub provider: String,
    /// How long the token is valid, e.g. 24h or 2h30m; at most 168h.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub ttl: String,
    /// Delete every bootstrap token issued for the provider instead.
    #[arg(long, conflicts_with = "ttl")]
    pub revoke: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ProviderCommand;
    use crate::cli::{Cli, Command};

    fn wait(args: &[&str]) -> Result<bool, clap::Error> {
        let all = ["kubectl-gpufed", "provider", "drain", "dc-east"];
        match Cli::try_parse_from(all.iter().chain(args))?.command {
            Command::Provider {
                command: ProviderCommand::Drain(d),
            } => Ok(d.wait),
            other => panic!("not provider drain: {other:?}"),
        }
    }

    #[test]
    fn wait_is_a_kubectl_style_boolean() {
        assert_eq!(wait(&[]).ok(), Some(true));
        assert_eq!(wait(&["--wait"]).ok(), Some(true));
        assert_eq!(wait(&["--wait", "--timeout", "30m"]).ok(), Some(true));
        assert_eq!(wait(&["--wait=true"]).ok(), Some(true));
        assert_eq!(wait(&["--wait=false"]).ok(), Some(false));
        // A bare flag takes no value from the next argument.
        assert!(wait(&["--wait", "false"]).is_err());
        let e = wait(&["--wait=soon"]).unwrap_err();
        assert!(e.to_string().contains("--wait"), "{e}");
    }
}
