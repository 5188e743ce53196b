//! Turning what NVML said about each GPU at start into the node's [`Inventory`]. Pure:
//! [`crate::nvml`] asks NVML, one [`Probe`] per device index, and [`assemble`] decides.
//!
//! Why apart: one GPU NVML cannot describe (fallen off the bus, an infoROM it cannot
//! read, a driver call failing for that device alone) used to fail the whole discovery,
//! so the plugin exited and every healthy GPU of the node went unadvertised with it. Now
//! such a GPU is left out — it cannot be advertised without a UUID, a model and a memory
//! size, and one half-known would be scheduled — and logged with the call that failed,
//! and the others are served. Only when no GPU at all can be described does discovery
//! fail.

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::{Gpu, Inventory};
use crate::source::SourceError;

/// What NVML said about the device at one index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// NVML index.
    pub index: u32,
    /// Its UUID, when NVML gave that much (for the log of a GPU left out).
    pub uuid: Option<String>,
    /// Its PCI bus id, when NVML gave it: a link whose far end is this bus leads to one of
    /// this node's GPUs even when that GPU is left out, not to an NVSwitch.
    pub pci_bus_id: Option<String>,
    /// PCI bus ids at the far end of its active NVLinks.
    pub remote_buses: Vec<String>,
    /// Whether MIG mode is on (NVML's current mode; a GPU without MIG support: off).
    pub mig_enabled: bool,
    /// The GPU (peers still empty), or the NVML call that failed and its error.
    pub described: Result<Gpu, String>,
}

/// A GPU left out of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// NVML index.
    pub index: u32,
    /// Its UUID, when known.
    pub uuid: Option<String>,
    /// Why: the NVML call that failed and its error, or [`MIG_LEFT_OUT`].
    pub why: String,
}

/// Why a GPU in MIG mode is left out. The plugin hands out whole GPUs
/// (`NVIDIA_VISIBLE_DEVICES=GPU-…`): a container given a MIG-enabled GPU that way sees no
/// usable CUDA device, and the node's compute challenge goes unanswered for it, while
/// kubelet would count it as one whole GPU with all its memory.
pub const MIG_LEFT_OUT: &str = "MIG enabled: not supported (gpufed advertises whole GPUs; \
     disable MIG with `nvidia-smi -i <index> -mig 0`, reset the GPU, restart the plugin)";

/// Normalises a PCI bus id for comparison (`0000:18:00.0` and `00000000:18:00.0` match).
pub fn bus_key(id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    match lower.split_once(':') {
        Some((domain, rest)) => format!("{:0>8}:{rest}", domain.trim_start_matches('0')),
        None => lower,
    }
}

/// The bus id as Linux names the device (`/sys/bus/pci/devices/0000:18:00.0`): a 4-digit
/// domain, lower case. NVML's is `00000000:18:00.0`, upper case.
pub fn sysfs_bus(id: &str) -> String {
    let key = bus_key(id);
    match key.split_once(':') {
        Some((domain, rest)) => format!("{:0>4}:{rest}", domain.trim_start_matches('0')),
        None => key,
    }
}

/// The NUMA node of the CPUs nearest the GPU at PCI `bus_id`, as the kernel says under
/// `sysfs` (`<sysfs>/bus/pci/devices/<bus>/numa_node`; `-1`, absent or unreadable: none).
///
/// Not NVML's `nvmlDeviceGetNumaNodeId`: that answers only where the GPU's memory is a
/// NUMA node itself (Grace Hopper), and then with that memory-only node, which has no CPUs
/// for the Topology Manager to align with; on x86 it is not supported at all.
pub fn pci_numa_node(sysfs: &std::path::Path, bus_id: &str) -> Option<i64> {
    let path = sysfs
        .join("bus/pci/devices")
        .join(sysfs_bus(bus_id))
        .join("numa_node");
    let node: i64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (node >= 0).then_some(node)
}

/// The inventory of the GPUs that could be described, with their NVLink peers, and the
/// GPUs left out. An error only when there were GPUs and none could be described.
pub fn assemble(
    driver_version: String,
    cuda_version: String,
    probes: Vec<Probe>,
) -> Result<(Inventory, Vec<LeftOut>), SourceError> {
    // Every bus that is one of ours, described or not.
    let ours: BTreeSet<String> = probes
        .iter()
        .filter_map(|p| p.pci_bus_id.as_deref().map(bus_key))
        .collect();
    let mut gpus = Vec::new();
    let mut remotes = Vec::new();
    let mut left_out = Vec::new();
    for p in probes {
        let described = if p.mig_enabled {
            Err(MIG_LEFT_OUT.to_owned())
        } else {
            p.described
        };
        match described {
            Ok(gpu) => {
                gpus.push(gpu);
                remotes.push(p.remote_buses);
            }
            Err(why) => left_out.push(LeftOut {
                index: p.index,
                uuid: p.uuid,
                why,
            }),
        }
    }
    if gpus.is_empty() && !left_out.is_empty() {
        let each: Vec<String> = left_out
            .iter()
            .map(|l| format!("GPU {}: {}", l.index, l.why))
            .collect();
        return Err(SourceError::Nvml {
            call: "describing every GPU".into(),
            error: each.join("; "),
        });
    }
    link_peers(&mut gpus, &remotes, &ours);
    let mut inventory = Inventory {
        driver_version,
        cuda_version,
        simulated: false,
        gpus,
    };
    inventory.normalize();
    Ok((inventory, left_out))
}

/// Peers: a link whose far end is another described GPU is a direct peer; one whose far
/// end is a bus of ours left out leads nowhere usable. A link to anything else joins the
/// GPU to the switch fabric, whose members all reach one another — when at least two of
/// our GPUs link to that bus, as every GPU of an NVSwitch system links to each switch. A
/// far end only one GPU reaches is not taken for a switch: it is the bridge partner of a
/// GPU NVML could not even give a bus for (NVML's own link-type query is no help:
/// nvml-wrapper 0.13's `remote_device_type` reads its answer back from a temporary and
/// always says `Unknown`).
fn link_peers(gpus: &mut [Gpu], remotes: &[Vec<String>], ours: &BTreeSet<String>) {
    let by_bus: BTreeMap<String, String> = gpus
        .iter()
        .map(|g| (bus_key(&g.pci_bus_id), g.uuid.clone()))
        .collect();
    let mut elsewhere: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (i, far) in remotes.iter().enumerate() {
        for r in far.iter().map(|r| bus_key(r)) {
            match by_bus.get(&r) {
                Some(peer) => gpus[i].nvlink_peers.push(peer.clone()),
                None if ours.contains(&r) => {}
                None => {
                    elsewhere.entry(r).or_default().insert(i);
                }
            }
        }
    }
    let switch_linked: BTreeSet<usize> = elsewhere
        .into_values()
        .filter(|linked| linked.len() >= 2)
        .flatten()
        .collect();
    for &i in &switch_linked {
        for &j in &switch_linked {
            if i != j {
                let peer = gpus[j].uuid.clone();
                gpus[i].nvlink_peers.push(peer);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::inventory::ComputeCapability;

    #[test]
    fn a_gpu_s_numa_node_is_the_kernel_s_for_its_pci_device() {
        assert_eq!(sysfs_bus("00000000:18:00.0"), "0000:18:00.0");
        assert_eq!(sysfs_bus("00000001:AF:00.0"), "0001:af:00.0");
        let sys = tempfile::tempdir().expect("tempdir");
        let device = |bus: &str, node: &str| {
            let dir = sys.path().join("bus/pci/devices").join(bus);
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(dir.join("numa_node"), node).expect("write");
        };
        device("0000:18:00.0", "0\n");
        device("0000:af:00.0", "1\n");
        device("0000:3b:00.0", "-1\n");
        assert_eq!(pci_numa_node(sys.path(), "00000000:18:00.0"), Some(0));
        assert_eq!(pci_numa_node(sys.path(), "00000000:AF:00.0"), Some(1));
        assert_eq!(pci_numa_node(sys.path(), "00000000:3B:00.0"), None, "-1: no NUMA");
        assert_eq!(
            pci_numa_node(sys.path(), "00000000:5E:00.0"),
            None,
            "no such device"
        );
    }

    fn gpu(i: u32) -> Gpu {
        Gpu {
            uuid: format!("GPU-{i}"),
            index: i,
            name: "NVIDIA A100-PCIE-40GB".into(),
            memory_mib: 40_960,
            compute_capability: ComputeCapability { major: 8, minor: 0 },
            pci_bus_id: format!("00000000:{:02X}:00.0", 0x10 + i),
            numa_node: Some(0),
            nvlink_peers: Vec::new(),
            serial: None,
        }
    }

    fn probe(i: u32, remotes: &[&str]) -> Probe {
        let g = gpu(i);
        Probe {
            index: i,
            uuid: Some(g.uuid.clone()),
            pci_bus_id: Some(g.pci_bus_id.clone()),
            remote_buses: remotes.iter().map(|r| (*r).to_owned()).collect(),
            mig_enabled: false,
            described: Ok(g),
        }
    }

    fn failed(mut p: Probe, why: &str) -> Probe {
        p.described = Err(why.into());
        p
    }

    fn peers(inv: &Inventory) -> Vec<(String, Vec<String>)> {
        inv.gpus
            .iter()
            .map(|g| (g.uuid.clone(), g.nvlink_peers.clone()))
            .collect()
    }

    #[test]
    fn bus_ids_compare_across_formats() {
        assert_eq!(bus_key("0000:18:00.0"), bus_key("00000000:18:00.0"));
        assert_eq!(bus_key("00000000:1A:00.0"), "00000000:1a:00.0");
        assert_ne!(bus_key("0000:18:00.0"), bus_key("0000:19:00.0"));
    }

    #[test]
    fn bridged_pairs_and_a_switch_fabric_become_peers() {
        // 0↔1 over a bridge (short bus form on one side); 2 and 3 on an NVSwitch.
        let probes = vec![
            probe(0, &["0000:11:00.0"]),
            probe(1, &["00000000:10:00.0"]),
            probe(2, &["00000000:FF:00.0"]),
            probe(3, &["00000000:FF:00.0", "00000000:FE:00.0"]),
        ];
        let (inv, left) = assemble("550.1".into(), "12.4".into(), probes).unwrap();
        assert!(left.is_empty());
        assert!(!inv.simulated);
        assert_eq!(
            peers(&inv),
            [
                ("GPU-0".into(), vec!["GPU-1".to_owned()]),
                ("GPU-1".into(), vec!["GPU-0".to_owned()]),
                ("GPU-2".into(), vec!["GPU-3".to_owned()]),
                ("GPU-3".into(), vec!["GPU-2".to_owned()]),
            ]
        );
    }

    #[test]
    fn a_gpu_nvml_cannot_describe_is_left_out_and_the_others_are_served() {
        // GPU 1 answers its UUID and bus but not its memory; GPU 3 not even its handle.
        let probes = vec![
            probe(0, &["00000000:11:00.0"]),
            failed(
                probe(1, &["00000000:10:00.0"]),
                "NVML memory info failed: Unknown Error",
            ),
            probe(2, &["00000000:FF:00.0"]),
            Probe {
                index: 3,
                uuid: None,
                pci_bus_id: None,
                remote_buses: Vec::new(),
                mig_enabled: false,
                described: Err("NVML device by index failed: GPU is lost".into()),
            },
            probe(4, &["00000000:FF:00.0"]),
            // GPU 5's bridge partner is GPU 3, whose bus NVML never gave: the far end only
            // GPU 5 reaches is no switch, so GPU 5 does not join 2 and 4.
            probe(5, &["00000000:13:00.0"]),
        ];
        let (inv, left) = assemble("550.1".into(), "12.4".into(), probes).unwrap();
        let uuids: Vec<&str> = inv.gpus.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(uuids, ["GPU-0", "GPU-2", "GPU-4", "GPU-5"]);
        assert_eq!(left.len(), 2);
        assert_eq!((left[0].index, left[0].uuid.as_deref()), (1, Some("GPU-1")));
        assert!(left[0].why.contains("memory info"), "{}", left[0].why);
        assert_eq!((left[1].index, left[1].uuid.as_deref()), (3, None));
        // GPU 0's bridge leads to GPU 1, left out: no peer, and not taken for a switch
        // link (that would make it a peer of 2 and 4).
        assert_eq!(
            peers(&inv),
            [
                ("GPU-0".into(), vec![]),
                ("GPU-2".into(), vec!["GPU-4".to_owned()]),
                ("GPU-4".into(), vec!["GPU-2".to_owned()]),
                ("GPU-5".into(), vec![]),
            ]
        );
    }

    /// The defect: a MIG-enabled GPU was advertised as one whole healthy GPU. It is left
    /// out with the reason; it stays one of ours for the NVLink rule.
    #[test]
    fn a_mig_enabled_gpu_is_left_out_with_the_reason() {
        let mig = |mut p: Probe| {
            p.mig_enabled = true;
            p
        };
        let probes = vec![
            probe(0, &[]),
            mig(probe(1, &["00000000:12:00.0"])),
            probe(2, &["00000000:11:00.0"]),
        ];
        let (inv, left) = assemble("550.1".into(), "12.4".into(), probes).unwrap();
        let uuids: Vec<&str> = inv.gpus.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(uuids, ["GPU-0", "GPU-2"]);
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].index, left[0].uuid.as_deref()), (1, Some("GPU-1")));
        assert!(
            left[0].why.starts_with("MIG enabled: not supported"),
            "{}",
            left[0].why
        );
        assert!(
            inv.gpus[1].nvlink_peers.is_empty(),
            "a link to the MIG GPU is no switch"
        );
        // A node whose every GPU is in MIG mode serves none: an error naming why.
        let err = assemble("550.1".into(), "12.4".into(), vec![mig(probe(0, &[]))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("GPU 0: MIG enabled"), "{err}");
    }

    #[test]
    fn no_gpu_described_is_an_error_naming_each_and_no_gpu_at_all_is_not() {
        let probes = vec![
            failed(probe(0, &[]), "NVML name failed: Unknown Error"),
            failed(probe(1, &[]), "NVML uuid failed: GPU is lost"),
        ];
        let err = assemble("550.1".into(), "12.4".into(), probes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GPU 0: NVML name failed") && err.contains("GPU 1: NVML uuid failed"),
            "{err}"
        );
        let (inv, left) = assemble("550.1".into(), "12.4".into(), Vec::new()).unwrap();
        assert!(inv.gpus.is_empty() && left.is_empty());
    }
}
