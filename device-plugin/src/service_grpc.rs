//! The tonic `DevicePlugin` service over [`PluginState`]: it only converts messages, and
//! decides when the ledger's claim on a GPU holds against kubelet (see its `allocate`).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use super::PluginState;
use crate::ledger::AllocError;
use crate::proto::device_plugin_server::DevicePlugin;
use crate::proto::{
    AllocateRequest, AllocateResponse, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
};

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
/// `Err` (why) when that view could not be read: the ledger's claim is then unconfirmed.
pub type Reclaimer =
    Arc<dyn Fn() -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> + Send + Sync>;

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

    /// kubelet is the authority on allocation, the ledger a second line behind it: a GPU
    /// the ledger holds is refused only when kubelet's PodResources, read for this very
    /// decision, still lists it in use (or it was granted while that view was read). The
    /// ledger alone is not enough: without PodResources nothing frees the GPUs of ended
    /// pods, and kubelet calls Allocate again with the same IDs for an app container that
    /// reuses its init container's GPUs. The request does not name its pod; PodResources
    /// does not list init containers (only sidecars, whose GPUs kubelet never reuses), so
    /// that reuse is not confirmed and is granted.
    async fn allocate(&self, req: Request<AllocateRequest>) -> Result<Response<AllocateResponse>, Status> {
        let refused = |e: AllocError| {
            tracing::warn!(error = %e, "Allocate refused");
            alloc_status(&e)
        };
        let req = req.get_ref();
        let claim = match self.state.allocate(req) {
            Err(e @ AllocError::Busy { holder, .. }) if holder != 0 => e,
            other => return other.map(Response::new).map_err(refused),
        };
        let checked = match &self.reclaimer {
            Some(reclaim) => reclaim().await,
            None => Err("no PodResources socket is configured".to_owned()),
        };
        match checked {
            // Claims of ended pods are gone now; what is left is confirmed.
            Ok(()) => self.state.allocate(req).map(Response::new).map_err(refused),
            Err(why) => {
                tracing::warn!(ledger = %claim, reason = %why,
                    "the ledger's claim cannot be checked against kubelet's PodResources: granting, as kubelet decided");
                self.state
                    .allocate_unconfirmed(req)
                    .map(Response::new)
                    .map_err(refused)
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
