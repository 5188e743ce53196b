//! The plugin's state (inventory, health, ledger, topology) and the tonic `DevicePlugin`
//! service that exposes it (`service_grpc.rs`). The tonic layer only converts messages;
//! decisions are made by the pure modules.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::health::{Fault, FaultKind, HealthBook, HealthPolicy, Transition};
use crate::inventory::Inventory;
use crate::ledger::{AllocError, Ledger};
use crate::proto::{
    AllocateRequest, AllocateResponse, CdiDevice, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, NumaNode, PreferredAllocationRequest,
    PreferredAllocationResponse, TopologyInfo,
};
use crate::resetfile::ResetFile;
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
    /// The GPUs waiting for a reset, kept across plugin restarts.
    resets: ResetFile,
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
    /// State for an inventory; every GPU starts healthy, except those the policy's
    /// `reset_file` says still wait for a reset since before a restart of the plugin.
    pub fn new(inventory: Inventory, policy: HealthPolicy, config: AllocateConfig) -> Self {
        let mut resets = policy
            .reset_file
            .clone()
            .map_or_else(ResetFile::in_memory, ResetFile::open);
        let mut health = HealthBook::new(inventory.gpus.iter().map(|g| g.uuid.clone()), policy);
        resets.load(&mut health);
        let topology = Topology::from_inventory(&inventory);
        let core = Core {
            inventory,
            health,
            ledger: Ledger::new(),
            topology,
            resets,
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
            let waited = core.health.awaiting_reset(&f.uuid).map(str::to_owned);
            if let FaultKind::Reset(why) = &f.kind {
                match &waited {
                    Some(fault) => tracing::warn!(gpu = %f.uuid, reset = %why, cleared = %fault,
                        "GPU reset seen: the fault that needed it no longer holds the GPU; the clean probation starts"),
                    None => {
                        tracing::debug!(gpu = %f.uuid, reset = %why, "GPU reset seen; no fault was waiting for one")
                    }
                }
            } else if let FaultKind::Answering(why) = &f.kind {
                tracing::info!(gpu = %f.uuid, evidence = %why, waiting = ?waited,
                    "lost GPU answers again (a reset only for a GPU that fell off the bus)");
            } else if core.health.policy().is_critical(&f.kind) {
                tracing::debug!(gpu = %f.uuid, fault = %f.kind, "critical fault");
            } else {
                tracing::info!(gpu = %f.uuid, fault = %f.kind, "non-critical fault ignored for health");
            }
            let transition = core.health.record(f, now);
            // Already unhealthy (no transition) but now waiting for a reset: say so, or the
            // GPU staying out past its probation would be unexplained.
            if transition.is_none()
                && waited.is_none()
                && let Some(fault) = core.health.awaiting_reset(&f.uuid)
            {
                tracing::warn!(gpu = %f.uuid, cause = %fault, "unhealthy GPU now needs a reset to become healthy again");
            }
            out.extend(transition);
        }
        out.extend(core.health.tick(now));
        let Core { health, resets, .. } = &mut *core;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        resets.sync(health, unix);
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
        // Before the first read: a wait restored from the reset file ends on a count
        // found lower than the one saved with it.
        source.resume_ecc(&self.lock().health.waiting_ecc());
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

    /// The GPUs that are unhealthy now.
    pub fn unhealthy(&self) -> BTreeSet<String> {
        self.lock()
            .health
            .snapshot()
            .into_iter()
            .filter(|(_, h)| *h == crate::health::Health::Unhealthy)
            .map(|(u, _)| u)
            .collect()
    }

    /// GPUs currently allocated.
    pub fn allocated(&self) -> BTreeSet<String> {
        self.lock().ledger.held()
    }

    /// The Allocate decision: all containers or none, with their environment and CDI names.
    /// A GPU the ledger holds is refused ([`Ledger::allocate`]).
    pub fn allocate(&self, req: &AllocateRequest) -> Result<AllocateResponse, AllocError> {
        self.allocate_with(req, true)
    }

    /// Like [`PluginState::allocate`], but a GPU the ledger holds is granted all the same
    /// ([`Ledger::allocate_over`]): for when kubelet's PodResources cannot confirm the
    /// ledger's claim, and kubelet, the authority on allocation, has decided.
    pub fn allocate_unconfirmed(&self, req: &AllocateRequest) -> Result<AllocateResponse, AllocError> {
        self.allocate_with(req, false)
    }

    fn allocate_with(
        &self,
        req: &AllocateRequest,
        claims_refuse: bool,
    ) -> Result<AllocateResponse, AllocError> {
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
        let health = |id: &str| health.health(id);
        let ids = if claims_refuse {
            ledger.allocate(&containers, health)?
        } else {
            ledger.allocate_over(&containers, health)?
        };
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

#[path = "service_grpc.rs"]
mod grpc;
pub use grpc::{DevicePluginService, Reclaimer, alloc_status};
