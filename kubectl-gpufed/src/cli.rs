//! Command line: global kubectl-style flags and the subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

mod provider;
mod rollout;

pub use provider::{DrainArgs, ProviderCommand, TokenArgs};
pub use rollout::{RolloutCommand, RolloutHistoryArgs, RolloutStatusArgs, RolloutUndoArgs};

/// `kubectl gpufed`: the gpufed GPU federation from kubectl.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-gpufed",
    bin_name = "kubectl gpufed",
    version,
    about = "gpufed from kubectl: providers, jobs, submit, why a job waits, bill, usage, provider tokens, service rollouts",
    after_help = "Documentation: docs/kubectl.md"
)]
pub struct Cli {
    /// Flags every subcommand honours.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags and the output format.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of ComputeJobs (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// GPU providers: region, health, GPUs free/total per model, prices, reputation.
    Providers,
    /// ComputeJobs: phase, provider, attempt, GPUs, GPU-seconds, cost, age.
    Jobs {
        /// List the jobs of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Create (server-side apply) a ComputeJob from flags.
    Submit(Box<SubmitArgs>),
    /// Why a job waits: its conditions, and the placement engine re-run per provider.
    Why {
        /// The ComputeJob's name.
        job: String,
    },
    /// A job's usage and settlement: GPU-seconds, cost, settled records, signatures.
    Bill(BillArgs),
    /// What was spent, by namespace (jobs, GPU-hours, cost, settled on chain or not yet)
    /// or by provider (`--by provider`), summed from the jobs' status.
    Usage(UsageArgs),
    /// One GPU provider: `provider token` (a pull-mode agent's bootstrap token),
    /// `provider cordon|uncordon|drain` (maintenance, as kubectl's for a node).
    Provider {
        /// What to do with the provider.
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// A ComputeService's rollout: `rollout status|restart|pause|resume|history|undo` (as `kubectl
    /// rollout` for a Deployment).
    Rollout {
        /// What to do with the rollout.
        #[command(subcommand)]
        command: RolloutCommand,
    },
}

/// `usage`: spend summed over jobs.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// Every namespace's jobs (default: the namespace's).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// One row per namespace or per provider.
    #[arg(long, value_enum, default_value_t = crate::usage::By::Namespace)]
    pub by: crate::usage::By,
}

/// `bill`: a job's usage and settlement, optionally verified on chain.
#[derive(Debug, Clone, Args)]
pub struct BillArgs {
    /// The ComputeJob's name.
    pub job: String,
    /// Check each settled usage record's Merkle proof against the memo root of its
    /// settlement transaction on chain; exit 1 if any fails.
    #[arg(long, requires = "solana_rpc")]
    pub verify: bool,
    /// Solana JSON-RPC endpoint to verify against, e.g. https://api.devnet.solana.com.
    #[arg(long, value_name = "URL", requires = "verify")]
    pub solana_rpc: Option<String>,
    /// Namespace of the gpufed operator, which keeps the settlement journal.
    #[arg(long, value_name = "NAMESPACE", default_value = "gpufed-system")]
    pub operator_namespace: String,
}

/// `spec.gpu.tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    /// Any GPU that meets the other requirements.
    #[value(name = "Any")]
    Any,
    /// Data-center GPUs only.
    #[value(name = "Datacenter")]
    Datacenter,
    /// Consumer GPUs only.
    #[value(name = "Consumer")]
    Consumer,
}

/// `spec.gpu.interconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InterconnectArg {
    /// No requirement.
    #[value(name = "Any")]
    Any,
    /// Each worker's GPUs share an NVLink domain.
    #[value(name = "NVLink")]
    NvLink,
    /// The whole gang shares one NVLink domain.
    #[value(name = "NVLinkDomain")]
    NvLinkDomain,
}

/// `spec.failurePolicy.onProviderLoss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    /// Place a new attempt elsewhere, resuming from the checkpoint.
    #[value(name = "Failover")]
    Failover,
    /// Fail the job.
    #[value(name = "Fail")]
    Fail,
}

/// `submit`: a ComputeJob from flags. Arguments after `--` are the container's args, or
/// its command with `--command` (as in `kubectl run`).
#[derive(Debug, Clone, Default, Args)]
pub struct SubmitArgs {
    /// Name of the ComputeJob.
    pub name: String,
    /// Container image of every worker.
    #[arg(long)]
    pub image: String,
    /// GPUs per worker (`spec.gpusPerWorker`, 1–16).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub gpus_per_worker: u32,
    /// Workers of the gang (`spec.workers`); placed whole or not at all.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub workers: u32,
    /// Acceptable GPU model (repeat or comma-separate), e.g. NVIDIA-H100-80GB-HBM3.
    #[arg(long = "model", value_name = "MODEL", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Hardware class.
    #[arg(long, value_enum, ignore_case = true)]
    pub tier: Option<TierArg>,
    /// Least memory per GPU, e.g. 80G (decimal, as vendors count) or 80Gi.
    #[arg(long, value_name = "QUANTITY")]
    pub min_memory: Option<String>,
    /// Least CUDA compute capability, e.g. 9.0.
    #[arg(long, value_name = "MAJOR.MINOR")]
    pub min_compute_capability: Option<String>,
    /// How the GPUs must be connected.
    #[arg(long, value_enum, ignore_case = true)]
    pub interconnect: Option<InterconnectArg>,
    /// Highest price per GPU-hour, a decimal in the settlement token, e.g. 2.50.
    #[arg(long, value_name = "DECIMAL")]
    pub max_price: String,
    /// Longest run over all attempts, e.g. 36h or 1h30m.
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<String>,
    /// Give up an attempt whose workers are not all running this long after placement,
    /// e.g. 30m (default 15m), and place the job elsewhere.
    #[arg(long, value_name = "DURATION")]
    pub start_timeout: Option<String>,
    /// Delete the job this long after it finished, e.g. 24h (its usage is metered first).
    #[arg(long, value_name = "DURATION")]
    pub ttl_after_finished: Option<String>,
    /// Allowed region (repeat or comma-separate).
    #[arg(long = "region", value_name = "REGION", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Allowed provider (repeat or comma-separate).
    #[arg(long = "provider", value_name = "PROVIDER", value_delimiter = ',')]
    pub providers: Vec<String>,
    /// Provider to try first (repeat, most preferred first).
    #[arg(long = "prefer", value_name = "PROVIDER", value_delimiter = ',')]
    pub preferred: Vec<String>,
    /// Least provider reputation, 0–100.
    #[arg(long, value_name = "N")]
    pub min_reputation: Option<u32>,
    /// Accept providers whose GPUs are not verified (`placement.verifiedOnly: false`).
    #[arg(long)]
    pub allow_unverified: bool,
    /// Queue priority, 0–1000 (default 100).
    #[arg(long, value_name = "N")]
    pub priority: Option<u32>,
    /// When the job fits nowhere, evict running jobs of lower priority
    /// (`placement.preemptLowerPriority`; whose jobs is the operator's policy).
    #[arg(long)]
    pub preempt: bool,
    /// Most attempts in total, 1–10 (default 3).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// What to do when the provider is lost.
    #[arg(long, value_enum, ignore_case = true)]
    pub on_provider_loss: Option<LossArg>,
    /// Checkpoint location, e.g. s3://bucket/run-42/.
    #[arg(long, value_name = "URI")]
    pub checkpoint: Option<String>,
    /// Let the workers reach the public internet (`spec.egress: Internet`), not only their
    /// own gang and the cluster DNS.
    #[arg(long)]
    pub internet: bool,
    /// Secret (in the job's namespace) with credentials for the checkpoint location.
    #[arg(long, value_name = "SECRET", requires = "checkpoint")]
    pub checkpoint_secret: Option<String>,
    /// Environment variable of the container (repeat).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// CPU request of each worker, e.g. 16.
    #[arg(long, value_name = "QUANTITY")]
    pub cpu: Option<String>,
    /// Memory request of each worker, e.g. 128Gi.
    #[arg(long, value_name = "QUANTITY")]
    pub memory: Option<String>,
    /// Label of the worker pods (repeat).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Create the job suspended (not placed until `spec.suspend` is false).
    #[arg(long)]
    pub suspend: bool,
    /// The arguments after `--` are the container's command, not its args.
    #[arg(long)]
    pub command: bool,
    /// Print the manifest instead of creating the job (YAML, or JSON with -o json).
    #[arg(long)]
    pub dry_run: bool,
    /// Show progress until the job succeeds (exit 0) or fails (exit 1).
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// With --wait: give up after this long, e.g. 30m.
    #[arg(long, requires = "wait", value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Container args (or command, with --command).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-gpufed").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["jobs", "-A", "-o", "json", "--context", "hub"]).unwrap();
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(cli.global.context.as_deref(), Some("hub"));
        assert!(matches!(cli.command, Command::Jobs { all_namespaces: true }));
        let cli = parse(&["-n", "team", "why", "llama"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn submit_takes_kubectl_run_style_args() {
        let cli = parse(&[
            "submit",
            "x",
            "--image",
            "img",
            "--max-price",
            "2",
            "--model",
            "A,B",
            "--model",
            "C",
            "--interconnect",
            "nvlink",
            "--command",
            "--",
            "python",
            "train.py",
        ])
        .unwrap();
        let Command::Submit(s) = cli.command else {
            panic!("not submit")
        };
        assert_eq!(s.models, ["A", "B", "C"]);
        assert_eq!(s.interconnect, Some(InterconnectArg::NvLink));
        assert!(s.command);
        assert_eq!(s.args, ["python", "train.py"]);
    }

    #[test]
    fn bill_verify_needs_an_rpc_url() {
        let cli = parse(&["bill", "x", "--verify", "--solana-rpc", "http://127.0.0.1:8899"]).unwrap();
        let Command::Bill(b) = cli.command else {
            panic!("not bill")
        };
        assert!(b.verify);
        assert_eq!(b.solana_rpc.as_deref(), Some("http://127.0.0.1:8899"));
        assert_eq!(b.operator_namespace, "gpufed-system");
        let e = parse(&["bill", "x", "--verify"]).unwrap_err();
        assert!(e.to_string().contains("--solana-rpc <URL>"), "{e}");
        let e = parse(&["bill", "x", "--solana-rpc", "http://h"]).unwrap_err();
        assert!(e.to_string().contains("--verify"), "{e}");
        let cli = parse(&["bill", "x"]).unwrap();
        assert!(matches!(cli.command, Command::Bill(b) if !b.verify));
    }

    #[test]
    fn provider_token_takes_a_ttl_or_revokes() {
        let cli = parse(&["provider", "token", "rtx-home", "-o", "json"]).unwrap();
        let Command::Provider {
            command: ProviderCommand::Token(t),
        } = cli.command
        else {
            panic!("not provider token")
        };
        assert_eq!(
            (t.provider.as_str(), t.ttl.as_str(), t.revoke),
            ("rtx-home", "24h", false)
        );
        let cli = parse(&["provider", "token", "p", "--revoke"]).unwrap();
        assert!(matches!(cli.command, Command::Provider { command: ProviderCommand::Token(t) } if t.revoke));
        let e = parse(&["provider", "token", "p", "--revoke", "--ttl", "1h"]).unwrap_err();
        assert!(e.to_string().contains("--ttl"), "{e}");
        assert!(parse(&["provider", "token"]).is_err());
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = parse(&[
            "submit",
            "x",
            "--image",
            "i",
            "--max-price",
            "1",
            "--workers",
            "two",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--workers"), "{e}");
        let e = parse(&["submit", "x", "--image", "i"]).unwrap_err();
        assert!(e.to_string().contains("--max-price"), "{e}");
        let e = parse(&[
            "submit",
            "x",
            "--image",
            "i",
            "--max-price",
            "1",
            "--tier",
            "Gaming",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--tier"), "{e}");
        assert!(
            parse(&[
                "submit",
                "x",
                "--image",
                "i",
                "--max-price",
                "1",
                "--dry-run",
                "--wait"
            ])
            .is_err()
        );
    }
}
