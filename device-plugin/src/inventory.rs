//! What a node has: its GPUs and the facts about them that the plugin publishes.
//!
//! Pure data. The same types describe NVML discovery and `--simulate` files, so a
//! simulate file is simply a serialized [`Inventory`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// CUDA compute capability, `major.minor` (e.g. `9.0` for H100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ComputeCapability {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A compute capability string that is not `MAJOR.MINOR`.
#[derive(Debug, thiserror::Error)]
#[error("compute capability {0:?} is not MAJOR.MINOR (e.g. \"9.0\")")]
pub struct BadComputeCapability(String);

impl FromStr for ComputeCapability {
    type Err = BadComputeCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadComputeCapability(s.to_owned());
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            major: major.trim().parse().map_err(|_| bad())?,
            minor: minor.trim().parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for ComputeCapability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ComputeCapability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One physical GPU as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// NVML UUID (`GPU-…`); also the device ID announced to kubelet.
    pub uuid: String,
    /// NVML index on this node (informational; UUIDs are the identity).
    #[serde(default)]
    pub index: u32,
    /// NVML product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total framebuffer memory in MiB.
    pub memory_mib: u64,
    /// CUDA compute capability.
    pub compute_capability: ComputeCapability,
    /// PCI bus id, e.g. `00000000:18:00.0`.
    #[serde(default)]
    pub pci_bus_id: String,
    /// NUMA node the GPU is attached to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i64>,
    /// UUIDs of the GPUs this one reaches over an active NVLink (direct peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvlink_peers: Vec<String>,
    /// The board's serial number, where it reports one (boards with an infoROM:
    /// data-center cards); the hub checks that no two nodes report the same board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// Everything discovered on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Driver version, e.g. `580.159.04`.
    #[serde(default)]
    pub driver_version: String,
    /// CUDA driver API version, e.g. `13.0`.
    #[serde(default)]
    pub cuda_version: String,
    /// True when the inventory comes from a `--simulate` file: never counts as verified.
    #[serde(default)]
    pub simulated: bool,
    /// The GPUs, in NVML index order.
    pub gpus: Vec<Gpu>,
}

/// An inventory that cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    /// Two GPUs share one UUID.
    #[error("GPU UUID {0} appears twice")]
    DuplicateUuid(String),
    /// A UUID kubelet would reject (empty, or longer than 63 characters as the API requires).
    #[error("GPU UUID {0:?} is empty or longer than 63 characters")]
    BadUuid(String),
    /// An NVLink peer that is not a GPU of this node.
    #[error("GPU {gpu} lists NVLink peer {peer}, which is not a GPU of this node")]
    UnknownPeer {
        /// The GPU that lists the peer.
        gpu: String,
        /// The unknown peer UUID.
        peer: String,
    },
}

impl Inventory {
    /// Checks the invariants the rest of the plugin relies on.
    pub fn validate(&self) -> Result<(), InventoryError> {
        let mut seen = BTreeMap::new();
        for g in &self.gpus {
            if g.uuid.is_empty() || g.uuid.len() > 63 {
                return Err(InventoryError::BadUuid(g.uuid.clone()));
            }
            if seen.insert(g.uuid.as_str(), ()).is_some() {
                return Err(InventoryError::DuplicateUuid(g.uuid.clone()));
            }
        }
        for g in &self.gpus {
            if let Some(peer) = g.nvlink_peers.iter().find(|p| !seen.contains_key(p.as_str())) {
                return Err(InventoryError::UnknownPeer {
                    gpu: g.uuid.clone(),
                    peer: peer.clone(),
                });
            }
        }
        Ok(())
    }

    /// Makes NVLink peer lists symmetric (a link seen from one side is a link both ways)
    /// and sorted, so topology decisions do not depend on discovery order.
    pub fn normalize(&mut self) {
        let mut links: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in &self.gpus {
            for p in &g.nvlink_peers {
                if p != &g.uuid {
                    links.entry(g.uuid.clone()).or_default().push(p.clone());
                    links.entry(p.clone()).or_default().push(g.uuid.clone());
                }
            }
        }
        for g in &mut self.gpus {
            let mut peers = links.remove(&g.uuid).unwrap_or_default();
            peers.sort();
            peers.dedup();
            g.nvlink_peers = peers;
        }
    }

    /// Looks a GPU up by UUID.
    pub fn gpu(&self, uuid: &str) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.uuid == uuid)
    }

    /// Parses a `--simulate` file (YAML, which also accepts JSON), validates it and marks
    /// it simulated whatever the file says.
    pub fn from_simulate_str(text: &str) -> Result<Self, SimulateFileError> {
        let mut inv: Inventory = serde_yaml::from_str(text)?;
        inv.simulated = true;
        inv.normalize();
        inv.validate()?;
        Ok(inv)
    }
}

/// A `--simulate` file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SimulateFileError {
    /// Not YAML/JSON of the expected shape.
    #[error("simulate file is not a valid inventory: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// Parsed but inconsistent.
    #[error("simulate file is inconsistent: {0}")]
    Invalid(#[from] InventoryError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SIM: &str = r#"
driverVersion: "580.159.04"
cudaVersion: "13.0"
simulated: false
gpus:
  - uuid: GPU-a
    name: NVIDIA H100 80GB HBM3
    memoryMib: 81559
    computeCapability: "9.0"
    numaNode: 0
    nvlinkPeers: [GPU-b]
  - uuid: GPU-b
    name: NVIDIA H100 80GB HBM3
    memoryMib: 81559
    computeCapability: "9.0"
"#;

    #[test]
    fn simulate_file_is_always_marked_simulated_and_links_made_symmetric() {
        let inv = Inventory::from_simulate_str(SIM).unwrap();
        assert!(
            inv.simulated,
            "a file saying simulated: false must still be simulated"
        );
        assert_eq!(inv.gpu("GPU-b").unwrap().nvlink_peers, vec!["GPU-a".to_string()]);
        assert_eq!(
            inv.gpus[0].compute_capability,
            ComputeCapability { major: 9, minor: 0 }
        );
    }

    #[test]
    fn simulate_file_rejects_duplicates_unknown_peers_and_bad_capability() {
        let dup = SIM.replace("uuid: GPU-b", "uuid: GPU-a");
        assert!(matches!(
            Inventory::from_simulate_str(&dup),
            Err(SimulateFileError::Invalid(InventoryError::DuplicateUuid(_)))
        ));
        let peer = SIM.replace("[GPU-b]", "[GPU-z]");
        assert!(matches!(
            Inventory::from_simulate_str(&peer),
            Err(SimulateFileError::Invalid(InventoryError::UnknownPeer { .. }))
        ));
        let cc = SIM.replace("\"9.0\"", "\"nine\"");
        assert!(Inventory::from_simulate_str(&cc).is_err());
        let json = r#"{"gpus":[{"uuid":"GPU-j","name":"X","memoryMib":1,"computeCapability":"8.6"}]}"#;
        assert_eq!(Inventory::from_simulate_str(json).unwrap().gpus.len(), 1);
    }
}
