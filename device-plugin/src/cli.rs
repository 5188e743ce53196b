//! The binary's flags, and the plain settings they stand for. In the library (not in
//! `main.rs`) so that tests can parse what a deployment passes: the provider chart's
//! rendered DaemonSet args are parsed with [`Cli`] in e2e/tests/charts.rs, which would
//! catch a flag the binary does not know or a path that disagrees with the mounts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::health::HealthPolicy;
use crate::kubelet::KubeletConfig;
use crate::service::AllocateConfig;
use crate::{DEFAULT_PLUGIN_DIR, DEFAULT_POD_RESOURCES_SOCKET, DEFAULT_RESOURCE_NAME};

/// Flags of `gpufed-device-plugin` (some also readable from the environment).
#[derive(Debug, Parser)]
#[command(
    name = "gpufed-device-plugin",
    version,
    about = "gpufed kubelet device plugin for NVIDIA GPUs"
)]
pub struct Cli {
    /// Serve the inventory declared in this YAML/JSON file instead of NVML (test nodes;
    /// everything published is marked simulated).
    #[arg(long, env = "GPUFED_SIMULATE")]
    pub simulate: Option<PathBuf>,
    /// Extended resource name to advertise.
    #[arg(long, env = "GPUFED_RESOURCE_NAME", default_value = DEFAULT_RESOURCE_NAME)]
    pub resource_name: String,
    /// kubelet device-plugin directory (holds kubelet.sock).
    #[arg(long, env = "GPUFED_PLUGIN_DIR", default_value = DEFAULT_PLUGIN_DIR)]
    pub plugin_dir: PathBuf,
    /// Our socket's file name inside the plugin directory.
    #[arg(long, default_value = "gpufed-gpu.sock")]
    pub socket_name: String,
    /// kubelet PodResources socket (frees GPUs of finished pods); "" to disable.
    #[arg(long, default_value = DEFAULT_POD_RESOURCES_SOCKET)]
    pub pod_resources_socket: String,
    /// Seconds without a critical fault before an unhealthy GPU is healthy again (a fault
    /// that needs a GPU reset waits for the reset first). At least 1: a GPU must be seen
    /// unhealthy before it can recover.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub probation_secs: u64,
    /// Extra XIDs to ignore for health (application errors 13,31,43,45,68,109 always are).
    #[arg(long, value_delimiter = ',')]
    pub ignore_xids: Vec<u64>,
    /// Milliseconds a health poll waits for events (bounds health-change latency).
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// CDI kind of device names returned by Allocate; "" to return none.
    #[arg(long, default_value = "nvidia.com/gpu")]
    pub cdi_kind: String,
    /// Apply node labels and the signed report to this Node (needs a kube client).
    #[arg(long)]
    pub apply_node_labels: bool,
    /// Namespace of the hub's challenge ConfigMap (the plugin's own; default: the
    /// client's default namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often the Node's nonce and the hub's challenge request are checked, seconds.
    #[arg(long, default_value_t = 10)]
    pub publish_interval_secs: u64,
    /// This node's name (for labels and reports).
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    /// Node key file (base64 ed25519 seed), created with mode 0600 if missing.
    #[arg(long, env = "GPUFED_NODE_KEY", default_value = "/var/lib/gpufed/node.key")]
    pub node_key: PathBuf,
    /// Directory of the plugin's node state: the GPUs waiting for a reset are kept there
    /// (`reset-waits.json`) across plugin restarts. Default: the node key's directory (a
    /// hostPath in the chart); "" keeps them in memory only.
    #[arg(long, env = "GPUFED_STATE_DIR")]
    pub state_dir: Option<String>,
    /// A one-shot command instead of serving kubelet.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-shot commands (without one the plugin serves kubelet until stopped).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the discovered inventory and its node labels as JSON, then exit.
    Inventory,
    /// Print a signed inventory report answering NONCE as JSON, then exit.
    Report {
        /// The hub's nonce.
        #[arg(long)]
        nonce: String,
    },
}

impl Cli {
    /// The health state machine's tuning: `--probation-secs`, `--ignore-xids` on top of
    /// the application XIDs that are always ignored, and the reset-wait file in
    /// `--state-dir`.
    pub fn health_policy(&self) -> HealthPolicy {
        let mut policy = HealthPolicy {
            probation: Duration::from_secs(self.probation_secs),
            reset_file: self.state_dir().map(|d| d.join(crate::resetfile::FILE_NAME)),
            ..HealthPolicy::default()
        };
        policy.ignored_xids.extend(self.ignore_xids.iter().copied());
        policy
    }

    /// `--state-dir`, the node key's directory by default (the chart mounts it from the
    /// host already, so the file outlives the pod); `None` when "".
    pub fn state_dir(&self) -> Option<PathBuf> {
        match self.state_dir.as_deref() {
            Some("") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => Some(
                self.node_key
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), PathBuf::from),
            ),
        }
    }

    /// The kubelet side: plugin directory, socket name, resource name, and the
    /// PodResources socket (`None` when `--pod-resources-socket ""`).
    pub fn kubelet_config(&self) -> KubeletConfig {
        let mut kubelet = KubeletConfig::new(&self.plugin_dir, &self.resource_name);
        kubelet.socket_name = self.socket_name.clone();
        kubelet.pod_resources_socket =
            Some(PathBuf::from(&self.pod_resources_socket)).filter(|p| !p.as_os_str().is_empty());
        kubelet
    }

    /// How Allocate answers: `--cdi-kind`, `None` when "".
    pub fn allocate_config(&self) -> AllocateConfig {
        AllocateConfig {
            cdi_kind: Some(self.cdi_kind.clone()).filter(|k| !k.is_empty()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // The process environment could set env-backed flags (NODE_NAME, POD_NAMESPACE...);
    // only flags without one, or given explicitly, are asserted below.
    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("gpufed-device-plugin").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_kubelets_standard_paths() {
        let cli = parse(&["--plugin-dir", DEFAULT_PLUGIN_DIR]);
        let kubelet = cli.kubelet_config();
        assert_eq!(kubelet.plugin_dir, PathBuf::from(DEFAULT_PLUGIN_DIR));
        assert_eq!(kubelet.socket_name, "gpufed-gpu.sock");
        assert_eq!(
            kubelet.pod_resources_socket,
            Some(PathBuf::from(DEFAULT_POD_RESOURCES_SOCKET))
        );
        let policy = cli.health_policy();
        assert_eq!(
            policy,
            HealthPolicy {
                reset_file: policy.reset_file.clone(),
                ..HealthPolicy::default()
            }
        );
        assert_eq!(cli.allocate_config(), AllocateConfig::default());
        assert!(cli.command.is_none());
    }

    #[test]
    fn empty_values_disable_pod_resources_and_cdi() {
        let cli = parse(&["--pod-resources-socket=", "--cdi-kind="]);
        assert_eq!(cli.kubelet_config().pod_resources_socket, None);
        assert_eq!(cli.allocate_config().cdi_kind, None);
    }

    #[test]
    fn flags_reach_the_settings() {
        let cli = parse(&[
            "--plugin-dir=/var/lib/k0s/kubelet/device-plugins",
            "--pod-resources-socket=/var/lib/k0s/kubelet/pod-resources/kubelet.sock",
            "--socket-name=x.sock",
            "--resource-name=example.com/gpu",
            "--probation-secs=7",
            "--ignore-xids=79,48",
        ]);
        let kubelet = cli.kubelet_config();
        assert_eq!(
            kubelet.plugin_dir,
            PathBuf::from("/var/lib/k0s/kubelet/device-plugins")
        );
        assert_eq!(kubelet.socket_name, "x.sock");
        assert_eq!(kubelet.resource_name, "example.com/gpu");
        assert_eq!(
            kubelet.pod_resources_socket,
            Some(PathBuf::from("/var/lib/k0s/kubelet/pod-resources/kubelet.sock"))
        );
        let policy = cli.health_policy();
        assert_eq!(policy.probation, Duration::from_secs(7));
        assert!(policy.ignored_xids.contains(&79) && policy.ignored_xids.contains(&48));
        // The application XIDs stay ignored next to the extra ones.
        assert!(
            HealthPolicy::default()
                .ignored_xids
                .is_subset(&policy.ignored_xids)
        );
    }

    #[test]
    fn unknown_flags_and_bad_numbers_are_refused() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("gpufed-device-plugin").chain(args.iter().copied()))
        };
        assert!(parse(&["--kubelet-root=/x"]).is_err());
        assert!(parse(&["--ignore-xids=79,x"]).is_err());
        assert!(parse(&["--probation-secs=-1"]).is_err());
        // 0 would clear every fault in the poll that saw it (kubelet would never see it).
        assert!(parse(&["--probation-secs=0"]).is_err());
        assert!(parse(&["--probation-secs=1"]).is_ok());
    }

    /// The reset-wait file lives next to the node key unless told otherwise: the chart
    /// mounts that directory from the host, so the file survives the pod.
    #[test]
    fn the_reset_wait_file_defaults_to_the_node_key_directory() {
        let file = |args: &[&str]| parse(args).health_policy().reset_file;
        assert_eq!(
            file(&["--node-key=/srv/gpufed/node.key", "--state-dir=/var/lib/x"]),
            Some(PathBuf::from("/var/lib/x/reset-waits.json"))
        );
        if std::env::var_os("GPUFED_STATE_DIR").is_none() {
            assert_eq!(
                file(&["--node-key=/srv/gpufed/node.key"]),
                Some(PathBuf::from("/srv/gpufed/reset-waits.json"))
            );
        }
        assert_eq!(file(&["--state-dir="]), None);
    }

    #[test]
    fn report_takes_a_nonce() {
        let cli = parse(&["report", "--nonce", "abc"]);
        assert!(matches!(cli.command, Some(Command::Report { ref nonce }) if nonce == "abc"));
    }
}
