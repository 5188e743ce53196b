//! The device-plugin side of the **simulated** kubelet. With
//! [`super::SimConfig::with_device_plugins`], every simulated node runs our real device
//! plugin — the library's [`Daemon`], exactly what the DaemonSet's `main` runs, in
//! `--simulate` mode — against a fake kubelet (real gRPC on Unix sockets):
//!
//! - the plugin registers with the fake kubelet, whose ListAndWatch sets the Node's GPU
//!   capacity (all devices) and allocatable (the healthy ones), as kubelet does;
//! - a pod bound to the node is admitted only through GetPreferredAllocation + Allocate
//!   (too few free GPUs fail it with kubelet's `UnexpectedAdmissionError`);
//! - its GPUs leave kubelet's PodResources when it ends, and the plugin's own publisher
//!   writes which pod holds which GPU onto the Node — what the hub reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gpufed_device_plugin::daemon::Daemon;
use gpufed_device_plugin::health::{Fault, FaultKind, HealthPolicy};
use gpufed_device_plugin::inventory::{Gpu, Inventory};
use gpufed_device_plugin::kubelet::KubeletConfig;
use gpufed_device_plugin::node::Publisher;
use gpufed_device_plugin::proto::Empty;
use gpufed_device_plugin::service::AllocateConfig;
use gpufed_device_plugin::source::{FaultInjector, SimulatedSource};
use gpufed_device_plugin::testing::{FakeKubelet, PluginClient};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pools::GpuPool;
use crate::{Error, Result};

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

fn sim(what: impl std::fmt::Display) -> Error {
    Error::Simulation(what.to_string())
}

/// The simulated GPUs of one node: UUIDs `GPU-<cluster>-<node>-<i>` (a hash when that would
/// be long), two NUMA nodes, all NVLink peers when the pool has NVLink.
pub fn node_inventory(cluster: &str, node: &str, pool: &GpuPool) -> Inventory {
    let n = pool.gpus_per_node;
    let base = format!("GPU-{cluster}-{node}");
    let base = if base.len() <= 56 {
        base
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (cluster, node).hash(&mut h);
        format!("GPU-{:016x}", h.finish())
    };
    let uuids: Vec<String> = (0..n).map(|i| format!("{base}-{i}")).collect();
    let gpus = uuids
        .iter()
        .enumerate()
        .map(|(i, uuid)| {
            let i = u32::try_from(i).unwrap_or(0);
            Gpu {
                uuid: uuid.clone(),
                index: i,
                name: pool.model.replace('-', " "),
                memory_mib: pool.memory_mib,
                compute_capability: pool.compute_capability.parse().unwrap_or_default(),
                pci_bus_id: format!("00000000:{:02x}:00.0", 0x18 + i),
                numa_node: Some(i64::from(i >= n.div_ceil(2))),
                nvlink_peers: if pool.nvlink {
                    uuids.iter().filter(|u| *u != uuid).cloned().collect()
                } else {
                    Vec::new()
                },
                serial: None,
            }
        })
        .collect();
    Inventory {
        driver_version: String::new(),
        cuda_version: String::new(),
        simulated: true,
        gpus,
    }
}

/// One node's plugin and fake kubelet.
pub(super) struct NodePlugin {
    node: String,
    dir: PathBuf,
    uuids: Vec<String>,
    client: PluginClient,
    healthy: Arc<Mutex<Vec<String>>>,
    faults: FaultInjector,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _kubelet: FakeKubelet,
}

impl NodePlugin {
    /// Starts the fake kubelet and the plugin for `node`, and waits until the plugin has
    /// registered and its first ListAndWatch set the Node's GPU capacity.
    pub(super) async fn start(
        client: &Client,
        cluster: &str,
        pool: &GpuPool,
        node: &str,
        resource: &str,
    ) -> Result<Self> {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        // Short: a Unix socket path must fit in 108 bytes.
        let dir = std::env::temp_dir().join(format!("gfp-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| sim(format!("{}: {e}", dir.display())))?;
        let mut kubelet = FakeKubelet::start(&dir).await.map_err(sim)?;
        let inventory = node_inventory(cluster, node, pool);
        let uuids = inventory.gpus.iter().map(|g| g.uuid.clone()).collect();
        let source = SimulatedSource::new(inventory.clone());
        let faults = source.injector();
        let mut kcfg = KubeletConfig::new(&dir, resource);
        kcfg.pod_resources_socket = Some(kubelet.pod_resources_socket());
        let key = gpufed_device_plugin::report::load_or_create_key(&dir.join("node.key")).map_err(sim)?;
        let daemon = Daemon {
            source: Box::new(source),
            policy: HealthPolicy {
                probation: Duration::from_secs(5),
                ..HealthPolicy::default()
            },
            allocate: AllocateConfig::default(),
            poll: Duration::from_millis(100),
            kubelet: kcfg,
            publisher: Some(Publisher {
                client: client.clone(),
                node: node.to_owned(),
                namespace: "default".to_owned(),
                inventory,
                key,
                every: Duration::from_secs(1),
                pod_resources: Some((kubelet.pod_resources_socket(), resource.to_owned())),
            }),
        };
        let (stop, stop_rx) = watch::channel(false);
        let name = node.to_owned();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = daemon.run(stop_rx).await {
                tracing::warn!(node = %name, error = %e, "simulated node's device plugin stopped");
            }
        })];
        let reg = kubelet
            .next_registration(Duration::from_secs(20))
            .await
            .map_err(sim)?;
        let plugin = kubelet.plugin_client(&reg).await.map_err(sim)?;
        let healthy = Arc::new(Mutex::new(Vec::new()));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        tasks.push(tokio::spawn(capacity_loop(
            client.clone(),
            node.to_owned(),
            resource.to_owned(),
            plugin.clone(),
            healthy.clone(),
            first_tx,
        )));
        tokio::time::timeout(Duration::from_secs(20), first_rx)
            .await
            .map_err(|_| sim(format!("{node}: no ListAndWatch update within 20 s")))?
            .map_err(|_| sim(format!("{node}: ListAndWatch ended before its first update")))?;
        Ok(Self {
            node: node.to_owned(),
            dir,
            uuids,
            client: plugin,
            healthy,
            faults,
            stop,
            tasks,
            _kubelet: kubelet,
        })
    }

    /// The node's GPU UUIDs (its plugin's inventory).
    pub(super) fn uuids(&self) -> Vec<String> {
        self.uuids.clone()
    }

    /// Injects an XID error on one GPU (the plugin's health machine decides what follows).
    pub(super) fn inject_xid(&self, uuid: &str, xid: u64) -> bool {
        self.faults.inject(Fault {
            uuid: uuid.to_owned(),
            kind: FaultKind::Xid(xid),
        })
    }

    /// Evidence that a GPU was reset, as NVML shows it (its volatile ECC count went
    /// down, or a lost GPU answers again): ends a wait for a reset.
    pub(super) fn inject_reset(&self, uuid: &str, why: &str) -> bool {
        self.faults.inject(Fault {
            uuid: uuid.to_owned(),
            kind: FaultKind::Reset(why.to_owned()),
        })
    }

    /// kubelet's admission of a pod bound here: for each container asking for GPUs,
    /// GetPreferredAllocation among the free healthy ones, then Allocate. `Err` (nothing
    /// held) when the plugin refuses or too few are free. Admitting a pod twice is a no-op.
    pub(super) async fn admit(&self, pod: &Pod, resource: &str) -> std::result::Result<Vec<String>, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if self.client.holds(&ns, &name) {
            return Ok(Vec::new());
        }
        let healthy = self.healthy.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut client = self.client.clone();
        let mut held = Vec::new();
        for (container, count) in gpu_requests(pod, resource) {
            match client
                .allocate_preferred_in(&ns, &name, &container, count, &healthy)
                .await
            {
                Ok((ids, _)) => held.extend(ids),
                Err(status) => {
                    client.remove_pod_in(&ns, &name);
                    return Err(format!(
                        "Allocate failed due to {}, which is unexpected",
                        status.message()
                    ));
                }
            }
        }
        if !held.is_empty() {
            tracing::info!(node = %self.node, %ns, pod = %name, gpus = ?held, "simulated kubelet: GPUs allocated by the device plugin");
        }
        Ok(held)
    }

    /// The pod ended or is gone: its GPUs leave PodResources (the plugin reclaims them).
    pub(super) fn release(&self, namespace: &str, pod: &str) {
        if self.client.holds(namespace, pod) {
            self.client.remove_pod_in(namespace, pod);
            tracing::info!(node = %self.node, %namespace, %pod, "simulated kubelet: GPUs released");
        }
    }
}

impl Drop for NodePlugin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `(container, GPUs)` for each container of `pod` that asks for `resource` (extended
/// resources have limits equal to requests; limits are read first).
fn gpu_requests(pod: &Pod, resource: &str) -> Vec<(String, usize)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .filter_map(|c| {
            let r = c.resources.as_ref()?;
            let q = r
                .limits
                .as_ref()
                .and_then(|l| l.get(resource))
                .or_else(|| r.requests.as_ref()?.get(resource))?;
            let n: usize = q.0.parse().ok()?;
            (n > 0).then(|| (c.name.clone(), n))
        })
        .collect()
}

/// kubelet's ListAndWatch consumer: every update sets the Node's capacity (all devices)
/// and allocatable (healthy ones) of `resource`, and the healthy set admission uses.
async fn capacity_loop(
    client: Client,
    node: String,
    resource: String,
    plugin: PluginClient,
    healthy: Arc<Mutex<Vec<String>>>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let api: Api<Node> = Api::all(client);
    let mut first = Some(first);
    loop {
        let mut grpc = plugin.client.clone();
        match grpc.list_and_watch(Empty {}).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                while let Some(Ok(msg)) = stream.next().await {
                    let ids: Vec<String> = msg
                        .devices
                        .iter()
                        .filter(|d| d.health == "Healthy")
                        .map(|d| d.id.clone())
                        .collect();
                    let counts =
                        BTreeMap::from([("capacity", msg.devices.len()), ("allocatable", ids.len())]);
                    *healthy.lock().unwrap_or_else(|p| p.into_inner()) = ids;
                    let patch = json!({ "status": {
                        "capacity": { &resource: counts["capacity"].to_string() },
                        "allocatable": { &resource: counts["allocatable"].to_string() },
                    }});
                    // Retried as kubelet retries its node status: an update lost to an
                    // API server restart would leave the capacity stale until the next one.
                    loop {
                        match api
                            .patch_status(&node, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(%node, error = %e, "simulated kubelet: capacity update failed; retrying");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                    tracing::info!(%node, capacity = counts["capacity"], allocatable = counts["allocatable"],
                        "simulated kubelet: GPU capacity from ListAndWatch");
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                }
            }
            Err(e) => tracing::debug!(%node, error = %e, "simulated kubelet: ListAndWatch failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
