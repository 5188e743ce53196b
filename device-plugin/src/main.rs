//! `gpufed-device-plugin`: the DaemonSet binary. Thin: parses flags, builds the pieces from
//! the library, runs them until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gpufed_device_plugin::daemon::Daemon;
use gpufed_device_plugin::health::HealthPolicy;
use gpufed_device_plugin::kubelet::KubeletConfig;
use gpufed_device_plugin::node::{self, Publisher};
use gpufed_device_plugin::nvml::NvmlSource;
use gpufed_device_plugin::service::AllocateConfig;
use gpufed_device_plugin::source::{GpuSource, SimulatedSource};
use gpufed_device_plugin::{
    DEFAULT_PLUGIN_DIR, DEFAULT_POD_RESOURCES_SOCKET, DEFAULT_RESOURCE_NAME, labels, report,
};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "gpufed-device-plugin",
    version,
    about = "gpufed kubelet device plugin for NVIDIA GPUs"
)]
struct Cli {
    /// Serve the inventory declared in this YAML/JSON file instead of NVML (test nodes;
    /// everything published is marked simulated).
    #[arg(long, env = "GPUFED_SIMULATE")]
    simulate: Option<PathBuf>,
    /// Extended resource name to advertise.
    #[arg(long, env = "GPUFED_RESOURCE_NAME", default_value = DEFAULT_RESOURCE_NAME)]
    resource_name: String,
    /// kubelet device-plugin directory (holds kubelet.sock).
    #[arg(long, env = "GPUFED_PLUGIN_DIR", default_value = DEFAULT_PLUGIN_DIR)]
    plugin_dir: PathBuf,
    /// Our socket's file name inside the plugin directory.
    #[arg(long, default_value = "gpufed-gpu.sock")]
    socket_name: String,
    /// kubelet PodResources socket (frees GPUs of finished pods); "" to disable.
    #[arg(long, default_value = DEFAULT_POD_RESOURCES_SOCKET)]
    pod_resources_socket: String,
    /// Seconds without a critical fault before an unhealthy GPU is healthy again.
    #[arg(long, default_value_t = 300)]
    probation_secs: u64,
    /// Extra XIDs to ignore for health (application errors 13,31,43,45,68,109 always are).
    #[arg(long, value_delimiter = ',')]
    ignore_xids: Vec<u64>,
    /// Milliseconds a health poll waits for events (bounds health-change latency).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// CDI kind of device names returned by Allocate; "" to return none.
    #[arg(long, default_value = "nvidia.com/gpu")]
    cdi_kind: String,
    /// Apply node labels and the signed report to this Node (needs a kube client).
    #[arg(long)]
    apply_node_labels: bool,
    /// Namespace of the hub's challenge ConfigMap (the plugin's own; default: the
    /// client's default namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// How often the Node's nonce and the hub's challenge request are checked, seconds.
    #[arg(long, default_value_t = 10)]
    publish_interval_secs: u64,
    /// This node's name (for labels and reports).
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node_name: String,
    /// Node key file (base64 ed25519 seed), created with mode 0600 if missing.
    #[arg(long, env = "GPUFED_NODE_KEY", default_value = "/var/lib/gpufed/node.key")]
    node_key: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the discovered inventory and its node labels as JSON, then exit.
    Inventory,
    /// Print a signed inventory report answering NONCE as JSON, then exit.
    Report {
        /// The hub's nonce.
        #[arg(long)]
        nonce: String,
    },
}

fn open_source(cli: &Cli) -> anyhow::Result<Box<dyn GpuSource>> {
    Ok(match &cli.simulate {
        Some(path) => Box::new(SimulatedSource::from_file(path)?),
        None => Box::new(NvmlSource::open(Duration::from_secs(10))?),
    })
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("gpufed-device-plugin: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let source = open_source(&cli)?;
    let inv = source.inventory().clone();
    match &cli.command {
        Some(Command::Inventory) => {
            let out = serde_json::json!({ "inventory": inv, "labels": labels::node_labels(&inv) });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        Some(Command::Report { nonce }) => {
            let key = report::load_or_create_key(&cli.node_key)?;
            let signed = node::signed_report(&cli.node_name, nonce, &inv, &key)?;
            println!("{}", serde_json::to_string_pretty(&signed)?);
            return Ok(());
        }
        None => {}
    }
    let mut policy = HealthPolicy {
        probation: Duration::from_secs(cli.probation_secs),
        ..HealthPolicy::default()
    };
    policy.ignored_xids.extend(cli.ignore_xids.iter().copied());
    let mut kubelet = KubeletConfig::new(&cli.plugin_dir, &cli.resource_name);
    kubelet.socket_name = cli.socket_name.clone();
    kubelet.pod_resources_socket =
        Some(PathBuf::from(&cli.pod_resources_socket)).filter(|p| !p.as_os_str().is_empty());
    let publisher = if cli.apply_node_labels {
        anyhow::ensure!(
            !cli.node_name.is_empty(),
            "--apply-node-labels needs --node-name (or NODE_NAME)"
        );
        let key = report::load_or_create_key(&cli.node_key)?;
        let client = kube::Client::try_default()
            .await
            .context("kube client for --apply-node-labels")?;
        let namespace = cli
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Some(Publisher {
            client,
            node: cli.node_name.clone(),
            namespace,
            inventory: inv,
            key,
            every: Duration::from_secs(cli.publish_interval_secs.max(1)),
            pod_resources: kubelet
                .pod_resources_socket
                .clone()
                .map(|s| (s, cli.resource_name.clone())),
        })
    } else {
        None
    };
    let daemon = Daemon {
        source,
        policy,
        allocate: AllocateConfig {
            cdi_kind: Some(cli.cdi_kind.clone()).filter(|k| !k.is_empty()),
        },
        poll: Duration::from_millis(cli.poll_ms),
        kubelet,
        publisher,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut plugin = tokio::spawn(daemon.run(stop_rx));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        // It ends by itself only on a failure (e.g. its socket cannot be created).
        r = &mut plugin => return Ok(r.context("plugin task")??),
    }
    let _ = stop_tx.send(true);
    plugin.await.context("plugin task")??;
    tracing::info!("stopped");
    Ok(())
}
