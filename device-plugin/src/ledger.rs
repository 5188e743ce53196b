//! "A GPU is never in two allocations": the plugin's own record of which GPUs it handed
//! out. Pure; the tonic layer calls it under a lock.
//!
//! kubelet already avoids double allocation, but it forgets on some restarts and a
//! misbehaving caller (or a race with a health change) must not get a GPU that is busy
//! or broken. A GPU leaves the ledger when [`Ledger::release`] or
//! [`Ledger::retain_in_use`] (fed from kubelet's PodResources view, or the node
//! simulator) says its container is gone. kubelet stays the authority: where its view
//! cannot confirm a claim, the service grants over it ([`Ledger::allocate_over`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::health::Health;

/// Identifies one successful `Allocate` container request.
pub type AllocationId = u64;

/// Why an allocation was refused. Nothing is recorded when any container fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Not a GPU of this node.
    #[error("unknown device {0}: not a GPU served by this plugin")]
    Unknown(String),
    /// Known but currently unhealthy.
    #[error("device {0} is unhealthy and cannot be allocated")]
    Unhealthy(String),
    /// Already held by another container (or twice in this request).
    #[error("device {id} is already allocated (allocation {holder})")]
    Busy {
        /// The GPU.
        id: String,
        /// The allocation holding it (0 when it is requested twice in this request).
        holder: AllocationId,
    },
    /// A container asked for no device.
    #[error("a container request lists no device")]
    Empty,
}

/// Which GPU is held by which allocation.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    held: BTreeMap<String, AllocationId>,
    next: AllocationId,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self {
            held: BTreeMap::new(),
            next: 1,
        }
    }

    /// Validates every container request of one `Allocate` call, then records them all
    /// (or nothing). `health` answers for known GPUs and `None` for unknown ones. A GPU
    /// the ledger holds is refused.
    pub fn allocate<F>(
        &mut self,
        containers: &[Vec<String>],
        health: F,
    ) -> Result<Vec<AllocationId>, AllocError>
    where
        F: Fn(&str) -> Option<Health>,
    {
        self.allocate_with(containers, health, true)
    }

    /// Like [`Ledger::allocate`], but a GPU the ledger holds is granted all the same and
    /// moves to the new allocation: for a claim kubelet's view cannot confirm. Unknown,
    /// unhealthy and empty requests, and a GPU twice in one request, are still refused.
    pub fn allocate_over<F>(
        &mut self,
        containers: &[Vec<String>],
        health: F,
    ) -> Result<Vec<AllocationId>, AllocError>
    where
        F: Fn(&str) -> Option<Health>,
    {
        self.allocate_with(containers, health, false)
    }

    fn allocate_with<F>(
        &mut self,
        containers: &[Vec<String>],
        health: F,
        claims_refuse: bool,
    ) -> Result<Vec<AllocationId>, AllocError>
    where
        F: Fn(&str) -> Option<Health>,
    {
        let mut in_request = BTreeSet::new();
        for ids in containers {
            if ids.is_empty() {
                return Err(AllocError::Empty);
            }
            for id in ids {
                match health(id) {
                    None => return Err(AllocError::Unknown(id.clone())),
                    Some(Health::Unhealthy) => return Err(AllocError::Unhealthy(id.clone())),
                    Some(Health::Healthy) => {}
                }
                if let Some(&holder) = self.held.get(id).filter(|_| claims_refuse) {
                    return Err(AllocError::Busy {
                        id: id.clone(),
                        holder,
                    });
                }
                if !in_request.insert(id.as_str()) {
                    return Err(AllocError::Busy {
                        id: id.clone(),
                        holder: 0,
                    });
                }
            }
        }
        let mut out = Vec::with_capacity(containers.len());
        for ids in containers {
            let aid = self.next.max(1);
            self.next = aid + 1;
            for id in ids {
                self.held.insert(id.clone(), aid);
            }
            out.push(aid);
        }
        Ok(out)
    }

    /// Which allocation holds a GPU.
    pub fn holder(&self, id: &str) -> Option<AllocationId> {
        self.held.get(id).copied()
    }

    /// GPUs currently held.
    pub fn held(&self) -> BTreeSet<String> {
        self.held.keys().cloned().collect()
    }

    /// Frees the given GPUs; returns those that were held.
    pub fn release<'a, I: IntoIterator<Item = &'a str>>(&mut self, ids: I) -> Vec<String> {
        ids.into_iter()
            .filter(|id| self.held.remove(*id).is_some())
            .map(str::to_owned)
            .collect()
    }

    /// Records GPUs that containers already hold (kubelet's PodResources after a plugin
    /// restart) under one allocation; returns those newly recorded.
    pub fn adopt<'a, I: IntoIterator<Item = &'a str>>(&mut self, ids: I) -> Vec<String> {
        let aid = self.next.max(1);
        let adopted: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.held.contains_key(*id))
            .map(str::to_owned)
            .collect();
        if !adopted.is_empty() {
            self.next = aid + 1;
            for id in &adopted {
                self.held.insert(id.clone(), aid);
            }
        }
        adopted
    }

    /// The allocation the next `Allocate` will record: taken before reading which GPUs
    /// are in use, and handed to [`Ledger::retain_in_use`].
    pub fn mark(&self) -> AllocationId {
        self.next.max(1)
    }

    /// Keeps only GPUs that are still in use by some container, as a view read after
    /// `mark` ([`Ledger::mark`]) says; returns those freed. GPUs allocated since the mark
    /// are kept whatever the view says: it may have been read before they were granted,
    /// and freeing them would hand them to a second container.
    pub fn retain_in_use(&mut self, in_use: &BTreeSet<String>, mark: AllocationId) -> Vec<String> {
        let freed: Vec<String> = self
            .held
            .iter()
            .filter(|&(k, &holder)| holder < mark && !in_use.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        for f in &freed {
            self.held.remove(f);
        }
        freed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(id: &str) -> Option<Health> {
        match id {
            "GPU-bad" => Some(Health::Unhealthy),
            id if id.starts_with("GPU-") => Some(Health::Healthy),
            _ => None,
        }
    }

    fn v(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adopted_gpus_are_held_once_and_freed_like_others() {
        let mut l = Ledger::new();
        l.allocate(&[v(&["GPU-0"])], h).unwrap();
        assert_eq!(
            l.adopt(["GPU-0", "GPU-3", "GPU-4"]),
            v(&["GPU-3", "GPU-4"]),
            "GPU-0 was held already"
        );
        assert!(matches!(
            l.allocate(&[v(&["GPU-3"])], h),
            Err(AllocError::Busy { .. })
        ));
        assert!(l.adopt(std::iter::empty()).is_empty());
        let freed = l.retain_in_use(&["GPU-0".to_owned()].into(), l.mark());
        assert_eq!(freed, v(&["GPU-3", "GPU-4"]));
        assert!(l.allocate(&[v(&["GPU-3"])], h).is_ok());
    }

    #[test]
    fn a_gpu_is_never_in_two_allocations() {
        let mut l = Ledger::new();
        let a = l.allocate(&[v(&["GPU-0", "GPU-1"])], h).unwrap();
        assert_eq!(l.holder("GPU-1"), Some(a[0]));
        let err = l.allocate(&[v(&["GPU-2", "GPU-1"])], h).unwrap_err();
        assert_eq!(
            err,
            AllocError::Busy {
                id: "GPU-1".into(),
                holder: a[0]
            }
        );
        assert_eq!(l.holder("GPU-2"), None, "a refused request records nothing");
        let twice = l.allocate(&[v(&["GPU-3"]), v(&["GPU-3"])], h).unwrap_err();
        assert!(matches!(twice, AllocError::Busy { holder: 0, .. }));
        assert_eq!(l.held(), [v(&["GPU-0", "GPU-1"])].concat().into_iter().collect());
    }

    #[test]
    fn unknown_unhealthy_and_empty_are_refused() {
        let mut l = Ledger::new();
        assert_eq!(
            l.allocate(&[v(&["nope"])], h),
            Err(AllocError::Unknown("nope".into()))
        );
        assert_eq!(
            l.allocate(&[v(&["GPU-bad"])], h),
            Err(AllocError::Unhealthy("GPU-bad".into()))
        );
        assert_eq!(l.allocate(&[vec![]], h), Err(AllocError::Empty));
        assert!(l.held().is_empty());
    }

    #[test]
    fn a_gpu_granted_while_the_in_use_view_was_read_is_not_freed_by_it() {
        let mut l = Ledger::new();
        let one = |id: &str| vec![vec![id.to_owned()]];
        l.allocate(&one("GPU-0"), h).unwrap();
        // A reclaim takes its mark and reads PodResources: GPU-0's pod is gone by then.
        let mark = l.mark();
        let view: BTreeSet<String> = BTreeSet::new();
        // Meanwhile kubelet admits another pod: GPU-1 is granted, after the view was read.
        l.allocate(&one("GPU-1"), h).unwrap();
        assert_eq!(l.retain_in_use(&view, mark), v(&["GPU-0"]));
        // GPU-1 stays held: a third container asking for it is refused.
        assert!(matches!(
            l.allocate(&one("GPU-1"), h),
            Err(AllocError::Busy { .. })
        ));
        // The next view, read after the grant, decides for it.
        let mark = l.mark();
        assert_eq!(l.retain_in_use(&view, mark), v(&["GPU-1"]));
    }

    #[test]
    fn allocate_over_grants_a_held_gpu_but_refuses_what_is_never_allowed() {
        let mut l = Ledger::new();
        let first = l.allocate(&[v(&["GPU-0"])], h).unwrap();
        let over = l.allocate_over(&[v(&["GPU-0", "GPU-1"])], h).unwrap();
        assert_eq!(l.holder("GPU-0"), Some(over[0]), "the claim moved");
        assert_ne!(first, over);
        // A view read before the new grant does not free it.
        let mark = l.mark() - 1;
        assert!(l.retain_in_use(&BTreeSet::new(), mark).is_empty());
        assert_eq!(
            l.allocate_over(&[v(&["GPU-bad"])], h),
            Err(AllocError::Unhealthy("GPU-bad".into()))
        );
        assert_eq!(
            l.allocate_over(&[v(&["nope"])], h),
            Err(AllocError::Unknown("nope".into()))
        );
        assert!(matches!(
            l.allocate_over(&[v(&["GPU-2"]), v(&["GPU-2"])], h),
            Err(AllocError::Busy { holder: 0, .. })
        ));
        assert!(matches!(
            l.allocate(&[v(&["GPU-1"])], h),
            Err(AllocError::Busy { .. })
        ));
    }

    #[test]
    fn release_and_reconcile_make_gpus_allocatable_again() {
        let mut l = Ledger::new();
        l.allocate(&[v(&["GPU-0"]), v(&["GPU-1"])], h).unwrap();
        assert_eq!(l.release(["GPU-0", "GPU-9"]), v(&["GPU-0"]));
        assert!(l.allocate(&[v(&["GPU-0"])], h).is_ok());
        let in_use: BTreeSet<String> = v(&["GPU-0"]).into_iter().collect();
        assert_eq!(l.retain_in_use(&in_use, l.mark()), v(&["GPU-1"]));
        assert!(l.allocate(&[v(&["GPU-1"])], h).is_ok());
        assert!(l.allocate(&[v(&["GPU-0"])], h).is_err());
    }
}
