//! A federation: one etcd, a hub cluster and N member clusters, each a real control plane,
//! plus optional node simulators (SIMULATED GPU nodes) in the members.

mod state;

pub use state::{ClusterInfo, RunState, STATE_FILE, reap_orphaned_runs, run_root};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::binaries::Binaries;
use crate::cluster::Cluster;
use crate::etcd::Etcd;
use crate::nodesim::{DEFAULT_GPU_RESOURCE, NodeSimulator, SimConfig};
use crate::pools::GpuPool;
use crate::process::{ProcessRecord, stop_all};
use crate::{Error, Result};

/// Name of the hub cluster.
pub const HUB: &str = "hub";

/// One member cluster (a provider) and its simulated GPU pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSpec {
    /// Cluster name, e.g. `provider-a`.
    pub name: String,
    /// Simulated GPU node pools.
    pub pools: Vec<GpuPool>,
}

/// What to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationSpec {
    /// A label for the run (used in the run directory name).
    pub name: String,
    /// Member clusters.
    pub members: Vec<MemberSpec>,
    /// Simulated GPU pools in the hub itself (usually none).
    pub hub_pools: Vec<GpuPool>,
    /// Start in-process node simulators for clusters with pools.
    pub simulate_nodes: bool,
    /// Extended resource name of the simulated GPUs.
    pub resource_name: String,
    /// Exact run directory; default `$GPUFED_RUN/<name>-<pid>-<millis>`.
    pub run_dir: Option<PathBuf>,
    /// Keep the run directory after a clean shutdown (it is always kept after a failure).
    pub keep_run_dir: bool,
    /// How long to wait for all API servers to be ready.
    pub ready_timeout_secs: u64,
    /// Every simulated node runs our device plugin against a fake kubelet
    /// ([`SimConfig::with_device_plugins`]).
    #[serde(default)]
    pub device_plugins: bool,
}

impl FederationSpec {
    /// A hub alone, with node simulation on and the default GPU resource name.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            members: Vec::new(),
            hub_pools: Vec::new(),
            simulate_nodes: true,
            resource_name: DEFAULT_GPU_RESOURCE.to_owned(),
            run_dir: None,
            keep_run_dir: std::env::var_os("GPUFED_E2E_KEEP").is_some_and(|v| v == "1"),
            ready_timeout_secs: 120,
            device_plugins: false,
        }
    }

    /// Runs our device plugin on every simulated node: GPU capacity from its ListAndWatch,
    /// pods admitted through its Allocate, allocations published on the Nodes.
    pub fn with_device_plugins(mut self) -> Self {
        self.device_plugins = true;
        self
    }

    /// Adds a member cluster.
    pub fn member(mut self, name: &str, pools: Vec<GpuPool>) -> Self {
        self.members.push(MemberSpec {
            name: name.to_owned(),
            pools,
        });
        self
    }

    /// The demo federation: a hub and three providers with differently sized GPU pools.
    pub fn demo(name: &str) -> Self {
        Self::new(name)
            .member("provider-a", vec![GpuPool::h100_nvlink("a-h100", 2)])
            .member("provider-b", vec![GpuPool::a100_40gb("b-a100", 4)])
            .member("provider-c", vec![GpuPool::rtx4090("c-rtx4090", 6)])
    }
}

/// A running federation. Dropping it stops every process it started (by PID) and removes
/// the run directory, unless a test is panicking or the spec says to keep it.
pub struct Federation {
    spec: FederationSpec,
    run_dir: PathBuf,
    etcd: Option<Etcd>,
    clusters: Vec<Cluster>,
    sims: BTreeMap<String, NodeSimulator>,
    ready_after: Duration,
    keep_logs: bool,
    stopped: bool,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("run_dir", &self.run_dir)
            .field("clusters", &self.clusters)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Starts etcd, the hub and the members, waits for every `/readyz`, then starts the node
    /// simulators.
    pub async fn start(spec: FederationSpec) -> Result<Self> {
        let t0 = Instant::now();
        let bins = Binaries::locate()?;
        reap_orphaned_runs(&run_root());
        let run_dir = match &spec.run_dir {
            Some(dir) => dir.clone(),
            None => {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                run_root().join(format!("{}-{}-{ms}", spec.name, std::process::id()))
            }
        };
        std::fs::create_dir_all(&run_dir).map_err(Error::io("creating", &run_dir))?;
        tracing::info!(run_dir = %run_dir.display(), "starting federation");
        let mut fed = Self {
            spec: spec.clone(),
            run_dir: run_dir.clone(),
            etcd: None,
            clusters: Vec::new(),
            sims: BTreeMap::new(),
            ready_after: Duration::ZERO,
            keep_logs: true,
            stopped: false,
        };
        let timeout = Duration::from_secs(spec.ready_timeout_secs);
        let etcd = fed
            .etcd
            .insert(Etcd::start_healthy(&bins.etcd, &run_dir.join("etcd"), timeout).await?);
        let etcd_url = etcd.url();
        let names = std::iter::once(HUB.to_owned()).chain(spec.members.iter().map(|m| m.name.clone()));
        for name in names {
            let cluster = Cluster::start(&name, &run_dir.join(&name), &bins, &etcd_url)?;
            fed.clusters.push(cluster);
        }
        fed.write_state()?;
        futures::future::try_join_all(fed.clusters.iter_mut().map(|c| c.wait_ready(timeout))).await?;
        for cluster in &mut fed.clusters {
            cluster.start_controllers(&bins)?;
        }
        fed.write_state()?;
        if spec.simulate_nodes {
            let pools = std::iter::once((HUB.to_owned(), spec.hub_pools.clone()))
                .chain(spec.members.iter().map(|m| (m.name.clone(), m.pools.clone())));
            for (name, pools) in pools.filter(|(_, p)| !p.is_empty()) {
                let client = fed
                    .cluster(&name)
                    .ok_or_else(|| Error::State(format!("no cluster {name}")))?
                    .client()
                    .await?;
                let mut config = SimConfig::new(&name, pools);
                config.resource_name.clone_from(&spec.resource_name);
                config.device_plugins = spec.device_plugins;
                fed.sims.insert(name, NodeSimulator::start(client, config).await?);
            }
        }
        fed.ready_after = t0.elapsed();
        fed.keep_logs = spec.keep_run_dir;
        fed.write_state()?;
        tracing::info!(seconds = fed.ready_after.as_secs_f64(), "federation ready");
        Ok(fed)
    }

    fn write_state(&self) -> Result<()> {
        self.state().write()
    }

    /// The run state (what `state.json` holds).
    pub fn state(&self) -> RunState {
        let me = std::process::id();
        RunState {
            owner: crate::process::record_of(me, "owner"),
            run_dir: self.run_dir.clone(),
            clusters: self
                .clusters
                .iter()
                .map(|c| ClusterInfo {
                    name: c.name().to_owned(),
                    server: c.server().to_owned(),
                    kubeconfig: c.kubeconfig().to_owned(),
                })
                .collect(),
            processes: self.processes(),
            ready_seconds: self.ready_after.as_secs_f64(),
            spec: self.spec.clone(),
        }
    }

    /// The hub cluster.
    pub fn hub(&self) -> &Cluster {
        &self.clusters[0]
    }

    /// The member clusters.
    pub fn members(&self) -> &[Cluster] {
        &self.clusters[1..]
    }

    /// Any cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name() == name)
    }

    /// Any cluster by name, mutably (e.g. to [`Cluster::stop`] it).
    pub fn cluster_mut(&mut self, name: &str) -> Option<&mut Cluster> {
        self.clusters.iter_mut().find(|c| c.name() == name)
    }

    /// The node simulator of a cluster, when it has simulated pools.
    pub fn simulator(&self, cluster: &str) -> Option<&NodeSimulator> {
        self.sims.get(cluster)
    }

    /// Time from [`Federation::start`] until everything was ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The run directory (logs, PKI, kubeconfigs, etcd data, `state.json`).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Every process of this federation.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        let mut all: Vec<ProcessRecord> = self.etcd.iter().map(|e| e.process.record().clone()).collect();
        all.extend(self.clusters.iter().flat_map(Cluster::processes));
        all
    }

    /// Compacts the federation's etcd to its current revision (watches resuming from an
    /// older resourceVersion get `410 Gone`). Returns the revision.
    pub async fn compact_etcd(&self) -> Result<i64> {
        match &self.etcd {
            Some(e) => e.compact_now().await,
            None => Err(crate::Error::State("no etcd in this federation".into())),
        }
    }

    /// Stops everything now (same as dropping it).
    pub fn down(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.sims.clear();
        let mut procs: Vec<_> = self.clusters.iter_mut().flat_map(|c| c.procs.drain(..)).collect();
        stop_all(&mut procs, Duration::from_secs(10));
        if let Some(mut etcd) = self.etcd.take() {
            etcd.process.stop(Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprint!("{}", crate::logdigest::digest(&self.run_dir));
        }
        if self.keep_logs || std::thread::panicking() {
            eprintln!(
                "gpufed-e2e: logs of this federation are kept in {}",
                self.run_dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.run_dir) {
            tracing::warn!(run_dir = %self.run_dir.display(), error = %e, "could not remove run dir");
        }
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.shutdown();
    }
}
