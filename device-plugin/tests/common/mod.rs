//! Starting an in-process plugin against the fake kubelet.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use gpufed_device_plugin::health::HealthPolicy;
use gpufed_device_plugin::inventory::Inventory;
use gpufed_device_plugin::kubelet::{self, KubeletConfig};
use gpufed_device_plugin::proto::{Device, Empty, ListAndWatchResponse};
use gpufed_device_plugin::service::{AllocateConfig, PluginState};
use gpufed_device_plugin::source::{FaultInjector, SimulatedSource};
use gpufed_device_plugin::testing::{FakeKubelet, PluginClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Streaming;

pub const HGX: &str = include_str!("../../testdata/hgx-h100x8.yaml");
/// A bound on waiting, not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Running {
    pub kubelet: FakeKubelet,
    pub state: PluginState,
    pub faults: FaultInjector,
    pub stop: watch::Sender<bool>,
    pub plugin: JoinHandle<Result<(), kubelet::KubeletError>>,
    pub health: std::thread::JoinHandle<()>,
    pub client: PluginClient,
    pub cfg: KubeletConfig,
}

pub fn gpu(i: usize) -> String {
    format!("GPU-sim-h100-{i}")
}

pub async fn start(dir: &Path, probation: Duration) -> Running {
    start_with(dir, probation, |_| {}).await
}

/// [`start`], with the kubelet side's settings changed by `adjust` (it gets them pointing
/// at the fake kubelet's PodResources).
pub async fn start_with(dir: &Path, probation: Duration, adjust: impl FnOnce(&mut KubeletConfig)) -> Running {
    let mut kubelet = FakeKubelet::start(dir).await.unwrap();
    let source = SimulatedSource::new(Inventory::from_simulate_str(HGX).unwrap());
    let faults = source.injector();
    let policy = HealthPolicy {
        probation,
        ..HealthPolicy::default()
    };
    let state = PluginState::new(source_inventory(&source), policy, AllocateConfig::default());
    let (stop, stop_rx) = watch::channel(false);
    let health = state.spawn_health_loop(Box::new(source), Duration::from_millis(50), stop_rx.clone());
    let mut cfg = KubeletConfig::new(dir, "gpufed.io/gpu");
    cfg.pod_resources_socket = Some(kubelet.pod_resources_socket());
    cfg.watch_interval = Duration::from_millis(50);
    adjust(&mut cfg);
    let plugin = tokio::spawn(kubelet::run(cfg.clone(), state.clone(), stop_rx));
    let reg = kubelet.next_registration(PATIENCE).await.unwrap();
    let client = kubelet.plugin_client(&reg).await.unwrap();
    Running {
        kubelet,
        state,
        faults,
        stop,
        plugin,
        health,
        client,
        cfg,
    }
}

fn source_inventory(s: &SimulatedSource) -> Inventory {
    use gpufed_device_plugin::source::GpuSource;
    s.inventory().clone()
}

pub async fn watch(client: &mut PluginClient) -> Streaming<ListAndWatchResponse> {
    client.client.list_and_watch(Empty {}).await.unwrap().into_inner()
}

/// Next ListAndWatch message, bounded by [`PATIENCE`].
pub async fn next(stream: &mut Streaming<ListAndWatchResponse>) -> Vec<Device> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .devices
}

pub fn health_of(devices: &[Device], id: &str) -> String {
    devices
        .iter()
        .find(|d| d.id == id)
        .map(|d| d.health.clone())
        .unwrap_or_default()
}

pub async fn shutdown(r: Running) {
    r.stop.send(true).unwrap();
    r.plugin.await.unwrap().unwrap();
    r.health.join().unwrap();
    r.kubelet.stop().await;
}

/// Stops the plugin (as its process would end) and starts a fresh one — new state, empty
/// ledger — against the same kubelet, which keeps its PodResources; waits until it has
/// registered and returns how long that took.
pub async fn restart_plugin(r: &mut Running) -> Duration {
    r.stop.send(true).unwrap();
    (&mut r.plugin).await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let source = SimulatedSource::new(Inventory::from_simulate_str(HGX).unwrap());
    r.faults = source.injector();
    r.state = PluginState::new(
        source_inventory(&source),
        HealthPolicy::default(),
        AllocateConfig::default(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let old_health = std::mem::replace(
        &mut r.health,
        r.state
            .spawn_health_loop(Box::new(source), Duration::from_millis(50), stop_rx.clone()),
    );
    old_health.join().unwrap();
    r.stop = stop;
    r.plugin = tokio::spawn(kubelet::run(r.cfg.clone(), r.state.clone(), stop_rx));
    let reg = r.kubelet.next_registration(PATIENCE).await.unwrap();
    r.client = r.kubelet.plugin_client(&reg).await.unwrap();
    started.elapsed()
}
