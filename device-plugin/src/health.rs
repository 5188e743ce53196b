//! The health state machine: pure, time is an input.
//!
//! A GPU goes `Unhealthy` on a critical fault (a critical XID, a double-bit ECC error, the
//! GPU falling off the bus) and comes back to `Healthy` after a clean probation period with
//! no further critical fault. Every transition carries its cause so it can be logged and
//! pushed to kubelet. Unlike plugins whose health never recovers, a GPU that was reset or
//! had a one-off fault becomes schedulable again on its own.
//!
//! Some faults leave the GPU broken until it is reset ([`HealthPolicy::needs_reset`]: a
//! double-bit ECC error, a lost GPU, the XIDs of [`RESET_XIDS`]). Silence proves nothing
//! for those — the volatile ECC counter that reported a DBE stays where it is until a
//! reset, so it never reports again — and a GPU handed back to kubelet after the
//! probation alone would run the next pod on broken memory. Such a fault clears only on
//! evidence of a reset that the source reports ([`FaultKind::Reset`]); the clean
//! probation runs from there.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The two states kubelet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// Schedulable.
    #[default]
    Healthy,
    /// Not schedulable; kubelet removes it from allocatable.
    Unhealthy,
}

impl Health {
    /// The string the device-plugin API uses (`"Healthy"` / `"Unhealthy"`).
    pub fn as_api_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Unhealthy => "Unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api_str())
    }
}

/// Something a GPU source observed on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// An XID error with its code.
    Xid(u64),
    /// Uncorrectable (double-bit) ECC errors: the volatile counter grew to `total`.
    DoubleBitEcc {
        /// Counter value after the increase.
        total: u64,
    },
    /// The GPU could not be queried any more (fell off the bus, driver reset…).
    Lost(String),
    /// Not a fault: evidence that the GPU was reset (its volatile uncorrected ECC count
    /// went down, which only a reset does, or a lost GPU answers again), with what showed
    /// it. It clears a fault that needs a reset; the clean probation runs from it.
    Reset(String),
    /// Not a fault: a GPU that was lost answers NVML again. That shows a reset only of a
    /// GPU that fell off the bus (a lost GPU, XID 79): it ends no other wait (an XID 64 or
    /// 119 GPU that was briefly unreachable may well not have been reset).
    Answering(String),
    /// A fault of an event whose GPU NVML could not name, given to a GPU that the read run
    /// at once afterwards found answering without a new uncorrectable ECC error
    /// ([`crate::events::fanned_out_faults`]): critical when the fault is, but it holds
    /// the GPU for the probation only, never until a reset — one unidentified XID 79 or
    /// 119 must not take every GPU of the node out until someone edits the reset file.
    Unattributed(Box<FaultKind>),
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Xid(x) => write!(f, "XID {x}"),
            FaultKind::DoubleBitEcc { total } => write!(f, "double-bit ECC error (volatile total {total})"),
            FaultKind::Lost(why) => write!(f, "GPU lost: {why}"),
            FaultKind::Reset(why) => write!(f, "GPU reset: {why}"),
            FaultKind::Answering(why) => write!(f, "GPU answers again: {why}"),
            FaultKind::Unattributed(kind) => write!(
                f,
                "{kind} on a GPU of the node NVML could not name (held for the probation only)"
            ),
        }
    }
}

/// A fault on a given GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// GPU UUID.
    pub uuid: String,
    /// What happened.
    pub kind: FaultKind,
}

/// XIDs caused by applications, not by the GPU (the list NVIDIA's plugin skips as well):
/// 13 graphics engine exception, 31 MMU fault, 43 GPU stopped processing, 45 preemptive
/// cleanup, 68 video processor exception, 109 context switch timeout.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// XIDs after which NVIDIA's XID catalog calls for a GPU reset: the GPU stays unhealthy
/// until the source sees one ([`FaultKind::Reset`]), however long it is quiet. 48
/// double-bit ECC error, 64 row-remapper / page-retirement recording failure, 79 fell off
/// the bus, 95 uncontained ECC error, 119 GSP RPC timeout, 120 GSP error, 140 unrecovered
/// ECC error. Other critical XIDs (74 NVLink error, 92 high single-bit ECC rate, …) clear
/// after the clean probation. 94 (contained ECC error) does too as an XID, but the error
/// also raises the volatile uncorrected ECC count, which the NVML source reports as a
/// double-bit ECC fault: on real hardware it typically holds the GPU until a reset.
pub const RESET_XIDS: [u64; 7] = [48, 64, 79, 95, 119, 120, 140];

/// Tuning of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// How long a GPU must stay free of critical faults to become healthy again.
    pub probation: Duration,
    /// XIDs that are not the GPU's fault and never make it unhealthy.
    pub ignored_xids: BTreeSet<u64>,
    /// Critical XIDs that only a reset clears ([`RESET_XIDS`]).
    pub reset_xids: BTreeSet<u64>,
    /// Where the GPUs waiting for a reset are kept across plugin restarts
    /// ([`crate::resetfile`]); `None`: in memory only (a restart forgets them).
    pub reset_file: Option<PathBuf>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            probation: Duration::from_secs(300),
            ignored_xids: APPLICATION_XIDS.into_iter().collect(),
            reset_xids: RESET_XIDS.into_iter().collect(),
            reset_file: None,
        }
    }
}

impl HealthPolicy {
    /// Whether this fault makes a GPU unhealthy.
    pub fn is_critical(&self, kind: &FaultKind) -> bool {
        match kind {
            FaultKind::Xid(x) => !self.ignored_xids.contains(x),
            FaultKind::DoubleBitEcc { .. } | FaultKind::Lost(_) => true,
            FaultKind::Reset(_) | FaultKind::Answering(_) => false,
            FaultKind::Unattributed(kind) => self.is_critical(kind),
        }
    }

    /// Whether this fault keeps a GPU unhealthy until it is reset: a critical XID of
    /// `reset_xids`, a double-bit ECC error (the memory stays bad, and the counter that
    /// showed it stays up), a lost GPU.
    pub fn needs_reset(&self, kind: &FaultKind) -> bool {
        self.is_critical(kind)
            && match kind {
                FaultKind::Xid(x) => self.reset_xids.contains(x),
                FaultKind::DoubleBitEcc { .. } | FaultKind::Lost(_) => true,
                FaultKind::Reset(_) | FaultKind::Answering(_) | FaultKind::Unattributed(_) => false,
            }
    }

    /// Whether a lost GPU answering again shows that this fault's GPU was reset: only for
    /// a GPU that fell off the bus (lost, XID 79), which answers nothing until reset.
    pub fn answering_ends(kind: &FaultKind) -> bool {
        matches!(kind, FaultKind::Lost(_) | FaultKind::Xid(79))
    }
}

/// A GPU's wait for a reset, as [`HealthBook::waits`] lists it and
/// [`HealthBook::restore_wait`] takes it back after a plugin restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The fault that needs the reset (its display form).
    pub cause: String,
    /// Whether the GPU answering again ends the wait ([`HealthPolicy::answering_ends`] of
    /// every fault of the wait).
    pub answering_ends: bool,
    /// The volatile uncorrected ECC count the last double-bit ECC fault of the wait
    /// reported (`None`: none above zero). Kept across plugin restarts so that a reset
    /// done while the plugin was down — `nvidia-smi -r` wants NVML clients such as the
    /// plugin stopped — shows as the count found lower at start.
    pub ecc_total: Option<u64>,
}

/// A change of health, with why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// GPU UUID.
    pub uuid: String,
    /// State before.
    pub from: Health,
    /// State after.
    pub to: Health,
    /// Human-readable cause (the fault, or the clean probation period).
    pub cause: String,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    health: Health,
    /// When the probation started: the last critical fault, or the reset that cleared one.
    last_fault: Option<Instant>,
    /// The fault that needs a reset, while no reset has been seen since it.
    awaiting_reset: Option<String>,
    /// Whether a lost GPU answering again ends that wait: true only when every fault of
    /// the wait was a GPU falling off the bus.
    answering_ends: bool,
    /// The reset that cleared such a fault, named in the recovery's cause.
    reset_seen: Option<String>,
    /// [`Wait::ecc_total`] of the wait.
    ecc_total: Option<u64>,
}

/// The health of every GPU of a node.
#[derive(Debug, Clone)]
pub struct HealthBook {
    policy: HealthPolicy,
    entries: BTreeMap<String, Entry>,
}

impl HealthBook {
    /// All GPUs start healthy.
    pub fn new<I: IntoIterator<Item = String>>(uuids: I, policy: HealthPolicy) -> Self {
        let entries = uuids.into_iter().map(|u| (u, Entry::default())).collect();
        Self { policy, entries }
    }

    /// The policy in force.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Current health of a GPU; `None` for an unknown UUID.
    pub fn health(&self, uuid: &str) -> Option<Health> {
        self.entries.get(uuid).map(|e| e.health)
    }

    /// `(uuid, health)` of every GPU, sorted by UUID.
    pub fn snapshot(&self) -> Vec<(String, Health)> {
        self.entries.iter().map(|(u, e)| (u.clone(), e.health)).collect()
    }

    /// The fault a GPU waits on a reset for, if it does (`None` too for an unknown UUID).
    pub fn awaiting_reset(&self, uuid: &str) -> Option<&str> {
        self.entries.get(uuid)?.awaiting_reset.as_deref()
    }

    /// Every GPU waiting for a reset, by UUID.
    pub fn waits(&self) -> BTreeMap<String, Wait> {
        self.entries
            .iter()
            .filter_map(|(u, e)| {
                let cause = e.awaiting_reset.clone()?;
                let answering_ends = e.answering_ends;
                Some((
                    u.clone(),
                    Wait {
                        cause,
                        answering_ends,
                        ecc_total: e.ecc_total,
                    },
                ))
            })
            .collect()
    }

    /// Puts back a wait for a reset saved before a plugin restart: the GPU is unhealthy
    /// until reset evidence, as if its fault had just been seen (no transition: the book
    /// is being set up). `false` for an unknown UUID.
    pub fn restore_wait(&mut self, uuid: &str, wait: &Wait) -> bool {
        let Some(e) = self.entries.get_mut(uuid) else {
            return false;
        };
        e.health = Health::Unhealthy;
        e.awaiting_reset = Some(wait.cause.clone());
        e.answering_ends = wait.answering_ends;
        e.ecc_total = wait.ecc_total.filter(|&n| n > 0);
        e.reset_seen = None;
        true
    }

    /// The volatile uncorrected ECC count of each GPU waiting for a reset that had one
    /// above zero: what a source compares its first reads with ([`crate::source::GpuSource::resume_ecc`]).
    pub fn waiting_ecc(&self) -> BTreeMap<String, u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.awaiting_reset.is_some())
            .filter_map(|(u, e)| Some((u.clone(), e.ecc_total?)))
            .collect()
    }

    /// Records a fault seen at `now`. Returns the transition it caused, if any. A critical
    /// fault on an already unhealthy GPU restarts its probation period (and one that needs
    /// a reset makes it wait for one); a non-critical one and a fault on an unknown GPU
    /// change nothing. [`FaultKind::Reset`] ends the wait for a reset and starts the
    /// probation; on a GPU waiting for none it changes nothing. [`FaultKind::Answering`]
    /// does the same, but only for a wait caused by the GPU falling off the bus.
    pub fn record(&mut self, fault: &Fault, now: Instant) -> Option<Transition> {
        let needs_reset = self.policy.needs_reset(&fault.kind);
        let critical = self.policy.is_critical(&fault.kind);
        let entry = self.entries.get_mut(&fault.uuid)?;
        let ends = match &fault.kind {
            FaultKind::Reset(why) => Some((why, true)),
            FaultKind::Answering(why) => Some((why, entry.answering_ends)),
            _ => None,
        };
        if let Some((why, ends)) = ends {
            if ends && entry.awaiting_reset.take().is_some() {
                entry.reset_seen = Some(why.clone());
                entry.last_fault = Some(now);
                entry.ecc_total = None;
            }
            return None;
        }
        if !critical {
            return None;
        }
        entry.last_fault = Some(now);
        if needs_reset {
            // Answering ends the wait only if it shows a reset for every fault of it.
            let answering = HealthPolicy::answering_ends(&fault.kind);
            entry.answering_ends = answering && (entry.awaiting_reset.is_none() || entry.answering_ends);
            if entry.awaiting_reset.is_none() {
                entry.ecc_total = None;
            }
            // An event's DBE carries no count (0): the count read last stays.
            if let FaultKind::DoubleBitEcc { total } = fault.kind
                && total > 0
            {
                entry.ecc_total = Some(total);
            }
            entry.awaiting_reset = Some(fault.kind.to_string());
            entry.reset_seen = None;
        }
        if entry.health == Health::Unhealthy {
            return None;
        }
        entry.health = Health::Unhealthy;
        let cause = if needs_reset {
            format!("{} (needs a GPU reset)", fault.kind)
        } else {
            fault.kind.to_string()
        };
        Some(Transition {
            uuid: fault.uuid.clone(),
            from: Health::Healthy,
            to: Health::Unhealthy,
            cause,
        })
    }

    /// Advances time to `now`: every unhealthy GPU that waits for no reset and whose last
    /// critical fault (or reset) is at least one probation period old becomes healthy
    /// again. A fault recorded at `now` itself is never cleared by this tick, whatever the
    /// probation: [`crate::service::PluginState::observe`] records and ticks with one
    /// `now`, and a fault must reach kubelet before it can clear.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let probation = self.policy.probation;
        let mut out = Vec::new();
        for (uuid, e) in &mut self.entries {
            let Some(last) = e.last_fault else { continue };
            if e.health == Health::Unhealthy
                && e.awaiting_reset.is_none()
                && now > last
                && now.saturating_duration_since(last) >= probation
            {
                e.health = Health::Healthy;
                e.last_fault = None;
                let clean = format!(
                    "no critical fault for the {}s probation period",
                    probation.as_secs()
                );
                out.push(Transition {
                    uuid: uuid.clone(),
                    from: Health::Unhealthy,
                    to: Health::Healthy,
                    cause: match e.reset_seen.take() {
                        Some(reset) => format!("GPU reset ({reset}), then {clean}"),
                        None => clean,
                    },
                });
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
pub(crate) mod tests;
