//! Input types: what every provider has, what is running, and what every job needs.
//!
//! The operator maps its CRDs onto these plain types; the simulator and the benchmark
//! build them directly. Nothing here depends on Kubernetes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::labels::AffinityTerm;
pub use crate::quantities::{EXTENDED_SLOTS, NodeResources, Resources, is_hugepages};

/// Money in integer micro-units (1 unit = 1 000 000 micros), e.g. micro-USD per GPU-hour.
pub type Micros = u64;

/// One unit of money in micros.
pub const MICROS_PER_UNIT: Micros = 1_000_000;

/// Most GPUs a single node may carry (free GPUs are tracked in a 64-bit mask).
pub const MAX_GPUS_PER_NODE: u8 = 64;

/// A CUDA compute capability, `major.minor`; ordered lexicographically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeCapability {
    /// Major version (e.g. 8 for Ampere).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl ComputeCapability {
    /// Builds `major.minor`.
    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One GPU node of a provider. All GPUs of a node share one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Node name, unique within its provider.
    pub name: String,
    /// GPU model name, as used in provider prices and job requirements.
    pub model: String,
    /// Memory per GPU in MiB.
    pub vram_mib: u32,
    /// Compute capability of the GPUs.
    pub compute: ComputeCapability,
    /// NVLink domain of the node's GPUs (unique within the provider); `None` when the
    /// GPUs are connected by PCIe only. Several nodes may share a domain (NVL72 racks).
    pub nvlink_domain: Option<u32>,
    /// Number of GPUs on the node (at most [`MAX_GPUS_PER_NODE`]).
    pub gpus: u8,
    /// Indices (`0..gpus`) of the GPUs that are free now.
    pub free: Vec<u8>,
    /// Every GPU of the node passed verification. A job with `verified_only` runs only on
    /// such nodes of verified providers: one verified card must not vouch for its
    /// provider's others.
    pub verified: bool,
    /// The node's labels that jobs may select on ([`Job::node_selector`],
    /// [`Job::node_affinity`]); only these
    /// keys are known (empty: none).
    pub labels: BTreeMap<String, String>,
    /// The node's CPU and memory for workers; `None` when not reported (then only its
    /// GPUs limit what it holds).
    pub resources: Option<NodeResources>,
}

impl Node {
    /// A node whose GPUs are all free (and verified: the provider's flag decides).
    pub fn new(
        name: impl Into<String>,
        model: impl Into<String>,
        vram_mib: u32,
        compute: ComputeCapability,
        nvlink_domain: Option<u32>,
        gpus: u8,
    ) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            vram_mib,
            compute,
            nvlink_domain,
            gpus,
            free: (0..gpus).collect(),
            verified: true,
            labels: BTreeMap::new(),
            resources: None,
        }
    }
}

/// A member cluster that sells GPU time.
#[derive(Clone, Debug, PartialEq)]
pub struct Provider {
    /// Provider id, unique in the snapshot.
    pub id: String,
    /// Region label.
    pub region: String,
    /// Reachable and heartbeating.
    pub healthy: bool,
    /// Its inventory passed verification.
    pub verified: bool,
    /// Reputation in `0.0..=1.0`.
    pub reputation: f64,
    /// Ask per GPU-hour in micros, by GPU model. A model without a price is not for sale.
    pub prices: BTreeMap<String, Micros>,
    /// GPU nodes.
    pub nodes: Vec<Node>,
    /// The namespaces (tenants) this provider takes new work from; `None`: any. Work
    /// already running on it is not affected.
    pub tenants: Option<BTreeSet<String>>,
}

/// Interconnect a job needs between its GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interconnect {
    /// Anything (PCIe is fine).
    #[default]
    Any,
    /// The GPUs of each worker must share an NVLink domain.
    NvlinkWorker,
    /// All GPUs of the whole gang must share one NVLink domain.
    NvlinkGang,
}

/// The failure domain a spread group's jobs avoid sharing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpreadDomain {
    /// One provider.
    #[default]
    Provider,
    /// One region (the providers' [`Provider::region`] label).
    Region,
}

/// A soft preference to spread the jobs of one group (e.g. the replicas of one serving
/// service) over providers or regions. The group is scoped by the job's namespace: jobs
/// of different namespaces never interact, whatever their group names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Spread {
    /// Group name within the job's namespace.
    pub group: String,
    /// The domain the group's jobs prefer not to share.
    pub across: SpreadDomain,
}

/// A queued job: a gang of `workers` workers of `gpus_per_worker` GPUs each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Job {
    /// Job id (e.g. `namespace/name`), unique in the snapshot.
    pub id: String,
    /// Namespace (the fair-share tenant).
    pub namespace: String,
    /// Higher runs first.
    pub priority: i32,
    /// Submit time in seconds; earlier runs first among equals.
    pub submit_time: u64,
    /// GPUs per worker; a worker runs on one node.
    pub gpus_per_worker: u8,
    /// Gang size.
    pub workers: u16,
    /// Acceptable GPU models; empty means any.
    pub models: Vec<String>,
    /// Minimum memory per GPU in MiB.
    pub min_vram_mib: u32,
    /// Minimum compute capability.
    pub min_compute: ComputeCapability,
    /// Interconnect requirement.
    pub interconnect: Interconnect,
    /// Price ceiling per GPU-hour in micros; `None` means no ceiling.
    pub max_price: Option<Micros>,
    /// Allowed regions; empty means any.
    pub regions: Vec<String>,
    /// Allowed providers; empty means any.
    pub providers: Vec<String>,
    /// Providers this job is kept off for now, whatever `providers` says (its last
    /// attempt there was refused for lack of a permission the provider has not granted,
    /// or did not get its gang running in time).
    pub avoid: Vec<String>,
    /// Preferred providers, most preferred first (ordered spill-over).
    pub preferred: Vec<String>,
    /// Minimum provider reputation.
    pub min_reputation: f64,
    /// Only verified providers.
    pub verified_only: bool,
    /// Labels every node of the job must carry with these values, as a pod's
    /// `nodeSelector` (empty: any node).
    pub node_selector: BTreeMap<String, String>,
    /// The pod template's required node affinity: every node of the job must satisfy
    /// one of these terms ([`crate::affinity_matches`]; empty: any node). Only the keys
    /// of [`Node::labels`] are known: a node lacks every other label.
    pub node_affinity: Vec<AffinityTerm>,
    /// At most this many workers on one node (0: no limit) — one where the template's
    /// required pod anti-affinity keeps the job's own workers on different hosts.
    pub max_workers_per_node: u16,
    /// CPU and memory each worker requests (zero: none); a node holds a worker only with
    /// that much free beside its GPUs.
    pub worker_resources: Resources,
    /// Prefer domains with the fewest jobs of this group (running or placed earlier in
    /// the round); a preference only, never a reason to stay unplaced.
    pub spread: Option<Spread>,
    /// Whether this job may evict running work of strictly lower priority when it fits
    /// nowhere (only with [`Config::preemption`](crate::Config::preemption)).
    pub preempt: bool,
}

impl Job {
    /// Total GPUs of the gang.
    pub fn total_gpus(&self) -> u32 {
        u32::from(self.gpus_per_worker) * u32::from(self.workers)
    }
}

/// One GPU: a node of a provider and the GPU index on it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuRef {
    /// Node name.
    pub node: String,
    /// GPU index on the node.
    pub gpu: u8,
}

/// Work already running (its GPUs are not in the nodes' free lists). Used for fair
/// share and as preemption candidates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunningAllocation {
    /// Job id.
    pub job: String,
    /// Namespace of the job.
    pub namespace: String,
    /// Priority of the job.
    pub priority: i32,
    /// Start time in seconds (younger allocations are evicted first).
    pub start_time: u64,
    /// Provider id.
    pub provider: String,
    /// GPUs held.
    pub gpus: Vec<GpuRef>,
    /// The job's spread group (within `namespace`), if any: it counts as a member of the
    /// group on `provider` for queued jobs of the same group.
    pub spread_group: Option<String>,
    /// Already being evicted (an earlier round chose it): its GPUs stay busy until it is
    /// gone, and no job may choose it again.
    pub evicting: bool,
    /// The disruption budget ([`Snapshot::budgets`]) this allocation counts toward as
    /// healthy: a ready replica of a service that has one. `None` (or a key without a
    /// budget): unprotected — a replica that is not ready may always be evicted, as
    /// Kubernetes' `unhealthyPodEvictionPolicy: AlwaysAllow`, so a broken replica never
    /// shields its healthy peers' budget from being met again.
    pub budget: Option<String>,
    /// CPU and memory it holds per node name (already left out of those nodes'
    /// [`NodeResources::free`]); an eviction gives them back.
    pub resources: BTreeMap<String, Resources>,
}

/// Nodes held back for a waiting gang, carried from one round to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The waiting job.
    pub job: String,
    /// Provider id.
    pub provider: String,
    /// Reserved node names.
    pub nodes: Vec<String>,
}

/// Everything the engine needs for one round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Providers.
    pub providers: Vec<Provider>,
    /// Running work.
    pub running: Vec<RunningAllocation>,
    /// Queued jobs (any order; the engine orders them).
    pub jobs: Vec<Job>,
    /// Reservations returned by the previous round.
    pub reservations: Vec<Reservation>,
    /// Fair-share weight per namespace (default 1).
    pub namespace_weights: BTreeMap<String, u32>,
    /// Disruption budgets: per key, the fewest allocations counting toward it
    /// ([`RunningAllocation::budget`], not being evicted) that must stay running.
    /// Preemption never evicts below it — unlike the kube-scheduler, which treats a
    /// PodDisruptionBudget as best effort — so a protected service keeps serving and the
    /// preemptor waits, told which budget holds it ([`Reason::Protected`](crate::Reason)).
    pub budgets: BTreeMap<String, u32>,
    /// Quotas per namespace: caps on what the namespace's work may hold at once. A job
    /// that would take its namespace past one waits ([`Explanation::Quota`](crate::Explanation)),
    /// holds no reservation and evicts nothing; the rest of the queue goes on.
    pub quotas: BTreeMap<String, Quota>,
    /// The extended resources [`Resources::extended`] counts, slot by slot (at most
    /// [`EXTENDED_SLOTS`]; the caller picks those the queue asks for). Only for naming
    /// them in explanations: the engine compares slots.
    pub extended_resources: Vec<String>,
}

/// What one namespace's work may hold at once, and what it holds now (the caller counts
/// every live attempt of the namespace, placed or running, being evicted or not: an
/// attempt holds its GPUs, and costs, until it is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most GPUs at once; `None`: no cap.
    pub gpus: Option<u32>,
    /// Most spend per hour at once (the sum of price per GPU-hour × GPUs over its live
    /// work), in micros; `None`: no cap.
    pub spend_per_hour: Option<Micros>,
    /// GPUs its live work holds now.
    pub used_gpus: u32,
    /// What its live work costs per hour now, in micros.
    pub used_spend_per_hour: Micros,
}

/// Formats micros as units with two decimals (`2000000` → `2.00`).
pub fn format_micros(m: Micros) -> String {
    let cents = m.saturating_add(5_000) / 10_000;
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_money() {
        assert_eq!(
            format_micros(Micros::MAX),
            "18446744073709.55",
            "no overflow at the top"
        );
        assert_eq!(format_micros(2_000_000), "2.00");
        assert_eq!(format_micros(1_234_567), "1.23");
        assert_eq!(format_micros(1_235_000), "1.24");
        assert_eq!(format_micros(0), "0.00");
    }

    #[test]
    fn compute_capability_orders() {
        assert!(ComputeCapability::new(8, 0) > ComputeCapability::new(7, 5));
        assert!(ComputeCapability::new(9, 0) > ComputeCapability::new(8, 9));
        assert_eq!(ComputeCapability::new(8, 6).to_string(), "8.6");
    }
}
