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
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Xid(x) => write!(f, "XID {x}"),
            FaultKind::DoubleBitEcc { total } => write!(f, "double-bit ECC error (volatile total {total})"),
            FaultKind::Lost(why) => write!(f, "GPU lost: {why}"),
            FaultKind::Reset(why) => write!(f, "GPU reset: {why}"),
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
/// ECC error. Other critical XIDs (74 NVLink error, 92 high single-bit ECC rate, 94
/// contained ECC error, …) clear after the clean probation.
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
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            probation: Duration::from_secs(300),
            ignored_xids: APPLICATION_XIDS.into_iter().collect(),
            reset_xids: RESET_XIDS.into_iter().collect(),
        }
    }
}

impl HealthPolicy {
    /// Whether this fault makes a GPU unhealthy.
    pub fn is_critical(&self, kind: &FaultKind) -> bool {
        match kind {
            FaultKind::Xid(x) => !self.ignored_xids.contains(x),
            FaultKind::DoubleBitEcc { .. } | FaultKind::Lost(_) => true,
            FaultKind::Reset(_) => false,
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
                FaultKind::Reset(_) => false,
            }
    }
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
    /// The reset that cleared such a fault, named in the recovery's cause.
    reset_seen: Option<String>,
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

    /// Records a fault seen at `now`. Returns the transition it caused, if any. A critical
    /// fault on an already unhealthy GPU restarts its probation period (and one that needs
    /// a reset makes it wait for one); a non-critical one and a fault on an unknown GPU
    /// change nothing. [`FaultKind::Reset`] ends the wait for a reset and starts the
    /// probation; on a GPU waiting for none it changes nothing.
    pub fn record(&mut self, fault: &Fault, now: Instant) -> Option<Transition> {
        let needs_reset = self.policy.needs_reset(&fault.kind);
        let critical = self.policy.is_critical(&fault.kind);
        let entry = self.entries.get_mut(&fault.uuid)?;
        if let FaultKind::Reset(why) = &fault.kind {
            if entry.awaiting_reset.take().is_some() {
                entry.reset_seen = Some(why.clone());
                entry.last_fault = Some(now);
            }
            return None;
        }
        if !critical {
            return None;
        }
        entry.last_fault = Some(now);
        if needs_reset {
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
mod tests;
