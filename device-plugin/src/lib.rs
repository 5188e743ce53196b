//! gpufed's kubelet device plugin.
//!
//! Layers, from pure to I/O:
//! - [`inventory`], [`health`], [`topology`], [`ledger`], [`labels`], [`report`]: pure
//!   logic, no tonic, no kube, time passed in.
//! - [`source`] and [`nvml`]: where GPUs and faults come from (`--simulate` or NVML);
//!   [`discovery`] is the pure part of NVML discovery, [`readings`] of its health reads
//!   (ECC counts, lost GPUs, reset evidence), [`events`] of telling an event's GPU.
//! - [`challenge`], [`executor`] and [`cuda`]: the node's side of the compute challenge
//!   (CPU reference for `--simulate`, CUDA on real GPUs, a CPU self-check before answering),
//!   within the container's memory ([`memory`]).
//! - [`resetfile`]: the GPUs waiting for a reset, kept on the node across plugin restarts.
//! - [`service`]: the plugin state and the tonic `DevicePlugin` service on top of it.
//! - [`kubelet`]: sockets, registration with kubelet, re-registration.
//! - [`node`]: node labels and the signed report on the Node object (kube client).
//! - [`daemon`]: all of it as one task (the binary's `main` and the e2e node simulator).
//! - [`cli`]: the binary's flags and the settings they stand for (parsed by tests too).
//! - [`testing`]: a fake kubelet, for our tests and the e2e node simulator.
#![forbid(unsafe_code)]

pub mod challenge;
pub mod cli;
pub mod cuda;
pub mod daemon;
pub mod discovery;
pub mod events;
pub mod executor;
pub mod health;
pub mod inventory;
pub mod kubelet;
pub mod labels;
pub mod ledger;
pub mod memory;
pub mod node;
pub mod nvml;
pub mod readings;
pub mod report;
pub mod resetfile;
pub mod service;
pub mod source;
pub mod testing;
pub mod topology;
pub mod uds;

/// Code generated from `proto/deviceplugin_v1beta1.proto` by tonic-prost-build (in
/// OUT_DIR). Generated items carry the proto comments only, so `missing_docs` is allowed
/// for this module alone. It contains no `unsafe` (the crate-wide forbid applies).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("v1beta1");

    /// The PodResources subset (`proto/podresources_v1.proto`), generated likewise.
    #[allow(missing_docs, clippy::all)]
    pub mod podresources {
        tonic::include_proto!("v1");
    }
}

/// The device-plugin API version this plugin speaks.
pub const API_VERSION: &str = "v1beta1";
/// Default extended resource name.
pub const DEFAULT_RESOURCE_NAME: &str = "gpufed.io/gpu";
/// Default kubelet device-plugin directory.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// kubelet's registration socket, inside the plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// Default kubelet PodResources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
