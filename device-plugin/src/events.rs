//! Which GPU an NVML event is about. Pure (no NVML types): [`crate::nvml`] asks the event's
//! device what it can and [`event_faults`] / [`fanned_out_faults`] decide.
//!
//! Why apart: the event names its GPU by an NVML handle only, and the UUID read through
//! it fails for exactly the events that matter most (XID 79, fallen off the bus; 119/120,
//! GSP errors). The fault used to be recorded for the UUID `""`, which no GPU has: it was
//! dropped, and a GPU with an XID 119 stayed healthy and allocatable. Now the GPU is found
//! by its UUID, else by its NVML index, else by its PCI bus id (both fixed at discovery,
//! in this process). (Comparing the event's raw handle with handles kept at registration
//! would need `Device::handle`, which is `unsafe`; this crate forbids `unsafe`.)
//!
//! When none of them names a GPU served, every GPU takes the fault, as NVIDIA's own plugin
//! does — a GPU cannot be served healthy on the chance the event was another's — but not
//! every GPU alike. The source first reads every GPU at once (lost? new uncorrectable ECC
//! errors?): a GPU found lost or with new errors, or that could not be read, takes the
//! fault as it is (a reset-needing XID waits for a reset, kept in `reset-waits.json`); a
//! GPU found answering and clean takes it as [`FaultKind::Unattributed`], which holds it
//! for the probation only. Otherwise one unidentified XID 79/119 would hold every GPU of
//! the node until someone edits the reset file on the node: an innocent GPU's wait has no
//! ECC count to fall, and answering again ends only a lost GPU's.

use std::collections::BTreeMap;

use crate::discovery::bus_key;
use crate::health::{Fault, FaultKind};
use crate::inventory::Gpu;

/// What NVML answered about an event's device, each as the value or the error's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDevice {
    /// `nvmlDeviceGetUUID`.
    pub uuid: Result<String, String>,
    /// `nvmlDeviceGetIndex`.
    pub index: Result<u32, String>,
    /// `nvmlDeviceGetPciInfo`'s bus id.
    pub pci_bus_id: Result<String, String>,
}

/// The UUID of the served GPU `device` is, or why none could be told (every answer, for
/// the log).
pub fn event_gpu(device: &EventDevice, gpus: &[Gpu]) -> Result<String, String> {
    let by_uuid = match &device.uuid {
        Ok(u) => gpus
            .iter()
            .find(|g| &g.uuid == u)
            .ok_or_else(|| format!("UUID {u} not served")),
        Err(e) => Err(format!("UUID: {e}")),
    };
    let by_index = match &device.index {
        Ok(i) => gpus
            .iter()
            .find(|g| g.index == *i)
            .ok_or_else(|| format!("index {i} not served")),
        Err(e) => Err(format!("index: {e}")),
    };
    let by_bus = match &device.pci_bus_id {
        Ok(b) => gpus
            .iter()
            .find(|g| bus_key(&g.pci_bus_id) == bus_key(b))
            .ok_or_else(|| format!("PCI bus {b} not served")),
        Err(e) => Err(format!("PCI bus id: {e}")),
    };
    let mut why = Vec::new();
    for found in [by_uuid, by_index, by_bus] {
        match found {
            Ok(g) => return Ok(g.uuid.clone()),
            Err(e) => why.push(e),
        }
    }
    Err(why.join("; "))
}

/// The faults an event of `kinds` on `device` makes on its GPU, or why its GPU cannot be
/// told (every answer, for the log): the caller then reads every GPU at once and hands
/// what it found to [`fanned_out_faults`].
pub fn event_faults(device: &EventDevice, gpus: &[Gpu], kinds: &[FaultKind]) -> Result<Vec<Fault>, String> {
    let uuid = event_gpu(device, gpus)?;
    Ok(kinds
        .iter()
        .map(|kind| Fault {
            uuid: uuid.clone(),
            kind: kind.clone(),
        })
        .collect())
}

/// Whether a read of a GPU shows it may be the one an unidentified event was about: it is
/// lost (fell off the bus: XID 79) or has new uncorrectable ECC errors (XID 48, 94, 95,
/// 140). A reset or a lost GPU answering again says nothing either way.
fn found_at_fault(read: &[FaultKind]) -> bool {
    read.iter()
        .any(|k| matches!(k, FaultKind::Lost(_) | FaultKind::DoubleBitEcc { .. }))
}

/// The faults an event of `kinds` whose GPU cannot be told makes on every GPU served.
/// `scan` is the read of each GPU run right after the event (what the read made of it,
/// [`crate::readings::Readings::observe`]; a GPU absent was not read: its lookup failed).
/// A GPU found lost or with new ECC errors, or not read, takes `kinds` as they are: the
/// event may be its, and one needing a reset waits for one. A GPU read and found clean
/// takes each as [`FaultKind::Unattributed`]: unhealthy now, back after the probation,
/// never a wait for a reset (which nothing would end).
pub fn fanned_out_faults(
    kinds: &[FaultKind],
    gpus: &[Gpu],
    scan: &BTreeMap<String, Vec<FaultKind>>,
) -> Vec<Fault> {
    gpus.iter()
        .flat_map(|g| {
            let clean = scan.get(&g.uuid).is_some_and(|read| !found_at_fault(read));
            kinds.iter().map(move |kind| Fault {
                uuid: g.uuid.clone(),
                kind: if clean {
                    FaultKind::Unattributed(Box::new(kind.clone()))
                } else {
                    kind.clone()
                },
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::health::{Health, HealthBook, HealthPolicy};
    use crate::inventory::ComputeCapability;

    fn gpu(i: u32) -> Gpu {
        Gpu {
            uuid: format!("GPU-{i}"),
            index: i,
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: 81_559,
            compute_capability: ComputeCapability { major: 9, minor: 0 },
            pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + i),
            numa_node: None,
            nvlink_peers: Vec::new(),
            serial: None,
        }
    }

    fn lost<T>() -> Result<T, String> {
        Err("GPU is lost".into())
    }

    fn uuids(faults: &[Fault]) -> Vec<&str> {
        faults.iter().map(|f| f.uuid.as_str()).collect()
    }

    fn lost_everything() -> EventDevice {
        EventDevice {
            uuid: lost(),
            index: lost(),
            pci_bus_id: lost(),
        }
    }

    /// The read run after the event: GPU-0 lost, GPU-2 with new ECC errors, GPU-3 not
    /// read (its lookup failed), GPU-1 and GPU-4 answering and clean.
    fn scan() -> BTreeMap<String, Vec<FaultKind>> {
        [
            ("GPU-0", vec![FaultKind::Lost("GPU is lost".into())]),
            ("GPU-1", vec![]),
            ("GPU-2", vec![FaultKind::DoubleBitEcc { total: 2 }]),
            ("GPU-4", vec![FaultKind::Reset("count went down".into())]),
        ]
        .into_iter()
        .map(|(u, k)| (u.to_owned(), k))
        .collect()
    }

    /// What the NVML source hands the health book: the read's faults, then the event's.
    fn source_faults(kinds: &[FaultKind], gpus: &[Gpu]) -> Vec<Fault> {
        let scan = scan();
        let read = scan.iter().flat_map(|(u, ks)| {
            ks.iter().map(|k| Fault {
                uuid: u.clone(),
                kind: k.clone(),
            })
        });
        read.chain(fanned_out_faults(kinds, gpus, &scan)).collect()
    }

    /// The defect before: an XID whose device could not be read became a fault for UUID
    /// "", which the health book ignores. Now its GPU cannot be told, and why is told.
    #[test]
    fn an_event_whose_gpu_cannot_be_told_says_why() {
        let gpus = [gpu(0), gpu(1), gpu(2)];
        let why = event_faults(&lost_everything(), &gpus, &[FaultKind::Xid(119)]).unwrap_err();
        assert!(
            why.contains("UUID: GPU is lost") && why.contains("PCI bus id"),
            "{why}"
        );
        // Answers that name no GPU served count as none.
        let strange = EventDevice {
            uuid: Ok("GPU-elsewhere".into()),
            index: Ok(7),
            pci_bus_id: Ok("00000000:AA:00.0".into()),
        };
        let why = event_faults(&strange, &gpus, &[FaultKind::Xid(79)]).unwrap_err();
        assert!(why.contains("index 7 not served"), "{why}");
    }

    /// The defect (review): an unidentified XID 79/119 made every GPU wait for a reset,
    /// saved in reset-waits.json, that nothing ended for the GPUs not at fault — the whole
    /// node out until someone edited the file. Now every GPU is unhealthy at once, but
    /// only the GPUs the read found lost, with new ECC errors or unreadable wait for a
    /// reset; the clean ones come back after the probation.
    #[test]
    fn an_unidentified_reset_xid_holds_only_the_gpus_found_at_fault_until_a_reset() {
        let gpus: Vec<Gpu> = (0..5).map(gpu).collect();
        for xid in [79, 119] {
            let t0 = Instant::now();
            let policy = HealthPolicy {
                probation: Duration::from_secs(60),
                ..HealthPolicy::default()
            };
            let mut book = HealthBook::new(gpus.iter().map(|g| g.uuid.clone()), policy);
            for f in source_faults(&[FaultKind::Xid(xid)], &gpus) {
                book.record(&f, t0);
            }
            assert!(
                book.snapshot().iter().all(|(_, h)| *h == Health::Unhealthy),
                "XID {xid}: every GPU unhealthy at once: {:?}",
                book.snapshot()
            );
            let waiting: Vec<String> = book.waits().into_keys().collect();
            assert_eq!(waiting, ["GPU-0", "GPU-2", "GPU-3"], "XID {xid}");
            let back = book.tick(t0 + Duration::from_secs(60));
            let back: Vec<&str> = back.iter().map(|t| t.uuid.as_str()).collect();
            assert_eq!(back, ["GPU-1", "GPU-4"], "XID {xid}");
            for u in ["GPU-0", "GPU-2", "GPU-3"] {
                assert_eq!(book.health(u), Some(Health::Unhealthy), "XID {xid} {u}");
            }
            // The lost GPU still waits as it did: it takes the XID as it is, and answering
            // again ends an XID 79 wait only (119: a reset shown by its counter).
            book.record(
                &Fault {
                    uuid: "GPU-0".into(),
                    kind: FaultKind::Answering("answers".into()),
                },
                t0 + Duration::from_secs(61),
            );
            assert_eq!(book.awaiting_reset("GPU-0").is_none(), xid == 79, "XID {xid}");
        }
    }

    /// Through the reset file: a restarted plugin serves the clean GPUs, and only the GPU
    /// found lost still waits.
    #[test]
    fn an_unidentified_reset_xid_saves_a_wait_for_the_gpus_found_at_fault_only() {
        use crate::inventory::Inventory;
        use crate::resetfile::{BOOT_ID, FILE_NAME};
        use crate::service::{AllocateConfig, PluginState};
        if std::fs::read_to_string(BOOT_ID).is_err() {
            return; // not Linux: no boot id, waits kept in memory (tested above)
        }
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::from_simulate_str(include_str!("../testdata/hgx-h100x8.yaml")).unwrap();
        let policy = HealthPolicy {
            reset_file: Some(dir.path().join(FILE_NAME)),
            ..HealthPolicy::default()
        };
        let lost_gpu = inv.gpus[3].uuid.clone();
        let scan: BTreeMap<String, Vec<FaultKind>> = inv
            .gpus
            .iter()
            .map(|g| {
                let read = if g.uuid == lost_gpu {
                    vec![FaultKind::Lost("GPU is lost".into())]
                } else {
                    vec![]
                };
                (g.uuid.clone(), read)
            })
            .collect();
        let mut faults = vec![Fault {
            uuid: lost_gpu.clone(),
            kind: FaultKind::Lost("GPU is lost".into()),
        }];
        faults.extend(fanned_out_faults(&[FaultKind::Xid(119)], &inv.gpus, &scan));
        let first = PluginState::new(inv.clone(), policy.clone(), AllocateConfig::default());
        first.observe(&faults, Instant::now());
        assert!(first.devices().iter().all(|d| d.health == "Unhealthy"));
        drop(first);
        let second = PluginState::new(inv, policy, AllocateConfig::default());
        for d in second.devices() {
            let want = if d.id == lost_gpu { "Unhealthy" } else { "Healthy" };
            assert_eq!(d.health, want, "{}", d.id);
        }
    }

    /// The fault given to a clean GPU is as critical as the event's, never a reset wait:
    /// an unidentified application XID still changes nothing.
    #[test]
    fn an_unattributed_fault_is_critical_as_its_event_and_needs_no_reset() {
        let policy = HealthPolicy::default();
        let un = |k: FaultKind| FaultKind::Unattributed(Box::new(k));
        for kind in [
            FaultKind::Xid(79),
            FaultKind::Xid(119),
            FaultKind::DoubleBitEcc { total: 0 },
        ] {
            assert!(policy.needs_reset(&kind));
            assert!(policy.is_critical(&un(kind.clone())), "{kind}");
            assert!(!policy.needs_reset(&un(kind.clone())), "{kind}");
            assert!(!HealthPolicy::answering_ends(&un(kind)));
        }
        assert!(!policy.is_critical(&un(FaultKind::Xid(13))));
        assert!(un(FaultKind::Xid(119)).to_string().contains("XID 119"));
    }

    #[test]
    fn an_event_s_gpu_is_told_by_uuid_else_index_else_bus() {
        let gpus = [gpu(0), gpu(1), gpu(2)];
        let kinds = [FaultKind::Xid(48), FaultKind::DoubleBitEcc { total: 0 }];
        let by_uuid = EventDevice {
            uuid: Ok("GPU-2".into()),
            index: lost(),
            pci_bus_id: lost(),
        };
        let faults = event_faults(&by_uuid, &gpus, &kinds).unwrap();
        assert_eq!(uuids(&faults), ["GPU-2", "GPU-2"]);
        assert_eq!(faults[1].kind, kinds[1]);
        let by_index = EventDevice {
            uuid: lost(),
            index: Ok(1),
            pci_bus_id: lost(),
        };
        assert_eq!(event_gpu(&by_index, &gpus).unwrap(), "GPU-1");
        // NVML's bus id form differs from the inventory's (short domain, lower case).
        let by_bus = EventDevice {
            uuid: lost(),
            index: lost(),
            pci_bus_id: Ok("0000:18:00.0".into()),
        };
        assert_eq!(event_gpu(&by_bus, &gpus).unwrap(), "GPU-0");
    }
}
