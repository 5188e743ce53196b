//! The health state machine: pure, time is an input.
//!
//! A GPU goes `Unhealthy` on a critical fault (a critical XID, a double-bit ECC error, the
//! GPU falling off the bus) and comes back to `Healthy` after a clean probation period with
//! no further critical fault. Every transition carries its cause so it can be logged and
//! pushed to kubelet. Unlike plugins whose health never recovers, a GPU that was reset or
//! had a one-off fault becomes schedulable again on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

/// The two states kubelet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Schedulable.
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
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Xid(x) => write!(f, "XID {x}"),
            FaultKind::DoubleBitEcc { total } => write!(f, "double-bit ECC error (volatile total {total})"),
            FaultKind::Lost(why) => write!(f, "GPU lost: {why}"),
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

/// Tuning of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// How long a GPU must stay free of critical faults to become healthy again.
    pub probation: Duration,
    /// XIDs that are not the GPU's fault and never make it unhealthy.
    pub ignored_xids: BTreeSet<u64>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            probation: Duration::from_secs(300),
            ignored_xids: APPLICATION_XIDS.into_iter().collect(),
        }
    }
}

impl HealthPolicy {
    /// Whether this fault makes a GPU unhealthy.
    pub fn is_critical(&self, kind: &FaultKind) -> bool {
        match kind {
            FaultKind::Xid(x) => !self.ignored_xids.contains(x),
            FaultKind::DoubleBitEcc { .. } | FaultKind::Lost(_) => true,
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

#[derive(Debug, Clone)]
struct Entry {
    health: Health,
    last_fault: Option<Instant>,
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
        let entries = uuids
            .into_iter()
            .map(|u| {
                (
                    u,
                    Entry {
                        health: Health::Healthy,
                        last_fault: None,
                    },
                )
            })
            .collect();
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

    /// Records a fault seen at `now`. Returns the transition it caused, if any. A critical
    /// fault on an already unhealthy GPU restarts its probation period; a non-critical one
    /// and a fault on an unknown GPU change nothing.
    pub fn record(&mut self, fault: &Fault, now: Instant) -> Option<Transition> {
        if !self.policy.is_critical(&fault.kind) {
            return None;
        }
        let entry = self.entries.get_mut(&fault.uuid)?;
        entry.last_fault = Some(now);
        if entry.health == Health::Unhealthy {
            return None;
        }
        entry.health = Health::Unhealthy;
        Some(Transition {
            uuid: fault.uuid.clone(),
            from: Health::Healthy,
            to: Health::Unhealthy,
            cause: fault.kind.to_string(),
        })
    }

    /// Advances time to `now`: every unhealthy GPU whose last critical fault is at least one
    /// probation period old becomes healthy again.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let probation = self.policy.probation;
        let mut out = Vec::new();
        for (uuid, e) in &mut self.entries {
            let Some(last) = e.last_fault else { continue };
            if e.health == Health::Unhealthy && now.saturating_duration_since(last) >= probation {
                e.health = Health::Healthy;
                e.last_fault = None;
                out.push(Transition {
                    uuid: uuid.clone(),
                    from: Health::Unhealthy,
                    to: Health::Healthy,
                    cause: format!(
                        "no critical fault for the {}s probation period",
                        probation.as_secs()
                    ),
                });
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn book(probation_s: u64) -> HealthBook {
        let policy = HealthPolicy {
            probation: Duration::from_secs(probation_s),
            ..HealthPolicy::default()
        };
        HealthBook::new(["GPU-a".to_string(), "GPU-b".to_string()], policy)
    }

    fn xid(uuid: &str, x: u64) -> Fault {
        Fault {
            uuid: uuid.into(),
            kind: FaultKind::Xid(x),
        }
    }

    #[test]
    fn critical_xid_makes_unhealthy_and_clean_probation_recovers() {
        let t0 = Instant::now();
        let mut b = book(60);
        let tr = b.record(&xid("GPU-a", 79), t0).expect("transition");
        assert_eq!((tr.from, tr.to), (Health::Healthy, Health::Unhealthy));
        assert!(tr.cause.contains("XID 79"), "cause: {}", tr.cause);
        assert_eq!(b.health("GPU-a"), Some(Health::Unhealthy));
        assert_eq!(b.health("GPU-b"), Some(Health::Healthy));
        assert!(
            b.tick(t0 + Duration::from_secs(59)).is_empty(),
            "still in probation"
        );
        let back = b.tick(t0 + Duration::from_secs(60));
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].from, back[0].to), (Health::Unhealthy, Health::Healthy));
        assert!(back[0].cause.contains("probation"));
        assert_eq!(b.health("GPU-a"), Some(Health::Healthy));
    }

    #[test]
    fn repeated_fault_restarts_probation() {
        let t0 = Instant::now();
        let mut b = book(60);
        b.record(&xid("GPU-a", 48), t0);
        assert_eq!(
            b.record(&xid("GPU-a", 48), t0 + Duration::from_secs(50)),
            None,
            "no second transition"
        );
        assert!(
            b.tick(t0 + Duration::from_secs(100)).is_empty(),
            "probation restarted at t=50"
        );
        assert_eq!(b.tick(t0 + Duration::from_secs(110)).len(), 1);
    }

    #[test]
    fn application_xids_and_unknown_gpus_change_nothing() {
        let t0 = Instant::now();
        let mut b = book(1);
        for x in APPLICATION_XIDS {
            assert_eq!(
                b.record(&xid("GPU-a", x), t0),
                None,
                "XID {x} is the application's fault"
            );
        }
        assert_eq!(b.record(&xid("GPU-zzz", 79), t0), None);
        assert_eq!(b.health("GPU-a"), Some(Health::Healthy));
        assert_eq!(b.health("GPU-zzz"), None);
    }

    #[test]
    fn double_bit_ecc_and_lost_gpu_are_critical() {
        let t0 = Instant::now();
        let mut b = book(10);
        let ecc = Fault {
            uuid: "GPU-a".into(),
            kind: FaultKind::DoubleBitEcc { total: 2 },
        };
        assert!(b.record(&ecc, t0).unwrap().cause.contains("double-bit ECC"));
        let lost = Fault {
            uuid: "GPU-b".into(),
            kind: FaultKind::Lost("gone".into()),
        };
        assert!(b.record(&lost, t0).unwrap().cause.contains("lost"));
        assert_eq!(
            b.snapshot(),
            vec![
                ("GPU-a".into(), Health::Unhealthy),
                ("GPU-b".into(), Health::Unhealthy)
            ]
        );
        assert_eq!(b.tick(t0 + Duration::from_secs(10)).len(), 2);
    }
}
