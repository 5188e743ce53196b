//! The plugin's state (inventory, health, ledger, topology) and the tonic `DevicePlugin`
//! service that exposes it. The tonic layer only converts messages; decisions are made
//! by the pure modules.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::health::{Fault, HealthBook, HealthPolicy, Transition};
use crate::inventory::Inventory;
use crate::ledger::{AllocError, Ledger};
use crate::proto::device_plugin_server::DevicePlugin;
use crate::proto::{
    AllocateRequest, AllocateResponse, CdiDevice, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, Empty, ListAndWatchResponse, NumaNode,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse, TopologyInfo,
};
use crate::source::GpuSource;
use crate::topology::{PreferredRequest, Topology};

/// How Allocate answers look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateConfig {
    /// CDI kind for device names (`nvidia.com/gpu` gives `nvidia.com/gpu=<uuid>`); `None`
    /// to return no CDI devices (a runtime without that CDI spec would fail the container).
    pub cdi_kind: Option<String>,
}

impl Default for AllocateConfig {
    fn default() -> Self {
        Self {
            cdi_kind: Some("nvidia.com/gpu".to_owned()),
        }
    }
}

struct Core {
    inventory: Inventory,
    health: HealthBook,
    ledger: Ledger,
    topology: Topology,
}

/// Shared plugin state. Cheap to clone; every clone sees the same GPUs.
#[derive(Clone)]
pub struct PluginState {
    core: Arc<Mutex<Core>>,
    devices: watch::Sender<Vec<Device>>,
    config: Arc<AllocateConfig>,
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PluginState {
    /// State for an inventory; every GPU starts healthy.
    pub fn new(inventory: Inventory, policy: HealthPolicy, config: AllocateConfig) -> Self {
        let health = HealthBook::new(inventory.gpus.iter().map(|g| g.uuid.clone()), policy);
        let topology = Topology::from_inventory(&inventory);
        let core = Core {
            inventory,
            health,
            ledger: Ledger::new(),
            topology,
        };
        let devices = watch::Sender::new(device_list(&core));
        Self {
            core: Arc::new(Mutex::new(core)),
            devices,
            config: Arc::new(config),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave Core half-updated in a way that
        // matters more than stopping service would, so keep serving.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The inventory served.
    pub fn inventory(&self) -> Inventory {
        self.lock().inventory.clone()
    }

    /// The device list as ListAndWatch sends it now.
    pub fn devices(&self) -> Vec<Device> {
        self.devices.borrow().clone()
    }

    /// A receiver that sees every new device list.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Device>> {
        self.devices.subscribe()
    }

    /// Applies faults seen at `now`, then the probation clock; logs each transition with its
    /// cause and pushes a new device list when anything changed.
    pub fn observe(&self, faults: &[Fault], now: Instant) -> Vec<Transition> {
        let mut core = self.lock();
        let mut out = Vec::new();
        for f in faults {
            if core.health.policy().is_critical(&f.kind) {
                tracing::debug!(gpu = %f.uuid, fault = %f.kind, "critical fault");
            } else {
                tracing::info!(gpu = %f.uuid, fault = %f.kind, "non-critical fault ignored for health");
            }
            out.extend(core.health.record(f, now));
        }
        out.extend(core.health.tick(now));
        for t in &out {
            tracing::warn!(gpu = %t.uuid, from = %t.from, to = %t.to, cause = %t.cause, "GPU health changed");
        }
        if !out.is_empty() {
            let list = device_list(&core);
            self.devices.send_replace(list);
        }
        out
    }

    /// Runs `source` on its own thread: each poll's faults (and the probation clock) go
    /// through [`PluginState::observe`]. `wait` bounds how long one poll blocks, hence the
    /// health-change latency. Stops when `stop` turns true.
    pub fn spawn_health_loop(
        &self,
        mut source: Box<dyn GpuSource>,
        wait: Duration,
        stop: watch::Receiver<bool>,
    ) -> std::thread::JoinHandle<()> {
        let state = self.clone();
        std::thread::spawn(move || {
            while !*stop.borrow() {
                match source.poll(wait) {
                    Ok(faults) => {
                        state.observe(&faults, Instant::now());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "GPU source failed");
                        std::thread::sleep(wait);
                    }
                }
            }
        })
    }

    /// Frees GPUs in the ledger; returns those that were held.
    pub fn release(&self, ids: &[String]) -> Vec<String> {
        self.lock().ledger.release(ids.iter().map(String::as_str))
    }

    /// Records GPUs containers already hold (read from kubelet after a restart of this
    /// plugin, whose ledger starts empty); returns those newly recorded.
    pub fn adopt_in_use(&self, in_use: &BTreeSet<String>) -> Vec<String> {
        let mut core = self.lock();
        let known: BTreeSet<String> = core.inventory.gpus.iter().map(|g| g.uuid.clone()).collect();
        let adopted = core
            .ledger
            .adopt(in_use.iter().map(String::as_str).filter(|id| known.contains(*id)));
        drop(core);
        if !adopted.is_empty() {
            tracing::info!(
                ?adopted,
                "GPUs already held by running containers recorded in the ledger"
            );
        }
        adopted
    }

    /// Keeps in the ledger only the GPUs still used by some container; returns those freed.
    pub fn retain_in_use(&self, in_use: &BTreeSet<String>, mark: crate::ledger::AllocationId) -> Vec<String> {
        let freed = self.lock().ledger.retain_in_use(in_use, mark);
        if !freed.is_empty() {
            tracing::info!(
                ?freed,
                "GPUs no longer used by any container returned to the pool"
            );
        }
        freed
    }

    /// The ledger's mark before reading which GPUs are in use ([`crate::ledger::Ledger::mark`]).
    pub fn mark(&self) -> crate::ledger::AllocationId {
        self.lock().ledger.mark()
    }

    /// GPUs currently allocated.
    pub fn allocated(&self) -> BTreeSet<String> {
        self.lock().ledger.held()
    }

    /// The Allocate decision: all containers or none, with their environment and CDI names.
    pub fn allocate(&self, req: &AllocateRequest) -> Result<AllocateResponse, AllocError> {
        let containers: Vec<Vec<String>> = req
            .container_requests
            .iter()
            .map(|c| c.devices_ids.clone())
            .collect();
        let mut core = self.lock();
        let Core {
            health,
            ledger,
            inventory,
            ..
        } = &mut *core;
        let ids = ledger.allocate(&containers, |id| health.health(id))?;
        let simulated = inventory.simulated;
        drop(core);
        let responses = containers
            .iter()
            .zip(ids)
            .map(|(uuids, aid)| {
                let joined = uuids.join(",");
                tracing::info!(allocation = aid, gpus = %joined, "allocated");
                let mut envs = std::collections::HashMap::new();
                envs.insert("NVIDIA_VISIBLE_DEVICES".to_owned(), joined.clone());
                envs.insert("GPUFED_GPU_UUIDS".to_owned(), joined);
                if simulated {
                    envs.insert("GPUFED_SIMULATED".to_owned(), "true".to_owned());
                }
                let cdi_devices = match &self.config.cdi_kind {
                    Some(kind) => uuids
                        .iter()
                        .map(|u| CdiDevice {
                            name: format!("{kind}={u}"),
                        })
                        .collect(),
                    None => Vec::new(),
                };
                ContainerAllocateResponse {
                    envs,
                    cdi_devices,
                    ..Default::default()
                }
            })
            .collect();
        Ok(AllocateResponse {
            container_responses: responses,
        })
    }

    /// The GetPreferredAllocation decision, per container; unhealthy GPUs are never preferred.
    pub fn preferred(&self, req: &PreferredAllocationRequest) -> PreferredAllocationResponse {
        let core = self.lock();
        let healthy = |id: &String| core.health.health(id) == Some(crate::health::Health::Healthy);
        let container_responses = req
            .container_requests
            .iter()
            .map(|c| {
                let r = PreferredRequest {
                    available: c
                        .available_device_i_ds
                        .iter()
                        .filter(|i| healthy(i))
                        .cloned()
                        .collect(),
                    must_include: c.must_include_device_i_ds.clone(),
                    size: usize::try_from(c.allocation_size).unwrap_or(0),
                };
                ContainerPreferredAllocationResponse {
                    device_i_ds: core.topology.preferred(&r),
                }
            })
            .collect();
        PreferredAllocationResponse { container_responses }
    }
}

fn device_list(core: &Core) -> Vec<Device> {
    core.inventory
        .gpus
        .iter()
        .map(|g| Device {
            id: g.uuid.clone(),
            health: core
                .health
                .health(&g.uuid)
                .map_or("Unhealthy", |h| h.as_api_str())
                .to_owned(),
            topology: g.numa_node.map(|n| TopologyInfo {
                nodes: vec![NumaNode { id: n }],
            }),
        })
        .collect()
}

/// Maps a refusal to a gRPC status kubelet shows in the pod's events.
pub fn alloc_status(e: &AllocError) -> Status {
    match e {
        AllocError::Unknown(_) | AllocError::Empty => Status::invalid_argument(e.to_string()),
        AllocError::Unhealthy(_) => Status::failed_precondition(e.to_string()),
        AllocError::Busy { .. } => Status::resource_exhausted(e.to_string()),
    }
}

/// Called when an Allocate conflicts with the ledger: refreshes which GPUs are really in
/// use (from kubelet's PodResources) so GPUs of finished pods are freed before refusing.
pub type Reclaimer = Arc<dyn Fn() -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// The tonic `DevicePlugin` service.
#[derive(Clone)]
pub struct DevicePluginService {
    state: PluginState,
    shutdown: watch::Receiver<bool>,
    reclaimer: Option<Reclaimer>,
}

impl DevicePluginService {
    /// Serves `state`; open ListAndWatch streams end when `shutdown` turns true.
    pub fn new(state: PluginState, shutdown: watch::Receiver<bool>, reclaimer: Option<Reclaimer>) -> Self {
        Self {
            state,
            shutdown,
            reclaimer,
        }
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut stop = self.shutdown.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let stream = WatchStream::new(self.state.subscribe())
            .map(|devices| Ok(ListAndWatchResponse { devices }))
            .take_until(Box::pin(stopped));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Ok(Response::new(self.state.preferred(req.get_ref())))
    }

    async fn allocate(&self, req: Request<AllocateRequest>) -> Result<Response<AllocateResponse>, Status> {
        match self.state.allocate(req.get_ref()) {
            Ok(r) => Ok(Response::new(r)),
            Err(AllocError::Busy { .. }) if self.reclaimer.is_some() => {
                if let Some(reclaim) = &self.reclaimer {
                    reclaim().await;
                }
                self.state
                    .allocate(req.get_ref())
                    .map(Response::new)
                    .map_err(|e| {
                        tracing::warn!(error = %e, "Allocate refused");
                        alloc_status(&e)
                    })
            }
            Err(e) => {
                tracing::warn!(error = %e, "Allocate refused");
                Err(alloc_status(&e))
            }
        }
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
