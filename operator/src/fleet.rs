//! What the provider controller last observed in each member cluster: GPU nodes and the
//! pods that hold GPUs. The placement round and the job controller read it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

pub mod extended;
mod failing;
pub mod requests;

pub use failing::Failing;

/// Labels the gpufed device plugin (and the e2e node simulation) put on GPU nodes.
pub mod labels {
    /// GPU model, NVML product name with dashes.
    pub const MODEL: &str = "gpufed.io/gpu.model";
    /// Memory per GPU in MiB.
    pub const MEMORY_MIB: &str = "gpufed.io/gpu.memory-mib";
    /// Compute capability `major.minor`.
    pub const COMPUTE_CAPABILITY: &str = "gpufed.io/gpu.compute-capability";
    /// NVLink domain id of the node's GPUs (absent, or `none` as the device plugin writes
    /// it: PCIe only).
    pub const NVLINK_DOMAIN: &str = "gpufed.io/nvlink-domain";

    /// Whether a [`NVLINK_DOMAIN`] value names a domain: `none` (the device plugin's
    /// value for a node without NVLink, so a selector can ask for one) and an empty value
    /// do not — taken for one, every PCIe-only node would pass for NVLink and share one
    /// domain.
    pub fn is_nvlink_domain(value: &str) -> bool {
        let v = value.trim();
        !v.is_empty() && v != "none"
    }
    /// Set on nodes whose inventory is simulated; never verified.
    pub const SIMULATED: &str = "gpufed.io/simulated";
}

/// A GPU node of a member cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuNode {
    /// Node name.
    pub name: String,
    /// GPU model.
    pub model: String,
    /// Memory per GPU in MiB.
    pub memory_mib: u32,
    /// Compute capability.
    pub compute: (u8, u8),
    /// NVLink domain label, if any.
    pub nvlink_domain: Option<String>,
    /// GPUs the kubelet reports allocatable.
    pub allocatable: u32,
    /// Node Ready and schedulable.
    pub ready: bool,
    /// The node's `NoSchedule` and `NoExecute` taints: the node is offered only when the
    /// provider's workers tolerate all of them ([`gpufed_api::tolerations`]). Absent from
    /// an older agent's report: nothing to judge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<gpufed_api::tolerations::NodeTaint>,
    /// The node's labels that jobs may select on (`nodeSelector` in their pod template):
    /// the well-known ones ([`SELECTABLE_LABELS`]) and the provider's
    /// `spec.exposedNodeLabels`; no other label leaves the member.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The node's CPU and memory for pods, and what pods other than gpufed's workers
    /// request of them. Absent from an older agent's report, or when the node does not
    /// report both: the node's GPUs alone limit what it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<NodeCpuMemory>,
}

/// Most CPU a node or pod is taken to have or request, in millicores (about 4.3 million
/// cores): a member may report anything, and sums of bounded numbers never overflow.
pub const MAX_CPU_MILLIS: u64 = 1 << 32;
/// Most memory (or ephemeral storage) a node or pod is taken to have or request, in MiB
/// (4 PiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 32;

/// CPU, memory and local ephemeral storage in whole millicores and MiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CpuMemory {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Local ephemeral storage in MiB; `None` when not stated: for a request, none; for a
    /// node's allocatable (an agent older than this field, or a node without it), not a
    /// limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_mib: Option<u64>,
}

impl CpuMemory {
    /// Whether both are zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Each at most its bound ([`MAX_CPU_MILLIS`], [`MAX_MEMORY_MIB`]).
    pub fn bounded(&self) -> CpuMemory {
        CpuMemory {
            cpu_millis: self.cpu_millis.min(MAX_CPU_MILLIS),
            memory_mib: self.memory_mib.min(MAX_MEMORY_MIB),
            ephemeral_mib: self.ephemeral_mib.map(|e| e.min(MAX_MEMORY_MIB)),
        }
    }

    /// As the engine reads a request: bounded, unstated storage none.
    pub fn request(&self) -> gpufed_placement::Resources {
        self.engine(0)
    }

    /// As the engine reads a node's allocatable: bounded, unstated storage no limit.
    pub fn capacity(&self) -> gpufed_placement::Resources {
        self.engine(u64::MAX)
    }

    fn engine(&self, unstated_storage: u64) -> gpufed_placement::Resources {
        let c = self.bounded();
        gpufed_placement::Resources {
            cpu_millis: c.cpu_millis,
            memory_mib: c.memory_mib,
            ephemeral_mib: c.ephemeral_mib.unwrap_or(unstated_storage),
            extended: [0; gpufed_placement::EXTENDED_SLOTS],
        }
    }
}

/// A GPU node's CPU and memory, as its member reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeCpuMemory {
    /// The node's allocatable CPU and memory (memory rounded down to whole MiB).
    pub allocatable: CpuMemory,
    /// The summed requests of the non-terminal pods bound to the node that are not
    /// gpufed workers (memory rounded up), as kube-scheduler counts them
    /// ([`requests::pod_requests`]).
    pub requested: CpuMemory,
    /// The node's extended resources (RDMA devices, hugepages, …). Absent from an older
    /// agent's report: they limit nothing then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended: Option<NodeExtended>,
}

/// A GPU node's extended resources ([`extended`]), as its member reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeExtended {
    /// What the node has for pods (one it does not name, it has none of).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: extended::Extended,
    /// What the non-terminal pods bound there that are not gpufed workers request of
    /// them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requested: extended::Extended,
}

/// Node labels every provider exposes for jobs' node selectors: set by Kubernetes itself
/// on every node, they say nothing a provider would keep to itself.
pub const SELECTABLE_LABELS: [&str; 5] = [
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// The labels of `labels` a job may select on: [`SELECTABLE_LABELS`] and `exposed`.
pub fn selectable(labels: &BTreeMap<String, String>, exposed: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| SELECTABLE_LABELS.contains(&k.as_str()) || exposed.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl GpuNode {
    /// The node's taints that `tolerations` leave standing: why the member's scheduler
    /// would never bind a worker there (empty: none).
    pub fn untolerated<'a>(
        &'a self,
        tolerations: &[gpufed_api::tolerations::WorkerToleration],
    ) -> Vec<&'a gpufed_api::tolerations::NodeTaint> {
        gpufed_api::tolerations::untolerated(&self.taints, tolerations)
    }
}

/// A pod that holds GPUs on a member node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuPod {
    /// Node it is bound to (empty while pending).
    pub node: String,
    /// GPUs requested.
    pub gpus: u32,
    /// `uid/attempt` of the gpufed job attempt it belongs to, if any.
    pub attempt_key: Option<String>,
    /// The CPU and memory a gpufed worker (one with an `attempt_key`) requests, for the
    /// hub to count when its attempt is no longer live. Zero for other pods: theirs are
    /// in their node's [`NodeCpuMemory::requested`]. Absent from an older agent's report.
    #[serde(default, skip_serializing_if = "CpuMemory::is_zero")]
    pub requests: CpuMemory,
    /// The extended resources such a worker requests ([`extended`]), likewise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: extended::Extended,
}

/// One member cluster as last observed (also the report a pull-mode agent sends).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberView {
    /// GPU nodes matching the provider's node selector.
    pub nodes: Vec<GpuNode>,
    /// Non-terminal pods holding GPUs.
    pub pods: Vec<GpuPod>,
    /// Signed inventory report (JSON) of each GPU node that has one, by node name.
    pub reports: BTreeMap<String, String>,
    /// The challenge requests the hub last wrote to the member, by node name (read back
    /// from the member, so a new leader continues from what the nodes see).
    pub challenges: BTreeMap<String, String>,
}

/// What a reports-only probe of a member reads: its nodes' signed reports and its
/// challenge requests, none of the nodes' status and no pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReports {
    /// Signed inventory report (JSON) of each node that has one, by node name.
    pub reports: BTreeMap<String, String>,
    /// The challenge requests the member holds, by node name.
    pub challenges: BTreeMap<String, String>,
}

impl MemberView {
    /// Takes the fresher reports and requests of a reports-only probe. Only the reports of
    /// this view's GPU nodes are kept, as a whole probe keeps them; a node that dropped its
    /// report has none, as it would after a whole probe.
    pub fn merge_reports(&mut self, fresh: NodeReports) {
        let NodeReports {
            mut reports,
            challenges,
        } = fresh;
        reports.retain(|node, _| self.nodes.iter().any(|g| &g.name == node));
        self.reports = reports;
        self.challenges = challenges;
    }
}

/// The fleet as last observed, by provider name.
#[derive(Clone, Default)]
pub struct Fleet {
    views: Arc<RwLock<BTreeMap<String, MemberView>>>,
    /// When this process last probed each provider whole (nodes and pods).
    probed_at: Arc<RwLock<BTreeMap<String, Instant>>>,
    /// Providers whose last probe *by this process* failed, with the streak of failed
    /// probes ([`Failing`]). A job fails over only once this process has itself seen the
    /// provider fail for longer than the grace period, in its current leadership term: a
    /// new leader, or a process back from an outage, must not trust an old heartbeat in
    /// status (nor an old failure of its own) before probing again.
    unreachable: Arc<RwLock<BTreeMap<String, Failing>>>,
}

impl Fleet {
    /// Records a provider's latest observation.
    pub async fn update(&self, provider: &str, view: MemberView) {
        self.views.write().await.insert(provider.to_owned(), view);
        self.probed_at
            .write()
            .await
            .insert(provider.to_owned(), Instant::now());
        self.unreachable.write().await.remove(provider);
    }

    /// Records a failed probe at `now`, in leadership term `term`, of a provider probed
    /// every `cycle` seconds at most ([`Failing::cycle`]): the provider's GPUs are not
    /// offered until it answers again. The probe extends the streak of the same term, or
    /// starts a new one.
    pub async fn mark_unreachable(&self, provider: &str, term: u64, now: i64, cycle: i64) {
        self.views.write().await.remove(provider);
        let mut unreachable = self.unreachable.write().await;
        match unreachable.get_mut(provider) {
            Some(f) if f.term == term => {
                f.last = f.last.max(now);
                f.probes = f.probes.saturating_add(1);
                f.cycle = cycle;
            }
            _ => {
                unreachable.insert(
                    provider.to_owned(),
                    Failing {
                        term,
                        first: now,
                        last: now,
                        probes: 1,
                        cycle,
                    },
                );
            }
        }
    }

    /// Whether this process probed the provider whole within `within`, and the view it
    /// got is still held (no failed probe since).
    pub async fn probed_within(&self, provider: &str, within: Duration) -> bool {
        let at = self.probed_at.read().await.get(provider).copied();
        at.is_some_and(|at| at.elapsed() < within) && self.views.read().await.contains_key(provider)
    }

    /// Merges a reports-only probe into the provider's view ([`MemberView::merge_reports`])
    /// and returns the view so merged; `None` when no view is held (the next probe must be
    /// whole). Nodes and pods, and what [`Self::mark_unready`] changed, stay as they are.
    pub async fn merge_reports(&self, provider: &str, fresh: NodeReports) -> Option<MemberView> {
        let mut views = self.views.write().await;
        let view = views.get_mut(provider)?;
        view.merge_reports(fresh);
        Some(view.clone())
    }

    /// Whether this process's last probe of the provider failed.
    pub async fn probe_failed(&self, provider: &str) -> bool {
        self.unreachable.read().await.contains_key(provider)
    }

    /// [`Self::probe_failed`] without waiting (for the controller's error policy): `true`
    /// too while the record is being written.
    pub fn probe_failed_now(&self, provider: &str) -> bool {
        self.unreachable
            .try_read()
            .map_or(true, |u| u.contains_key(provider))
    }

    /// The streak of failed probes of the provider in leadership term `term`, if this
    /// process's last probe of it failed in that term (a streak of an earlier term is
    /// none: what it saw is no evidence for this term).
    pub async fn failing(&self, provider: &str, term: u64) -> Option<Failing> {
        let unreachable = self.unreachable.read().await;
        unreachable.get(provider).copied().filter(|f| f.term == term)
    }

    /// Marks nodes of a provider not ready, from an observation fresher than the last
    /// probe (a job reconcile that saw them fail), so the next placement round avoids them.
    pub async fn mark_unready(&self, provider: &str, nodes: &[String]) {
        if let Some(view) = self.views.write().await.get_mut(provider) {
            view.nodes
                .iter_mut()
                .filter(|n| nodes.contains(&n.name))
                .for_each(|n| n.ready = false);
        }
    }

    /// Forgets every provider `keep` refuses (deleted from the hub): its view would
    /// hold its nodes and pods in memory and its models among the fleet's for good.
    /// Returns the providers forgotten.
    pub async fn retain(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let mut views = self.views.write().await;
        let mut probed = self.probed_at.write().await;
        let mut unreachable = self.unreachable.write().await;
        let gone: std::collections::BTreeSet<String> = views
            .keys()
            .chain(probed.keys())
            .chain(unreachable.keys())
            .filter(|p| !keep(p))
            .cloned()
            .collect();
        for p in &gone {
            views.remove(p);
            probed.remove(p);
            unreachable.remove(p);
        }
        gone.into_iter().collect()
    }

    /// A copy of everything.
    pub async fn snapshot(&self) -> BTreeMap<String, MemberView> {
        self.views.read().await.clone()
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
