//! Pools of simulated GPU nodes (a **simulation**: no GPU is involved).

use serde::{Deserialize, Serialize};

/// A set of identical simulated GPU nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuPool {
    /// Node name prefix; nodes are named `<prefix>-0`, `<prefix>-1`, ...
    pub name_prefix: String,
    /// Number of nodes.
    pub nodes: u32,
    /// GPUs per node (capacity and allocatable of the GPU resource).
    pub gpus_per_node: u32,
    /// GPU model label value, e.g. `NVIDIA-H100-80GB-HBM3`.
    pub model: String,
    /// GPU memory in MiB.
    pub memory_mib: u64,
    /// CUDA compute capability, e.g. `9.0`.
    pub compute_capability: String,
    /// Whether the GPUs of a node share an NVLink domain (one domain per node).
    pub nvlink: bool,
    /// CPU cores per node.
    pub cpu: u32,
    /// Memory per node in GiB.
    pub memory_gib: u32,
    /// Other resources each node has for pods, as another device plugin would advertise
    /// them (e.g. `rdma/ib` → `2`, `hugepages-2Mi` → `4Gi`).
    pub extended: std::collections::BTreeMap<String, String>,
}

impl GpuPool {
    /// A pool of `nodes` nodes with `gpus_per_node` GPUs of `model`.
    pub fn new(
        name_prefix: &str,
        nodes: u32,
        gpus_per_node: u32,
        model: &str,
        memory_mib: u64,
        cc: &str,
    ) -> Self {
        Self {
            name_prefix: name_prefix.to_owned(),
            nodes,
            gpus_per_node,
            model: model.to_owned(),
            memory_mib,
            compute_capability: cc.to_owned(),
            nvlink: false,
            cpu: 64,
            memory_gib: 512,
            extended: std::collections::BTreeMap::new(),
        }
    }

    /// Marks the GPUs of each node as NVLink-connected.
    pub fn with_nvlink(mut self) -> Self {
        self.nvlink = true;
        self
    }

    /// Gives each node `amount` of resource `name` beside its GPUs (e.g. RDMA devices).
    pub fn with_extended(mut self, name: &str, amount: &str) -> Self {
        self.extended.insert(name.to_owned(), amount.to_owned());
        self
    }

    /// 8 × H100 80GB HBM3 per node, NVLink.
    pub fn h100_nvlink(name_prefix: &str, nodes: u32) -> Self {
        Self::new(name_prefix, nodes, 8, "NVIDIA-H100-80GB-HBM3", 81_559, "9.0").with_nvlink()
    }

    /// 4 × A100 40GB per node, NVLink.
    pub fn a100_40gb(name_prefix: &str, nodes: u32) -> Self {
        Self::new(name_prefix, nodes, 4, "NVIDIA-A100-SXM4-40GB", 40_960, "8.0").with_nvlink()
    }

    /// 1 × GeForce RTX 4090 24GB per node, no NVLink.
    pub fn rtx4090(name_prefix: &str, nodes: u32) -> Self {
        let mut pool = Self::new(name_prefix, nodes, 1, "NVIDIA-GeForce-RTX-4090", 24_564, "8.9");
        pool.cpu = 16;
        pool.memory_gib = 64;
        pool
    }

    /// Names of the nodes of this pool.
    pub fn node_names(&self) -> Vec<String> {
        (0..self.nodes)
            .map(|i| format!("{}-{i}", self.name_prefix))
            .collect()
    }

    /// Total GPUs in this pool.
    pub fn total_gpus(&self) -> u32 {
        self.nodes * self.gpus_per_node
    }
}
