//! Where GPUs and their faults come from: the [`GpuSource`] trait, and the `--simulate`
//! implementation. The NVML implementation lives in [`crate::nvml`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::health::{Fault, FaultKind};
use crate::inventory::{Inventory, SimulateFileError};

/// A source of GPU facts and faults. Blocking; the plugin runs it on its own thread.
pub trait GpuSource: Send {
    /// What was discovered at start.
    fn inventory(&self) -> &Inventory;
    /// Faults observed since the previous call. May block up to `wait` for one to happen
    /// (returning early when one does); returns an empty list when nothing happened.
    fn poll(&mut self, wait: Duration) -> Result<Vec<Fault>, SourceError>;
    /// Before the first poll: the volatile uncorrected ECC count of each GPU still waiting
    /// for a reset since before a plugin restart, as last read. A source that reads the
    /// counter takes it as the previous read, so a count found lower is a reset
    /// ([`FaultKind::Reset`]) — the first read is otherwise no evidence of one. Others
    /// ignore it.
    fn resume_ecc(&mut self, counts: &std::collections::BTreeMap<String, u64>) {
        let _ = counts;
    }
}

/// A source that cannot start or be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// NVML could not be loaded or initialised (no NVIDIA driver on this node).
    #[error(
        "cannot initialise NVML ({0}): is the NVIDIA driver installed and libnvidia-ml.so.1 on the \
         library path? Use --simulate FILE on nodes without GPUs"
    )]
    NoDriver(String),
    /// An NVML call failed.
    #[error("NVML {call} failed: {error}")]
    Nvml {
        /// What was being asked.
        call: String,
        /// NVML's error.
        error: String,
    },
    /// The simulate file cannot be read.
    #[error("simulate file {path}: {error}")]
    SimulateIo {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// The simulate file is not a usable inventory.
    #[error(transparent)]
    SimulateFile(#[from] SimulateFileError),
}

/// One scripted fault in a simulate file (`faults:` list). Appending an entry to the file
/// of a running plugin injects that fault once. `reset: "why"` is the evidence of a GPU
/// reset that NVML would give ([`FaultKind::Reset`]), which a fault needing a reset waits
/// for.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimFault {
    uuid: String,
    #[serde(default)]
    xid: Option<u64>,
    #[serde(default)]
    double_bit_ecc: Option<u64>,
    #[serde(default)]
    lost: Option<String>,
    #[serde(default)]
    reset: Option<String>,
}

impl SimFault {
    fn to_fault(&self) -> Option<Fault> {
        let kind = if let Some(x) = self.xid {
            FaultKind::Xid(x)
        } else if let Some(t) = self.double_bit_ecc {
            FaultKind::DoubleBitEcc { total: t }
        } else if let Some(why) = &self.lost {
            FaultKind::Lost(why.clone())
        } else {
            FaultKind::Reset(self.reset.clone()?)
        };
        Some(Fault {
            uuid: self.uuid.clone(),
            kind,
        })
    }
}

#[derive(Debug, Deserialize)]
struct SimFaults {
    #[serde(default)]
    faults: Vec<SimFault>,
}

/// Injects faults into a running [`SimulatedSource`] from another thread or task.
#[derive(Debug, Clone)]
pub struct FaultInjector(mpsc::Sender<Fault>);

impl FaultInjector {
    /// Queues a fault; the source reports it on its next poll (waking a waiting poll).
    /// Returns false when the source is gone.
    pub fn inject(&self, fault: Fault) -> bool {
        self.0.send(fault).is_ok()
    }
}

/// A declared inventory (`--simulate FILE`, or built in memory by tests). Always marked
/// simulated. Faults come from the file's `faults:` list (re-read when the file changes)
/// and from [`FaultInjector`]s.
#[derive(Debug)]
pub struct SimulatedSource {
    inventory: Inventory,
    file: Option<PathBuf>,
    stamp: Option<(SystemTime, u64)>,
    faults_seen: usize,
    rx: mpsc::Receiver<Fault>,
    tx: mpsc::Sender<Fault>,
}

impl SimulatedSource {
    /// From an in-memory inventory (marked simulated).
    pub fn new(mut inventory: Inventory) -> Self {
        inventory.simulated = true;
        inventory.normalize();
        let (tx, rx) = mpsc::channel();
        Self {
            inventory,
            file: None,
            stamp: None,
            faults_seen: 0,
            rx,
            tx,
        }
    }

    /// From a YAML/JSON file. Faults already listed in the file at start are reported on the
    /// first poll.
    pub fn from_file(path: &Path) -> Result<Self, SourceError> {
        let text = read(path)?;
        let inventory = Inventory::from_simulate_str(&text)?;
        let mut s = Self::new(inventory);
        s.file = Some(path.to_owned());
        Ok(s)
    }

    /// A handle to inject faults.
    pub fn injector(&self) -> FaultInjector {
        FaultInjector(self.tx.clone())
    }

    fn file_faults(&mut self) -> Result<Vec<Fault>, SourceError> {
        let Some(path) = &self.file else {
            return Ok(Vec::new());
        };
        let meta = std::fs::metadata(path).map_err(|error| SourceError::SimulateIo {
            path: path.display().to_string(),
            error,
        })?;
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if self.stamp == Some(stamp) {
            return Ok(Vec::new());
        }
        self.stamp = Some(stamp);
        let text = read(path)?;
        let parsed: SimFaults = serde_yaml::from_str(&text).map_err(SimulateFileError::from)?;
        let new: Vec<Fault> = parsed
            .faults
            .iter()
            .skip(self.faults_seen)
            .filter_map(SimFault::to_fault)
            .collect();
        self.faults_seen = self.faults_seen.max(parsed.faults.len());
        Ok(new)
    }
}

fn read(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path).map_err(|error| SourceError::SimulateIo {
        path: path.display().to_string(),
        error,
    })
}

impl GpuSource for SimulatedSource {
    fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    fn poll(&mut self, wait: Duration) -> Result<Vec<Fault>, SourceError> {
        let mut out = self.file_faults()?;
        if out.is_empty() {
            match self.rx.recv_timeout(wait) {
                Ok(f) => out.push(f),
                Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
            }
        }
        out.extend(self.rx.try_iter());
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = "gpus:\n  - {uuid: GPU-a, name: T4, memoryMib: 15360, computeCapability: \"7.5\"}\n";

    #[test]
    fn file_faults_are_reported_once_and_appended_ones_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.yaml");
        std::fs::write(&path, format!("{FILE}faults:\n  - {{uuid: GPU-a, xid: 79}}\n")).unwrap();
        let mut s = SimulatedSource::from_file(&path).unwrap();
        assert!(s.inventory().simulated);
        let first = s.poll(Duration::ZERO).unwrap();
        assert_eq!(
            first,
            vec![Fault {
                uuid: "GPU-a".into(),
                kind: FaultKind::Xid(79)
            }]
        );
        assert!(s.poll(Duration::ZERO).unwrap().is_empty(), "not reported twice");
        let more = format!(
            "{FILE}faults:\n  - {{uuid: GPU-a, xid: 79}}\n  - {{uuid: GPU-a, doubleBitEcc: 3}}\n  - {{uuid: GPU-a, reset: nvidia-smi -r}}\n"
        );
        std::fs::write(&path, more).unwrap();
        let second = s.poll(Duration::ZERO).unwrap();
        assert_eq!(
            second,
            vec![
                Fault {
                    uuid: "GPU-a".into(),
                    kind: FaultKind::DoubleBitEcc { total: 3 }
                },
                Fault {
                    uuid: "GPU-a".into(),
                    kind: FaultKind::Reset("nvidia-smi -r".into())
                }
            ]
        );
    }

    #[test]
    fn injector_wakes_a_waiting_poll() {
        let mut s = SimulatedSource::new(Inventory::from_simulate_str(FILE).unwrap());
        let inj = s.injector();
        let t = std::thread::spawn(move || {
            inj.inject(Fault {
                uuid: "GPU-a".into(),
                kind: FaultKind::Xid(48),
            })
        });
        let got = s.poll(Duration::from_secs(30)).unwrap();
        assert!(t.join().unwrap());
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn missing_or_bad_file_is_a_clear_error() {
        let err = SimulatedSource::from_file(Path::new("/nonexistent/inv.yaml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/inv.yaml"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "gpus: 3").unwrap();
        assert!(matches!(
            SimulatedSource::from_file(&path),
            Err(SourceError::SimulateFile(_))
        ));
    }
}
