//! The NVML implementation of [`GpuSource`] (through nvml-wrapper, which loads
//! `libnvidia-ml.so.1` at run time: without a driver, [`NvmlSource::open`] returns
//! [`SourceError::NoDriver`], never panics).
//!
//! Faults: critical XID and double-bit ECC events from an NVML event set (woken by the
//! driver, no busy polling), plus a volatile uncorrected-ECC counter read every
//! `ecc_every` for GPUs whose events are not supported, and "lost" when a GPU stops
//! answering. An event set whose wait fails (a driver in a bad state, or a sandboxed
//! driver that implements only part of NVML) is dropped rather than retried in a loop:
//! the counters stand in for it and it is registered again after [`EVENTS_RETRY`] (at
//! once when the failure is a lost GPU: the new set leaves that GPU out). Reset evidence
//! (the counter went down, a lost GPU answers again) comes from the same reads
//! ([`crate::readings`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;

use crate::discovery::{self, Probe};
use crate::events::{EventDevice, event_faults};
use crate::health::{Fault, FaultKind};
use crate::inventory::{ComputeCapability, Gpu, Inventory};
use crate::readings::{Reading, Readings};
use crate::source::{GpuSource, SourceError};

/// How long the ECC counters stand in for an event set whose wait failed before the event
/// set is registered again.
pub const EVENTS_RETRY: Duration = Duration::from_secs(300);

/// `NVML_DEVICE_MIG_ENABLE`, the current MIG mode of a GPU in MIG mode (nvml-wrapper
/// does not re-export the constant).
const MIG_ENABLE: u32 = 1;

/// GPUs discovered through NVML.
pub struct NvmlSource {
    nvml: &'static Nvml,
    inventory: Inventory,
    events: Option<EventSet<'static>>,
    /// When to register the event set again after its wait failed (`None`: never failed,
    /// or events were never supported).
    events_retry: Option<Instant>,
    /// When a lost GPU last made the event set be rebuilt at once (at most once per
    /// [`EVENTS_RETRY`], so a wait that keeps failing cannot spin).
    lost_rebuild: Option<Instant>,
    readings: Readings,
    ecc_every: Duration,
    last_ecc: Option<Instant>,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource")
            .field("inventory", &self.inventory)
            .finish_non_exhaustive()
    }
}

fn nv(call: &str) -> impl Fn(NvmlError) -> SourceError + '_ {
    move |e| SourceError::Nvml {
        call: call.to_owned(),
        error: e.to_string(),
    }
}

impl NvmlSource {
    /// Initialises NVML and discovers every GPU it can describe ([`discovery::assemble`]:
    /// a GPU it cannot is left out and logged, the others served). NVML is initialised
    /// once per process and kept for its lifetime (the event set borrows it).
    pub fn open(ecc_every: Duration) -> Result<Self, SourceError> {
        let nvml: &'static Nvml = Box::leak(Box::new(
            Nvml::init().map_err(|e| SourceError::NoDriver(e.to_string()))?,
        ));
        let driver_version = nvml.sys_driver_version().map_err(nv("driver version"))?;
        let cuda = nvml.sys_cuda_driver_version().map_err(nv("CUDA version"))?;
        let cuda_version = format!("{}.{}", cuda / 1000, (cuda % 1000) / 10);
        let count = nvml.device_count().map_err(nv("device count"))?;
        let probes = (0..count).map(|index| probe(nvml, index)).collect();
        let (inventory, left_out) = discovery::assemble(driver_version, cuda_version, probes)?;
        for l in &left_out {
            tracing::error!(index = l.index, gpu = l.uuid.as_deref().unwrap_or("unknown"), reason = %l.why,
                "GPU left out: not advertised to kubelet (the node's other GPUs are); restart \
                 the plugin once the reason is gone");
        }
        let events = register_events(nvml, &inventory);
        // A set that could not be registered at start is tried again like one whose wait
        // failed later (before, XID events stayed off for good).
        let events_retry = events.is_none().then(|| Instant::now() + EVENTS_RETRY);
        Ok(Self {
            nvml,
            inventory,
            events,
            events_retry,
            lost_rebuild: None,
            readings: Readings::default(),
            ecc_every,
            last_ecc: None,
        })
    }

    /// Whether XID / double-bit ECC events wake the poll (otherwise only the counters,
    /// read every `ecc_every`, see faults).
    pub fn events_registered(&self) -> bool {
        self.events.is_some()
    }

    /// The event set's wait failed: drop it, read the counters (and look for lost GPUs)
    /// at once, and register it again after [`EVENTS_RETRY`]. A lost GPU fails the wait
    /// for the whole set: the set is rebuilt at once then (without the GPU, which no
    /// longer registers), or the node's other GPUs would go without XID events for
    /// minutes.
    fn events_failed(&mut self, error: &NvmlError, now: Instant) {
        let at_once = matches!(error, NvmlError::GpuLost)
            && self
                .lost_rebuild
                .is_none_or(|t| now.saturating_duration_since(t) >= EVENTS_RETRY);
        let retry = if at_once {
            self.lost_rebuild = Some(now);
            Duration::ZERO
        } else {
            EVENTS_RETRY
        };
        tracing::warn!(
            error = %error,
            retry_secs = retry.as_secs(),
            ecc_every_secs = self.ecc_every.as_secs(),
            "NVML event wait failed: XID events off until the set is registered again, ECC \
             counters and lost GPUs still checked"
        );
        self.events = None;
        self.events_retry = Some(now + retry);
        self.last_ecc = None;
    }

    /// An event whose GPU NVML could not name (`why`): every GPU is read at once and takes
    /// it, for the probation only when found clean ([`crate::events`]).
    fn untold_event(&mut self, kinds: &[FaultKind], why: &str, out: &mut Vec<Fault>) {
        self.last_ecc = Some(Instant::now());
        let scan = self.poll_ecc(out);
        let faults = crate::events::fanned_out_faults(kinds, &self.inventory.gpus, &scan);
        let held: BTreeSet<&str> = (faults.iter())
            .filter(|f| !matches!(f.kind, FaultKind::Unattributed(_)))
            .map(|f| f.uuid.as_str())
            .collect();
        tracing::warn!(event = ?kinds, answers = %why, at_fault_or_unread = ?held,
            "NVML event on a GPU that cannot be told: every GPU of the node takes it, those \
             read lost, with new ECC errors or unreadable as it is, the others for the probation");
        out.extend(faults);
    }

    /// Reads every GPU (lost? its ECC count?): faults in `out`; returns what each read
    /// gave (absent: lookup failed), for [`crate::events::fanned_out_faults`].
    fn poll_ecc(&mut self, out: &mut Vec<Fault>) -> BTreeMap<String, Vec<FaultKind>> {
        let mut scan = BTreeMap::new();
        for g in &self.inventory.gpus {
            let reading = match self.nvml.device_by_uuid(g.uuid.as_str()) {
                Err(e) if is_lost(&e) => Reading::Lost(e.to_string()),
                // Another failure (a busy driver, a timeout) says nothing about the GPU:
                // taken for "lost", the next success would be taken for a reset and end
                // the wait of whatever fault holds the GPU.
                Err(e) => {
                    tracing::debug!(gpu = %g.uuid, error = %e, "NVML lookup failed; GPU not read this round");
                    continue;
                }
                Ok(d) => match d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile) {
                    Ok(total) => Reading::Ecc(total),
                    Err(e) if is_lost(&e) => Reading::Lost(e.to_string()),
                    // ECC off or unsupported: no counter to watch. A GPU that was lost
                    // must still answer a query that reaches it to count as back.
                    Err(_) if self.readings.is_lost(&g.uuid) => match d.memory_info() {
                        Ok(_) => Reading::Answered,
                        Err(e) if is_lost(&e) => Reading::Lost(e.to_string()),
                        Err(_) => continue,
                    },
                    Err(_) => Reading::Answered,
                },
            };
            let kinds = self.readings.observe(&g.uuid, reading);
            out.extend(kinds.iter().map(|kind| Fault {
                uuid: g.uuid.clone(),
                kind: kind.clone(),
            }));
            scan.insert(g.uuid.clone(), kinds);
        }
        scan
    }
}

/// Whether an NVML error says the GPU is gone (fell off the bus, or no longer found by
/// its UUID), as opposed to a failure of the call (timeout, driver busy, unsupported).
pub fn is_lost(error: &NvmlError) -> bool {
    matches!(error, NvmlError::GpuLost | NvmlError::NotFound)
}

/// What NVML says about the device at `index`: as much as it answers, and the GPU when
/// every fact the plugin publishes is known.
fn probe(nvml: &Nvml, index: u32) -> Probe {
    let d = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(e) => {
            return Probe {
                index,
                uuid: None,
                pci_bus_id: None,
                remote_buses: Vec::new(),
                mig_enabled: false,
                described: Err(format!("NVML device by index failed: {e}")),
            };
        }
    };
    let uuid = d.uuid().ok();
    let pci_bus_id = d.pci_info().ok().map(|p| p.bus_id);
    // NotSupported (no MIG on this GPU) and any other failure: not in MIG mode, as far
    // as NVML says.
    let mig_enabled = d.mig_mode().is_ok_and(|m| m.current == MIG_ENABLE);
    let remote_buses = (0..18)
        .filter_map(|link| {
            let l = d.link_wrapper_for(link);
            if l.is_active().unwrap_or(false) {
                l.remote_pci_info().ok().map(|pci| pci.bus_id)
            } else {
                None
            }
        })
        .collect();
    let failed = |call: &'static str| move |e: NvmlError| format!("NVML {call} failed: {e}");
    let described = (|| {
        let cc = d
            .cuda_compute_capability()
            .map_err(failed("compute capability"))?;
        let pci_bus_id = d.pci_info().map_err(failed("PCI info"))?.bus_id;
        Ok(Gpu {
            numa_node: crate::discovery::pci_numa_node(std::path::Path::new("/sys"), &pci_bus_id),
            uuid: d.uuid().map_err(failed("uuid"))?,
            index,
            name: d.name().map_err(failed("name"))?,
            memory_mib: d.memory_info().map_err(failed("memory info"))?.total / (1024 * 1024),
            compute_capability: ComputeCapability {
                major: u32::try_from(cc.major).unwrap_or(0),
                minor: u32::try_from(cc.minor).unwrap_or(0),
            },
            pci_bus_id,
            nvlink_peers: Vec::new(),
            // Consumer cards have no infoROM serial (NotSupported): none reported.
            serial: d.serial().ok().filter(|s| !s.trim().is_empty()),
        })
    })();
    Probe {
        index,
        uuid,
        pci_bus_id,
        remote_buses,
        mig_enabled,
        described,
    }
}

/// An event set for XID and double-bit ECC events of every GPU that supports them. A GPU
/// whose registration fails (lost, or refused by the driver) is left out and the set built
/// again without it — NVML frees a set whose registration fails — so one GPU cannot turn
/// XID events off for the whole node; GPUs left out are watched through the counters.
/// `None` only when the driver makes no event sets at all.
fn register_events(nvml: &'static Nvml, inv: &Inventory) -> Option<EventSet<'static>> {
    let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR;
    let mut left_out: BTreeSet<&str> = BTreeSet::new();
    // Each pass that fails leaves one more GPU out, so this ends.
    'build: loop {
        let mut set = match nvml.create_event_set() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "NVML event sets unavailable: relying on ECC counter polling");
                return None;
            }
        };
        for g in &inv.gpus {
            if left_out.contains(g.uuid.as_str()) {
                continue;
            }
            let Ok(d) = nvml.device_by_uuid(g.uuid.as_str()) else {
                left_out.insert(&g.uuid);
                continue;
            };
            let supported = d.supported_event_types().unwrap_or(EventTypes::empty()) & wanted;
            if supported.is_empty() {
                tracing::warn!(gpu = %g.uuid, "GPU supports no XID/ECC events: polling counters only");
                left_out.insert(&g.uuid);
                continue;
            }
            set = match d.register_events(supported, set) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(gpu = %g.uuid, error = %e,
                        "cannot register NVML events for this GPU: the others' are registered without it, \
                         its counters are still read");
                    left_out.insert(&g.uuid);
                    continue 'build;
                }
            };
        }
        return Some(set);
    }
}

impl GpuSource for NvmlSource {
    fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    fn resume_ecc(&mut self, counts: &std::collections::BTreeMap<String, u64>) {
        for (uuid, &count) in counts {
            self.readings.resume(uuid, count);
        }
    }

    fn poll(&mut self, wait: Duration) -> Result<Vec<Fault>, SourceError> {
        let mut out = Vec::new();
        if self.events.is_none() && self.events_retry.is_some_and(|t| Instant::now() >= t) {
            self.events = register_events(self.nvml, &self.inventory);
            self.events_retry = self.events.is_none().then(|| Instant::now() + EVENTS_RETRY);
            if self.events.is_some() {
                tracing::info!("NVML events registered again");
            }
        }
        if self.last_ecc.is_none_or(|t| t.elapsed() >= self.ecc_every) {
            self.last_ecc = Some(Instant::now());
            let _read = self.poll_ecc(&mut out);
        }
        let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        match &self.events {
            Some(set) => match set.wait(ms) {
                Ok(ev) => {
                    let mut kinds = Vec::new();
                    if ev.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                        let code = match ev.event_data {
                            Some(XidError::Value(v)) => v,
                            _ => 0,
                        };
                        kinds.push(FaultKind::Xid(code));
                    }
                    if ev.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
                        kinds.push(FaultKind::DoubleBitEcc { total: 0 });
                    }
                    let text = |e: NvmlError| e.to_string();
                    let device = EventDevice {
                        uuid: ev.device.uuid().map_err(text),
                        index: ev.device.index().map_err(text),
                        pci_bus_id: ev.device.pci_info().map(|p| p.bus_id).map_err(text),
                    };
                    match event_faults(&device, &self.inventory.gpus, &kinds) {
                        Ok(faults) => out.extend(faults),
                        Err(why) => self.untold_event(&kinds, &why, &mut out),
                    }
                }
                Err(NvmlError::Timeout) => {}
                // Returning the error would have the health loop call the same failing
                // wait again every poll, and never see an XID; the counters go on instead.
                Err(e) => self.events_failed(&e, Instant::now()),
            },
            None => std::thread::sleep(wait),
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_or_missing_gpu_counts_as_lost() {
        assert!(is_lost(&NvmlError::GpuLost));
        assert!(is_lost(&NvmlError::NotFound));
        for other in [
            NvmlError::Timeout,
            NvmlError::Unknown,
            NvmlError::NotSupported,
            NvmlError::NoPermission,
            NvmlError::DriverNotLoaded,
        ] {
            assert!(!is_lost(&other), "{other}");
        }
    }

    #[test]
    fn without_a_driver_open_is_a_clear_error_not_a_panic() {
        // This machine has no NVIDIA driver (CI neither); where one exists, open succeeds.
        match NvmlSource::open(Duration::from_secs(10)) {
            Err(e) => {
                let msg = e.to_string();
                assert!(matches!(e, SourceError::NoDriver(_)), "{msg}");
                assert!(
                    msg.contains("NVIDIA driver") && msg.contains("--simulate"),
                    "{msg}"
                );
            }
            Ok(src) => assert!(!src.inventory().simulated),
        }
    }
}
