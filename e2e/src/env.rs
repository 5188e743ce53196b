//! Where the suite runs: the harness' own federation, or an existing cluster given by
//! `GPUFED_E2E_KUBECONFIG` (kind on a laptop, a real cluster).

use std::path::PathBuf;

use crate::Result;
use crate::federation::{Federation, FederationSpec};
use crate::kubeconfig::client_from_kubeconfig;
use crate::nodesim::NodeSimulator;

/// Environment variable naming an existing cluster's kubeconfig to test against.
pub const EXTERNAL_KUBECONFIG: &str = "GPUFED_E2E_KUBECONFIG";

/// The clusters a test runs against.
#[derive(Debug)]
pub enum TestEnv {
    /// A federation started by this harness (real control planes, simulated nodes).
    Local(Box<Federation>),
    /// An existing cluster that plays hub and every member; no node simulator.
    External {
        /// Its kubeconfig.
        kubeconfig: PathBuf,
    },
}

impl TestEnv {
    /// Uses the cluster in `GPUFED_E2E_KUBECONFIG` when set, else starts `spec`.
    pub async fn start(spec: FederationSpec) -> Result<Self> {
        match std::env::var_os(EXTERNAL_KUBECONFIG).filter(|v| !v.is_empty()) {
            Some(path) => Ok(Self::External {
                kubeconfig: PathBuf::from(path),
            }),
            None => Ok(Self::Local(Box::new(Federation::start(spec).await?))),
        }
    }

    /// The harness' federation, when it runs one.
    pub fn federation(&self) -> Option<&Federation> {
        match self {
            Self::Local(f) => Some(f),
            Self::External { .. } => None,
        }
    }

    /// A client for the hub.
    pub async fn hub_client(&self) -> Result<kube::Client> {
        match self {
            Self::Local(f) => f.hub().client().await,
            Self::External { kubeconfig } => client_from_kubeconfig(kubeconfig).await,
        }
    }

    /// The node simulator of `cluster`; `None` (with the reason printed) against an external
    /// cluster, where the test needing it should be skipped.
    pub fn simulator(&self, test: &str, cluster: &str) -> Option<&NodeSimulator> {
        match self {
            Self::Local(f) => f.simulator(cluster),
            Self::External { kubeconfig } => {
                eprintln!(
                    "SKIPPED {test}: needs the node simulator (SIMULATED GPU nodes), which runs only in \
                     the harness' own clusters; {EXTERNAL_KUBECONFIG}={} is set",
                    kubeconfig.display()
                );
                None
            }
        }
    }

    /// A client for a member cluster (the external cluster plays every member).
    pub async fn member_client(&self, name: &str) -> Result<kube::Client> {
        match self {
            Self::Local(f) => match f.cluster(name) {
                Some(c) => c.client().await,
                None => Err(crate::Error::State(format!("no member cluster {name}"))),
            },
            Self::External { kubeconfig } => client_from_kubeconfig(kubeconfig).await,
        }
    }
}
