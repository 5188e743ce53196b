//! The kubelet side: serve the plugin on a Unix socket in the device-plugin directory,
//! register with `kubelet.sock`, and start over whenever kubelet restarts (its socket is
//! recreated, or our socket is removed, as kubelet does at start-up). The socket file is
//! removed on shutdown.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gpufed_trust::allocations::{Allocations, pod_key};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

use crate::proto::device_plugin_server::DevicePluginServer;
use crate::proto::podresources::ListPodResourcesRequest;
use crate::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::registration_client::RegistrationClient;
use crate::proto::{DevicePluginOptions, RegisterRequest};
use crate::service::{DevicePluginService, PluginState, Reclaimer};
use crate::{API_VERSION, KUBELET_SOCKET, uds};

/// How long a stopping server waits for peers to close their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Where and as what to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletConfig {
    /// kubelet's device-plugin directory (holds `kubelet.sock` and our socket).
    pub plugin_dir: PathBuf,
    /// Our socket's file name in that directory.
    pub socket_name: String,
    /// Extended resource name, e.g. `gpufed.io/gpu`.
    pub resource_name: String,
    /// kubelet's PodResources socket, used to free GPUs of finished pods; `None` to skip.
    pub pod_resources_socket: Option<PathBuf>,
    /// How often to check whether kubelet restarted.
    pub watch_interval: Duration,
}

impl KubeletConfig {
    /// Defaults for `resource_name` in `plugin_dir`.
    pub fn new(plugin_dir: impl Into<PathBuf>, resource_name: &str) -> Self {
        Self {
            plugin_dir: plugin_dir.into(),
            socket_name: "gpufed-gpu.sock".to_owned(),
            resource_name: resource_name.to_owned(),
            pod_resources_socket: None,
            watch_interval: Duration::from_millis(500),
        }
    }
}

/// Failures that stop the plugin.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// Our socket cannot be created.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("device-plugin gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Identity of a file: a recreated socket differs in inode or change time.
fn file_id(path: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// Registers once with the kubelet socket of `cfg`.
pub async fn register(cfg: &KubeletConfig) -> Result<(), String> {
    let path = cfg.plugin_dir.join(KUBELET_SOCKET);
    let channel = uds::connect(&path)
        .await
        .map_err(|e| format!("connect {}: {e}", path.display()))?;
    let req = RegisterRequest {
        version: API_VERSION.to_owned(),
        endpoint: cfg.socket_name.clone(),
        resource_name: cfg.resource_name.clone(),
        options: Some(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }),
    };
    let mut client = RegistrationClient::new(channel);
    match tokio::time::timeout(Duration::from_secs(10), client.register(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("kubelet refused registration: {}", status.message())),
        Err(_) => Err("registration timed out".to_owned()),
    }
}

/// A [`Reclaimer`] that asks kubelet's PodResources which of our GPUs are still in use and
/// frees the others in the ledger; `Err` when PodResources cannot be read.
pub fn pod_resources_reclaimer(socket: PathBuf, resource_name: String, state: PluginState) -> Reclaimer {
    Arc::new(move || {
        let (socket, resource, state) = (socket.clone(), resource_name.clone(), state.clone());
        Box::pin(async move {
            // Allocations granted while PodResources is read are not in what it returns.
            let mark = state.mark();
            let used = in_use(&socket, &resource)
                .await
                .map_err(|e| format!("cannot read PodResources: {e}"))?;
            state.retain_in_use(&used, mark);
            Ok(())
        })
    })
}

/// The device IDs of `resource` that kubelet's PodResources lists as assigned.
pub async fn in_use(socket: &Path, resource: &str) -> Result<BTreeSet<String>, String> {
    Ok(allocations(socket, resource)
        .await?
        .into_values()
        .flatten()
        .collect())
}

/// The pods holding devices of `resource`, as kubelet's PodResources lists them:
/// `namespace/pod` → device IDs (GPU UUIDs; sorted, distinct, all containers together).
pub async fn allocations(socket: &Path, resource: &str) -> Result<Allocations, String> {
    let ch = uds::connect(socket)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let resp = PodResourcesListerClient::new(ch)
        .list(ListPodResourcesRequest {})
        .await
        .map_err(|s| format!("PodResources List: {}", s.message()))?;
    let mut out = Allocations::new();
    for p in resp.into_inner().pod_resources {
        let ids: BTreeSet<String> = p
            .containers
            .iter()
            .flat_map(|c| &c.devices)
            .filter(|d| d.resource_name == resource)
            .flat_map(|d| d.device_ids.iter().cloned())
            .collect();
        if !ids.is_empty() {
            out.insert(pod_key(&p.namespace, &p.name), ids.into_iter().collect());
        }
    }
    Ok(out)
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Serves and registers until `shutdown` turns true; re-serves and re-registers after
/// every kubelet restart. Removes its socket before returning.
pub async fn run(
    cfg: KubeletConfig,
    state: PluginState,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), KubeletError> {
    let sock = cfg.plugin_dir.join(&cfg.socket_name);
    let kubelet_sock = cfg.plugin_dir.join(KUBELET_SOCKET);
    let reclaimer = cfg
        .pod_resources_socket
        .clone()
        .map(|p| pod_resources_reclaimer(p, cfg.resource_name.clone(), state.clone()));
    // A restarted plugin starts with an empty ledger while containers still hold GPUs:
    // adopt what kubelet says is in use before serving a single Allocate.
    if let Some(socket) = &cfg.pod_resources_socket {
        match in_use(socket, &cfg.resource_name).await {
            Ok(used) => {
                state.adopt_in_use(&used);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read PodResources at start; kubelet alone guards GPUs held before this restart")
            }
        }
    }
    let result = loop {
        let _ = std::fs::remove_file(&sock);
        let listener = match UnixListener::bind(&sock) {
            Ok(l) => l,
            Err(source) => {
                break Err(KubeletError::Bind {
                    path: sock.display().to_string(),
                    source,
                });
            }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let svc = DevicePluginService::new(state.clone(), stop_rx.clone(), reclaimer.clone());
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(svc))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), wait_true(stop_rx)),
        );
        tracing::info!(socket = %sock.display(), "device plugin serving");

        // Register (kubelet may not be up yet: wait for it). A kubelet that starts while
        // we wait deletes every socket in the directory, ours too, and then cannot dial us
        // back: serve a new socket then, or every try fails for good.
        let mut registered = None;
        let mut rebind = false;
        while registered.is_none() && !*shutdown.borrow() {
            if !sock.exists() {
                tracing::info!(socket = %sock.display(), "our socket was removed while registering (kubelet restarted): serving a new one");
                rebind = true;
                break;
            }
            match register(&cfg).await {
                Ok(()) => {
                    tracing::info!(resource = %cfg.resource_name, kubelet = %kubelet_sock.display(), "registered with kubelet");
                    registered = file_id(&kubelet_sock);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registration failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }

        // Watch for a kubelet restart.
        let mut stop = *shutdown.borrow();
        while !stop && !rebind {
            tokio::select! {
                _ = tokio::time::sleep(cfg.watch_interval) => {
                    if file_id(&kubelet_sock) != registered || !sock.exists() {
                        tracing::info!("kubelet.sock recreated or our socket removed: kubelet restarted, re-registering");
                        break;
                    }
                }
                r = shutdown.changed() => stop = r.is_err() || *shutdown.borrow(),
            }
        }
        let _ = stop_tx.send(true);
        // Graceful: open streams end and connections get GOAWAY. A peer that never closes
        // its connection must not block shutdown or re-registration: abort after a grace.
        let served = match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}: closing them");
                server.abort();
                Ok(Ok(()))
            }
        };
        if stop {
            break match served {
                Ok(r) => r.map_err(KubeletError::from),
                Err(e) => {
                    tracing::error!(error = %e, "server task failed");
                    Ok(())
                }
            };
        }
        if let Ok(Err(e)) = served {
            tracing::warn!(error = %e, "server ended with an error; restarting it");
        }
    };
    if std::fs::remove_file(&sock).is_ok() {
        tracing::info!(socket = %sock.display(), "socket removed");
    }
    result
}
