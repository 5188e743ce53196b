//! The whole plugin as one task: health loop, kubelet side, node publisher. The binary's
//! `main` only parses flags into a [`Daemon`]; the e2e node simulator runs the same thing
//! for each simulated node, so what it tests is what a provider's DaemonSet runs.

use std::time::Duration;

use tokio::sync::watch;

use crate::health::HealthPolicy;
use crate::kubelet::{self, KubeletConfig, KubeletError};
use crate::node::{self, Publisher};
use crate::service::{AllocateConfig, PluginState};
use crate::source::GpuSource;

/// Everything one plugin instance needs.
pub struct Daemon {
    /// Where GPUs and faults come from (NVML or `--simulate`).
    pub source: Box<dyn GpuSource>,
    /// Health state machine settings.
    pub policy: HealthPolicy,
    /// How Allocate answers look.
    pub allocate: AllocateConfig,
    /// How long one health poll waits for events.
    pub poll: Duration,
    /// The kubelet side.
    pub kubelet: KubeletConfig,
    /// Node labels, signed report and allocations; `None` to publish nothing.
    pub publisher: Option<Publisher>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("kubelet", &self.kubelet)
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Runs until `stop` turns true (or its sender is dropped), then shuts every part down
    /// (the socket is removed). When the kubelet side ends by itself — its socket cannot
    /// be bound — the other parts stop too and its error is returned, so the process
    /// exits and the DaemonSet restarts it rather than idling unregistered.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), KubeletError> {
        let (parts, parts_stop) = watch::channel(false);
        let follow = tokio::spawn(follow(stop, parts.clone()));
        let served = self.run_parts(parts_stop, &parts).await;
        follow.abort();
        served
    }

    async fn run_parts(
        self,
        stop: watch::Receiver<bool>,
        parts: &watch::Sender<bool>,
    ) -> Result<(), KubeletError> {
        let inv = self.source.inventory().clone();
        tracing::info!(
            gpus = inv.gpus.len(),
            simulated = inv.simulated,
            driver = %inv.driver_version,
            cuda = %inv.cuda_version,
            "inventory discovered"
        );
        for g in &inv.gpus {
            tracing::info!(uuid = %g.uuid, name = %g.name, memory_mib = g.memory_mib,
                cc = %g.compute_capability, pci = %g.pci_bus_id, nvlink_peers = g.nvlink_peers.len(), "GPU");
        }
        let state = PluginState::new(inv, self.policy, self.allocate);
        // Health: a blocking thread polls the source and feeds the state machine.
        let health = state.spawn_health_loop(
            self.source,
            self.poll.max(Duration::from_millis(10)),
            stop.clone(),
        );
        // The publisher skips unhealthy GPUs in the compute challenge: it sees this state.
        let publisher = self.publisher.map(|p| {
            let setup = node::ChallengeSetup {
                health: Some(state.clone()),
                ..node::ChallengeSetup::for_inventory(&p.inventory)
            };
            tokio::spawn(node::run_publisher_with(p, setup, stop.clone()))
        });
        let served = kubelet::run(self.kubelet, state, stop).await;
        if let Err(e) = &served {
            tracing::error!(error = %e, "kubelet side stopped; stopping the plugin");
        }
        let _ = parts.send(true);
        if let Some(p) = publisher {
            let _ = p.await;
        }
        let _ = tokio::task::spawn_blocking(move || health.join()).await;
        served
    }
}

/// Turns `parts` true once `outer` is (or its sender is gone).
async fn follow(mut outer: watch::Receiver<bool>, parts: watch::Sender<bool>) {
    while !*outer.borrow_and_update() {
        if outer.changed().await.is_err() {
            break;
        }
    }
    let _ = parts.send(true);
}
