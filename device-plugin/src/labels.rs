//! Node labels in the style of GPU feature discovery, computed from an inventory (pure).

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::Inventory;

/// Label key prefix.
pub const PREFIX: &str = "gpufed.io/";
/// `gpufed.io/gpu.model`: NVML product name, spaces as dashes (`NVIDIA-H100-80GB-HBM3`),
/// or `mixed` when the node has several models.
pub const MODEL: &str = "gpufed.io/gpu.model";
/// `gpufed.io/gpu.memory-mib`: memory of the smallest GPU, MiB.
pub const MEMORY_MIB: &str = "gpufed.io/gpu.memory-mib";
/// `gpufed.io/gpu.compute-capability`: lowest compute capability, `MAJOR.MINOR`.
pub const COMPUTE_CAPABILITY: &str = "gpufed.io/gpu.compute-capability";
/// `gpufed.io/gpu.count`: number of GPUs.
pub const COUNT: &str = "gpufed.io/gpu.count";
/// `gpufed.io/gpu.driver-version`: NVIDIA driver version.
pub const DRIVER_VERSION: &str = "gpufed.io/gpu.driver-version";
/// `gpufed.io/gpu.cuda-version`: CUDA driver API version.
pub const CUDA_VERSION: &str = "gpufed.io/gpu.cuda-version";
/// `gpufed.io/nvlink-domain`: `nvl<N>-<id>` where N is the size of the node's largest
/// NVLink-connected group and id a stable hash of its UUIDs; `none` without NVLink.
pub const NVLINK_DOMAIN: &str = "gpufed.io/nvlink-domain";
/// `gpufed.io/simulated`: `true` for a `--simulate` node (never counts as verified).
pub const SIMULATED: &str = "gpufed.io/simulated";

/// Labels for a node with this inventory. A node without GPUs gets only `gpu.count=0`
/// (and `simulated`). Every value is a valid Kubernetes label value.
pub fn node_labels(inv: &Inventory) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(COUNT.to_owned(), inv.gpus.len().to_string());
    if inv.simulated {
        l.insert(SIMULATED.to_owned(), "true".to_owned());
    }
    if inv.gpus.is_empty() {
        return l;
    }
    let models: BTreeSet<&str> = inv.gpus.iter().map(|g| g.name.as_str()).collect();
    let model = match models.iter().next() {
        Some(m) if models.len() == 1 => label_value(m),
        _ => "mixed".to_owned(),
    };
    l.insert(MODEL.to_owned(), model);
    if let Some(m) = inv.gpus.iter().map(|g| g.memory_mib).min() {
        l.insert(MEMORY_MIB.to_owned(), m.to_string());
    }
    if let Some(cc) = inv.gpus.iter().map(|g| g.compute_capability).min() {
        l.insert(COMPUTE_CAPABILITY.to_owned(), cc.to_string());
    }
    if !inv.driver_version.is_empty() {
        l.insert(DRIVER_VERSION.to_owned(), label_value(&inv.driver_version));
    }
    if !inv.cuda_version.is_empty() {
        l.insert(CUDA_VERSION.to_owned(), label_value(&inv.cuda_version));
    }
    l.insert(NVLINK_DOMAIN.to_owned(), nvlink_domain(inv));
    l
}

/// Largest NVLink-connected group of GPUs (UUIDs sorted); empty without NVLink.
pub fn largest_nvlink_group(inv: &Inventory) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut best: Vec<String> = Vec::new();
    for g in &inv.gpus {
        if seen.contains(&g.uuid) || g.nvlink_peers.is_empty() {
            continue;
        }
        let mut group = Vec::new();
        let mut stack = vec![g.uuid.clone()];
        while let Some(u) = stack.pop() {
            if !seen.insert(u.clone()) {
                continue;
            }
            if let Some(gg) = inv.gpu(&u) {
                stack.extend(gg.nvlink_peers.iter().cloned());
            }
            group.push(u);
        }
        group.sort();
        if group.len() > best.len() {
            best = group;
        }
    }
    best
}

fn nvlink_domain(inv: &Inventory) -> String {
    let group = largest_nvlink_group(inv);
    if group.len() < 2 {
        return "none".to_owned();
    }
    // FNV-1a: stable across runs and platforms, no dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.join(",").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("nvl{}-{:08x}", group.len(), h & 0xffff_ffff)
}

/// Turns free text into a label value: spaces and invalid characters become `-`, at most
/// 63 characters, starting and ending with an alphanumeric character.
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::inventory::{ComputeCapability, Gpu};

    fn gpu(u: &str, name: &str, mib: u64, cc: (u32, u32), peers: &[&str]) -> Gpu {
        Gpu {
            uuid: u.into(),
            index: 0,
            name: name.into(),
            memory_mib: mib,
            compute_capability: ComputeCapability {
                major: cc.0,
                minor: cc.1,
            },
            pci_bus_id: String::new(),
            numa_node: None,
            nvlink_peers: peers.iter().map(|p| p.to_string()).collect(),
            serial: None,
        }
    }

    #[test]
    fn h100_node_labels() {
        let mut inv = Inventory {
            driver_version: "580.159.04".into(),
            cuda_version: "13.0".into(),
            simulated: false,
            gpus: vec![gpu("GPU-a", "NVIDIA H100 80GB HBM3", 81559, (9, 0), &[])],
        };
        let l = node_labels(&inv);
        assert_eq!(l[MODEL], "NVIDIA-H100-80GB-HBM3");
        assert_eq!(l[MEMORY_MIB], "81559");
        assert_eq!(l[COMPUTE_CAPABILITY], "9.0");
        assert_eq!(l[COUNT], "1");
        assert_eq!(l[NVLINK_DOMAIN], "none");
        assert_eq!(l[DRIVER_VERSION], "580.159.04");
        assert!(!l.contains_key(SIMULATED));
        inv.simulated = true;
        assert_eq!(node_labels(&inv)[SIMULATED], "true");
    }

    #[test]
    fn mixed_models_min_memory_and_nvlink_domain() {
        let mut inv = Inventory {
            gpus: vec![
                gpu("GPU-a", "NVIDIA A100-SXM4-80GB", 81920, (8, 0), &["GPU-b"]),
                gpu("GPU-b", "NVIDIA A100-SXM4-40GB", 40960, (8, 0), &["GPU-c"]),
                gpu("GPU-c", "NVIDIA A100-SXM4-40GB", 40960, (8, 0), &[]),
                gpu("GPU-d", "NVIDIA A100-SXM4-40GB", 40960, (8, 0), &[]),
            ],
            ..Inventory::default()
        };
        inv.normalize();
        let l = node_labels(&inv);
        assert_eq!(l[MODEL], "mixed");
        assert_eq!(l[MEMORY_MIB], "40960");
        assert_eq!(largest_nvlink_group(&inv), vec!["GPU-a", "GPU-b", "GPU-c"]);
        assert!(l[NVLINK_DOMAIN].starts_with("nvl3-"), "{}", l[NVLINK_DOMAIN]);
        assert_eq!(node_labels(&inv)[NVLINK_DOMAIN], l[NVLINK_DOMAIN], "stable");
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(
            label_value("  NVIDIA GeForce RTX 4090 (rev 1) "),
            "NVIDIA-GeForce-RTX-4090--rev-1"
        );
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("--a--"), "a");
        let empty = Inventory::default();
        assert_eq!(node_labels(&empty).len(), 1);
    }
}
