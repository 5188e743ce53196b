//! A fake kubelet, for this crate's tests and for the e2e node simulator, which plays
//! kubelet's device-plugin side with it.
//!
//! It serves the real `Registration` gRPC service on `<dir>/kubelet.sock` and kubelet's
//! `PodResources` List on `<dir>/pod-resources.sock`, records every registration, and
//! connects a real gRPC client to a registered plugin's socket. Like kubelet (1.25 and
//! later), it answers a registration only once it has reached the plugin's socket. Like
//! kubelet, it only
//! hands out device IDs it has seen healthy on ListAndWatch, and records allocations so
//! PodResources reflects them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::proto::device_plugin_client::DevicePluginClient;
use crate::proto::podresources::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use crate::proto::podresources::{
    ContainerDevices, ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use crate::proto::registration_server::{Registration, RegistrationServer};
use crate::proto::{
    AllocateRequest, AllocateResponse, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    PreferredAllocationRequest, RegisterRequest,
};
use crate::{KUBELET_SOCKET, uds};

/// Fake-kubelet failures.
#[derive(Debug, thiserror::Error)]
pub enum FakeKubeletError {
    /// A socket could not be created.
    #[error("fake kubelet cannot bind {0}: {1}")]
    Bind(String, std::io::Error),
    /// No registration arrived in time.
    #[error("no plugin registered within {0:?}")]
    NoRegistration(Duration),
    /// Connecting to the plugin failed.
    #[error("cannot connect to plugin socket {0}: {1}")]
    Connect(String, tonic::transport::Error),
}

/// (namespace, pod, container) → (resource, device IDs), as PodResources reports them.
type Assigned = Arc<Mutex<BTreeMap<(String, String, String), (String, Vec<String>)>>>;

#[derive(Clone)]
struct RegistrationSvc {
    dir: PathBuf,
    tx: mpsc::UnboundedSender<RegisterRequest>,
    log: Arc<Mutex<Vec<RegisterRequest>>>,
}

/// How long a registration waits to reach the plugin's socket.
const DIAL_BACK: Duration = Duration::from_secs(5);

#[tonic::async_trait]
impl Registration for RegistrationSvc {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        if r.version != crate::API_VERSION {
            return Err(Status::invalid_argument(format!(
                "unsupported version {}",
                r.version
            )));
        }
        // kubelet dials the plugin back before it answers: a plugin whose socket is gone
        // is not registered.
        let path = self.dir.join(&r.endpoint);
        let reached = async {
            let ch = uds::connect(&path).await.ok()?;
            DevicePluginClient::new(ch)
                .get_device_plugin_options(Empty {})
                .await
                .ok()
        };
        if tokio::time::timeout(DIAL_BACK, reached)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            return Err(Status::unavailable(format!(
                "cannot reach the device plugin at {}",
                path.display()
            )));
        }
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(r.clone());
        let _ = self.tx.send(r);
        Ok(Response::new(Empty {}))
    }
}

#[derive(Clone)]
struct PodResourcesSvc(Assigned);

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesSvc {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let pod_resources = map
            .iter()
            .map(|((namespace, pod, container), (resource, ids))| PodResources {
                name: pod.clone(),
                namespace: namespace.clone(),
                containers: vec![ContainerResources {
                    name: container.clone(),
                    devices: vec![ContainerDevices {
                        resource_name: resource.clone(),
                        device_ids: ids.clone(),
                    }],
                }],
            })
            .collect();
        Ok(Response::new(ListPodResourcesResponse { pod_resources }))
    }
}

/// A running fake kubelet.
pub struct FakeKubelet {
    dir: PathBuf,
    rx: mpsc::UnboundedReceiver<RegisterRequest>,
    tx: mpsc::UnboundedSender<RegisterRequest>,
    log: Arc<Mutex<Vec<RegisterRequest>>>,
    assigned: Assigned,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FakeKubelet {
    /// Starts serving `<dir>/kubelet.sock` and `<dir>/pod-resources.sock`.
    pub async fn start(dir: &Path) -> Result<Self, FakeKubeletError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let mut k = Self {
            dir: dir.to_owned(),
            rx,
            tx,
            log: Arc::default(),
            assigned: Arc::default(),
            stop,
            servers: Vec::new(),
        };
        k.serve()?;
        Ok(k)
    }

    fn serve(&mut self) -> Result<(), FakeKubeletError> {
        self.stop.send_replace(false);
        let reg_path = self.socket();
        let pr_path = self.pod_resources_socket();
        for p in [&reg_path, &pr_path] {
            let _ = std::fs::remove_file(p);
        }
        let bind = |p: &PathBuf| {
            UnixListener::bind(p).map_err(|e| FakeKubeletError::Bind(p.display().to_string(), e))
        };
        let (reg, pr) = (bind(&reg_path)?, bind(&pr_path)?);
        let svc = RegistrationSvc {
            dir: self.dir.clone(),
            tx: self.tx.clone(),
            log: self.log.clone(),
        };
        let mut stop = self.stop.subscribe();
        self.servers.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(svc))
                .serve_with_incoming_shutdown(UnixListenerStream::new(reg), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }));
        let svc = PodResourcesSvc(self.assigned.clone());
        let mut stop = self.stop.subscribe();
        self.servers.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(PodResourcesListerServer::new(svc))
                .serve_with_incoming_shutdown(UnixListenerStream::new(pr), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }));
        Ok(())
    }

    /// The device-plugin directory (pass it to the plugin as its plugin dir).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/kubelet.sock`.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(KUBELET_SOCKET)
    }

    /// `<dir>/pod-resources.sock` (pass it as the plugin's PodResources socket).
    pub fn pod_resources_socket(&self) -> PathBuf {
        self.dir.join("pod-resources.sock")
    }

    /// Waits for the next registration.
    pub async fn next_registration(&mut self, within: Duration) -> Result<RegisterRequest, FakeKubeletError> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(r)) => Ok(r),
            _ => Err(FakeKubeletError::NoRegistration(within)),
        }
    }

    /// Every registration so far.
    pub fn registrations(&self) -> Vec<RegisterRequest> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Simulates a kubelet restart: stops serving, deletes `kubelet.sock` (and, when
    /// `remove_plugin_sockets`, every other socket in the directory, as kubelet does at
    /// start-up), and serves a new `kubelet.sock`.
    pub async fn restart(&mut self, remove_plugin_sockets: bool) -> Result<(), FakeKubeletError> {
        self.down().await;
        self.up(remove_plugin_sockets)
    }

    /// Stops serving and deletes `kubelet.sock`, as a kubelet that died (until [`Self::up`]).
    pub async fn down(&mut self) {
        self.stop.send_replace(true);
        for s in self.servers.drain(..) {
            let _ = s.await;
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts serving again after [`Self::down`]; `remove_plugin_sockets` as in
    /// [`Self::restart`].
    pub fn up(&mut self, remove_plugin_sockets: bool) -> Result<(), FakeKubeletError> {
        if remove_plugin_sockets && let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        self.serve()
    }

    /// A gRPC client of a registered plugin (its endpoint is relative to the directory).
    pub async fn plugin_client(&self, reg: &RegisterRequest) -> Result<PluginClient, FakeKubeletError> {
        let path = self.dir.join(&reg.endpoint);
        let ch = uds::connect(&path)
            .await
            .map_err(|e| FakeKubeletError::Connect(path.display().to_string(), e))?;
        Ok(PluginClient {
            client: DevicePluginClient::new(ch),
            resource: reg.resource_name.clone(),
            assigned: self.assigned.clone(),
        })
    }

    /// Stops serving and removes the sockets.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for s in self.servers.drain(..) {
            let _ = s.await;
        }
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_file(self.pod_resources_socket());
    }
}

/// kubelet's client of one plugin: the raw gRPC client plus pod bookkeeping.
#[derive(Debug, Clone)]
pub struct PluginClient {
    /// The generated client, for any call.
    pub client: DevicePluginClient<Channel>,
    resource: String,
    assigned: Assigned,
}

impl PluginClient {
    /// Allocates `ids` to one container of pod `default/<pod>` as kubelet does; see
    /// [`PluginClient::allocate_in`].
    pub async fn allocate(
        &mut self,
        pod: &str,
        container: &str,
        ids: &[String],
    ) -> Result<AllocateResponse, Status> {
        self.allocate_in("default", pod, container, ids).await
    }

    /// Allocates `ids` to one container as kubelet does; on success PodResources lists them
    /// under `namespace`/`pod`/`container` until [`PluginClient::remove_pod_in`].
    pub async fn allocate_in(
        &mut self,
        namespace: &str,
        pod: &str,
        container: &str,
        ids: &[String],
    ) -> Result<AllocateResponse, Status> {
        let req = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: ids.to_vec(),
            }],
        };
        let resp = self.client.allocate(req).await?.into_inner();
        self.assigned.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (namespace.to_owned(), pod.to_owned(), container.to_owned()),
            (self.resource.clone(), ids.to_vec()),
        );
        Ok(resp)
    }

    /// [`PluginClient::allocate_preferred_in`] for pod `default/<pod>`.
    pub async fn allocate_preferred(
        &mut self,
        pod: &str,
        container: &str,
        count: usize,
        healthy: &[String],
    ) -> Result<(Vec<String>, AllocateResponse), Status> {
        self.allocate_preferred_in("default", pod, container, count, healthy)
            .await
    }

    /// What kubelet does for a container asking for `count` GPUs: among `healthy` (the
    /// healthy IDs last seen on ListAndWatch) minus those in use, ask the plugin's
    /// GetPreferredAllocation, then Allocate its choice. Returns the chosen IDs and the
    /// response; `RESOURCE_EXHAUSTED` when too few GPUs are free.
    pub async fn allocate_preferred_in(
        &mut self,
        namespace: &str,
        pod: &str,
        container: &str,
        count: usize,
        healthy: &[String],
    ) -> Result<(Vec<String>, AllocateResponse), Status> {
        let used = self.in_use();
        let available: Vec<String> = healthy.iter().filter(|id| !used.contains(*id)).cloned().collect();
        if available.len() < count {
            return Err(Status::resource_exhausted(format!(
                "{count} GPUs wanted, {} free",
                available.len()
            )));
        }
        let req = PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: available,
                must_include_device_i_ds: Vec::new(),
                allocation_size: i32::try_from(count).unwrap_or(i32::MAX),
            }],
        };
        let pref = self.client.get_preferred_allocation(req).await?.into_inner();
        let ids = pref
            .container_responses
            .into_iter()
            .next()
            .map(|c| c.device_i_ds)
            .unwrap_or_default();
        let resp = self.allocate_in(namespace, pod, container, &ids).await?;
        Ok((ids, resp))
    }

    /// Forgets the containers of pod `default/<pod>` (it ended).
    pub fn remove_pod(&self, pod: &str) {
        self.remove_pod_in("default", pod);
    }

    /// Forgets a pod's containers (it ended); their GPUs leave PodResources.
    pub fn remove_pod_in(&self, namespace: &str, pod: &str) {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(ns, p, _), _| ns != namespace || p != pod);
    }

    /// Whether PodResources lists pod `namespace/pod`.
    pub fn holds(&self, namespace: &str, pod: &str) -> bool {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .any(|(ns, p, _)| ns == namespace && p == pod)
    }

    /// Device IDs PodResources currently lists as in use.
    pub fn in_use(&self) -> BTreeSet<String> {
        let map = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        map.values().flat_map(|(_, ids)| ids.iter().cloned()).collect()
    }
}
