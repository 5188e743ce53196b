//! gpufed e2e harness: real control planes (etcd, kube-apiserver, scheduler, controller-manager) and a GPU node simulator.
//!
//! The API servers, schedulers and controller-managers started here are the real Kubernetes
//! 1.20.2 components built by `scripts/build-k8s.sh`. Only the kubelets are simulated: the
//! [`nodesim`] module is a **simulation** of GPU nodes that plays kubelet for exactly the
//! nodes it creates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gpufed_e2e::Error> {
//! use gpufed_e2e::{Federation, FederationSpec};
//! let fed = Federation::start(FederationSpec::demo("example")).await?;
//! let hub = fed.hub().client().await?;
//! # drop(hub); Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod binaries;
pub mod crds;
pub mod env;
pub mod error;
pub mod federation;
pub mod kubeconfig;
pub mod logdigest;
pub mod nodesim;
pub mod pki;
pub mod pools;
pub mod process;
pub mod tcpproxy;
pub mod validator;
pub mod wait;

mod cluster;
mod etcd;

pub use cluster::{Cluster, ClusterPorts};
pub use env::TestEnv;
pub use error::Error;
pub use federation::{Federation, FederationSpec, MemberSpec, RunState};
pub use nodesim::{NodeSimulator, SimConfig};
pub use pools::GpuPool;
pub use validator::Validator;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
