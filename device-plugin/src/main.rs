//! `gpufed-device-plugin`: the DaemonSet binary. Thin: parses flags (the library's
//! [`Cli`], so tests parse the chart's args with the same definition), builds the pieces
//! from the library, runs them until SIGTERM/SIGINT.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gpufed_device_plugin::cli::{Cli, Command};
use gpufed_device_plugin::daemon::Daemon;
use gpufed_device_plugin::node::{self, Publisher};
use gpufed_device_plugin::nvml::NvmlSource;
use gpufed_device_plugin::source::{GpuSource, SimulatedSource};
use gpufed_device_plugin::{labels, report};
use tokio::sync::watch;

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
    let kubelet = cli.kubelet_config();
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
        policy: cli.health_policy(),
        allocate: cli.allocate_config(),
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
