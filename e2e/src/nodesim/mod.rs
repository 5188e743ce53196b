//! Node **simulation**: GPU nodes without kubelets and without GPUs.
//!
//! A [`NodeSimulator`] creates Node objects that advertise GPUs under a resource name
//! (default `gpufed.io/gpu`, the one our device plugin advertises) with the labels our device
//! plugin sets, keeps their Ready condition and node Lease heartbeating, and plays kubelet for
//! exactly those nodes: pods that the **real** kube-scheduler binds there become Running, and
//! then Succeeded or Failed
//! - when [`NodeSimulator::finish_pod`] is called,
//! - when the pod carries the annotation `gpufed.io/sim-exit-code: N` (any process can set it),
//! - or `gpufed.io/sim-run-seconds: N` seconds after they started (exit code 0), as soon as
//!   their node is Ready then (a down kubelet finishes nothing).
//!
//! Running pods report readiness as kubelet does (module `readiness`): ready at once without
//! a `readinessProbe`, else after `initialDelaySeconds` plus one (capped) `periodSeconds`;
//! the annotation `gpufed.io/sim-ready: "false"` makes the probe fail (see [`READY_ANNOTATION`]).
//!
//! With [`SimConfig::with_device_plugins`] each node also runs our real device plugin
//! against a fake kubelet (module `plugins`): ListAndWatch sets the GPU capacity, pods are
//! admitted through Allocate, and the plugin publishes which pod holds which GPU.
//!
//! Nodes can be made NotReady, fall silent (heartbeats stop, so the real node lifecycle
//! controller marks them Unknown), or be deleted. Every simulated node carries the label
//! `gpufed.io/simulated=true`.

mod node;
mod plugins;
mod podloop;
mod pods;
mod readiness;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};
use tokio::task::JoinHandle;

pub use node::{
    CC_LABEL, COUNT_LABEL, LEASE_NAMESPACE, MEMORY_LABEL, MODEL_LABEL, NVLINK_LABEL, SIMULATED_LABEL,
};
pub use plugins::node_inventory;
pub use pods::{EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION};
pub use readiness::{PERIOD_CAP, READY_ANNOTATION};

use crate::pools::GpuPool;
use crate::{Error, Result};

/// The GPU resource name our device plugin advertises.
pub const DEFAULT_GPU_RESOURCE: &str = "gpufed.io/gpu";

/// What to simulate in one cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster name, used in NVLink domain names.
    pub cluster: String,
    /// Node pools.
    pub pools: Vec<GpuPool>,
    /// Extended resource name for GPUs.
    pub resource_name: String,
    /// Interval of Ready-condition and Lease heartbeats.
    pub heartbeat: Duration,
    /// Each node runs our device plugin against a fake kubelet (see module `plugins`).
    pub device_plugins: bool,
}

impl SimConfig {
    /// Pools with the default resource name and a 10 s heartbeat (kubelet's lease renewal).
    pub fn new(cluster: &str, pools: Vec<GpuPool>) -> Self {
        Self {
            cluster: cluster.to_owned(),
            pools,
            resource_name: DEFAULT_GPU_RESOURCE.to_owned(),
            heartbeat: Duration::from_secs(10),
            device_plugins: false,
        }
    }

    /// Runs our device plugin on every node: GPU capacity comes from its ListAndWatch and
    /// every pod there is admitted through its Allocate.
    pub fn with_device_plugins(mut self) -> Self {
        self.device_plugins = true;
        self
    }
}

/// How a simulated node's kubelet behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Heartbeats with Ready=True and runs pods.
    Ready,
    /// Heartbeats (lease) with Ready=False; leaves pods alone.
    NotReady,
    /// No heartbeats at all (a crashed or cut-off kubelet).
    Silent,
    /// The Node object was deleted.
    Deleted,
}

struct SimNode {
    object: Node,
    ip: String,
    state: NodeState,
}

struct Shared {
    nodes: Mutex<BTreeMap<String, SimNode>>,
    started: Mutex<HashSet<String>>,
    timed: Mutex<HashSet<String>>,
    next_ip: AtomicU32,
    /// Nodes whose kubelet is back (Ready again): the pod loop re-syncs their pods.
    back: tokio::sync::mpsc::UnboundedSender<String>,
    /// Device plugins by node (with [`SimConfig::device_plugins`]).
    plugins: Mutex<BTreeMap<String, Arc<plugins::NodePlugin>>>,
    /// The GPU resource name.
    resource: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn node_state(&self, name: &str) -> Option<(NodeState, String)> {
        lock(&self.nodes).get(name).map(|n| (n.state, n.ip.clone()))
    }

    fn plugin(&self, node: &str) -> Option<Arc<plugins::NodePlugin>> {
        lock(&self.plugins).get(node).cloned()
    }

    fn pod_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        format!("10.200.{}.{}", (n / 250) % 256, n % 250 + 1)
    }
}

/// A running node simulation for one cluster (SIMULATED nodes; the scheduler is real).
pub struct NodeSimulator {
    client: Client,
    config: SimConfig,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NodeSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSimulator")
            .field("cluster", &self.config.cluster)
            .finish_non_exhaustive()
    }
}

impl NodeSimulator {
    /// Creates the simulated nodes and starts heartbeats and the pod watcher.
    pub async fn start(client: Client, config: SimConfig) -> Result<Self> {
        let (back, back_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            nodes: Mutex::new(BTreeMap::new()),
            started: Mutex::new(HashSet::new()),
            timed: Mutex::new(HashSet::new()),
            next_ip: AtomicU32::new(0),
            back,
            plugins: Mutex::new(BTreeMap::new()),
            resource: config.resource_name.clone(),
        });
        let mut index = 0u32;
        for pool in &config.pools {
            for name in pool.node_names() {
                index += 1;
                let ip = format!("10.250.{}.{}", index / 250, index % 250 + 1);
                let mut wanted = node::node_object(&config.cluster, pool, &name, &ip, &config.resource_name);
                if config.device_plugins {
                    // As a kubelet before its device plugin registers: no GPUs yet.
                    node::set_gpus(&mut wanted, &config.resource_name, 0);
                }
                let object = node::ensure_node(&client, &wanted).await?;
                if config.device_plugins {
                    let plugin = plugins::NodePlugin::start(
                        &client,
                        &config.cluster,
                        pool,
                        &name,
                        &config.resource_name,
                    )
                    .await?;
                    lock(&shared.plugins).insert(name.clone(), Arc::new(plugin));
                }
                if let Err(e) = node::renew_lease(&client, &object).await {
                    tracing::debug!(node = %name, error = %e, "first lease write failed; will retry");
                }
                lock(&shared.nodes).insert(
                    name,
                    SimNode {
                        object,
                        ip,
                        state: NodeState::Ready,
                    },
                );
            }
        }
        tracing::info!(cluster = %config.cluster, nodes = index, "SIMULATED GPU nodes created");
        let tasks = vec![
            tokio::spawn(heartbeat_loop(client.clone(), shared.clone(), config.heartbeat)),
            tokio::spawn(podloop::pod_loop(client.clone(), shared.clone(), back_rx)),
        ];
        Ok(Self {
            client,
            config,
            shared,
            tasks,
        })
    }

    /// The configuration this simulation runs with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Names of all simulated nodes (including deleted ones).
    pub fn node_names(&self) -> Vec<String> {
        lock(&self.shared.nodes).keys().cloned().collect()
    }

    /// The simulated state of a node.
    pub fn node_state(&self, name: &str) -> Option<NodeState> {
        self.shared.node_state(name).map(|(s, _)| s)
    }

    fn owned_node(&self, name: &str) -> Result<()> {
        match self.node_state(name) {
            Some(NodeState::Deleted) => Err(Error::Simulation(format!("node {name} was deleted"))),
            Some(_) => Ok(()),
            None => Err(Error::Simulation(format!(
                "node {name} is not simulated by this simulator"
            ))),
        }
    }

    fn set_state(&self, name: &str, state: NodeState) {
        if let Some(n) = lock(&self.shared.nodes).get_mut(name) {
            n.state = state;
        }
    }

    /// Reports the node Ready (`true`) or NotReady (`false`); heartbeats go on either way.
    /// Back to Ready, its kubelet re-syncs the status of its pods (e.g. their readiness, which
    /// the node lifecycle controller set False meanwhile).
    pub async fn set_node_ready(&self, name: &str, ready: bool) -> Result<()> {
        self.owned_node(name)?;
        self.set_state(
            name,
            if ready {
                NodeState::Ready
            } else {
                NodeState::NotReady
            },
        );
        node::heartbeat(&self.client, name, ready).await?;
        if ready {
            let _ = self.shared.back.send(name.to_owned());
        }
        Ok(())
    }

    /// Stops all heartbeats of a node, as if its kubelet crashed: the real node lifecycle
    /// controller marks it Unknown after its grace period (40 s by default). Its pods stay
    /// as they were (Running pods do not finish) until it is Ready again.
    pub fn silence_node(&self, name: &str) -> Result<()> {
        self.owned_node(name)?;
        self.set_state(name, NodeState::Silent);
        Ok(())
    }

    /// Deletes the Node object (the machine disappears).
    pub async fn delete_node(&self, name: &str) -> Result<()> {
        self.owned_node(name)?;
        self.set_state(name, NodeState::Deleted);
        let api: Api<Node> = Api::all(self.client.clone());
        match api.delete(name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The GPU UUIDs of a node's device plugin (empty without device plugins).
    pub fn gpu_uuids(&self, node: &str) -> Vec<String> {
        self.shared.plugin(node).map(|p| p.uuids()).unwrap_or_default()
    }

    /// Injects an XID error on one GPU of a node's device plugin; false without a plugin
    /// there. Its health machine decides (a critical XID: unhealthy, allocatable drops).
    pub fn inject_xid(&self, node: &str, uuid: &str, xid: u64) -> bool {
        self.shared.plugin(node).is_some_and(|p| p.inject_xid(uuid, xid))
    }

    /// Shows the plugin on `node` that GPU `uuid` was reset (the device plugin's `FaultKind::Reset`);
    /// false when there is no plugin there.
    pub fn inject_reset(&self, node: &str, uuid: &str, why: &str) -> bool {
        self.shared
            .plugin(node)
            .is_some_and(|p| p.inject_reset(uuid, why))
    }

    /// Finishes a pod running on a simulated node: exit code 0 → Succeeded, else Failed.
    /// Refused while the node is not Ready: its kubelet is down and could not report it.
    pub async fn finish_pod(&self, namespace: &str, name: &str, exit_code: i32) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api.get(name).await?;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        self.owned_node(&node)?;
        match self.node_state(&node) {
            Some(NodeState::Ready) => pods::mark_finished(&self.client, &pod, exit_code).await,
            state => Err(Error::Simulation(format!(
                "node {node} is {}: its kubelet cannot finish pod {namespace}/{name}",
                state.map_or_else(|| "unknown".to_owned(), |s| format!("{s:?}"))
            ))),
        }
    }
}

impl Drop for NodeSimulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn heartbeat_loop(client: Client, shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let nodes: Vec<(Node, NodeState)> = lock(&shared.nodes)
            .values()
            .map(|n| (n.object.clone(), n.state))
            .collect();
        for (object, state) in nodes {
            let name = object.metadata.name.clone().unwrap_or_default();
            let ready = match state {
                NodeState::Ready => true,
                NodeState::NotReady => false,
                NodeState::Silent | NodeState::Deleted => continue,
            };
            if let Err(e) = node::heartbeat(&client, &name, ready).await {
                tracing::warn!(node = %name, error = %e, "simulated heartbeat failed");
            }
            if let Err(e) = node::renew_lease(&client, &object).await {
                tracing::warn!(node = %name, error = %e, "simulated lease renewal failed");
            }
        }
    }
}
