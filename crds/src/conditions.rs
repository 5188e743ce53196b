//! The condition vocabulary and the rules every controller follows when writing it,
//! so that kstatus (Flux), Argo CD and humans read the same health.
//!
//! kstatus rules we follow: `Reconciling` and `Stalled` are "abnormal-true" (present and
//! `True` only while something is wrong or in progress); `Ready` summarises; status is
//! current only when `observedGeneration` equals `metadata.generation`.

use crate::common::{Condition, ConditionStatus};

/// Condition types.
pub mod types {
    /// Summary: the object does what its spec asks.
    pub const READY: &str = "Ready";
    /// kstatus: the controller is still working towards the spec.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: the controller cannot make progress without a change (bad spec, ...).
    pub const STALLED: &str = "Stalled";
    /// Provider: the member cluster answered within its grace period.
    pub const REACHABLE: &str = "Reachable";
    /// Provider: its GPUs passed verification.
    pub const VERIFIED: &str = "Verified";
    /// Provider: enough stake is bonded for its verified GPUs.
    pub const STAKED: &str = "Staked";
    /// Job: a provider was chosen for the current attempt.
    pub const PLACED: &str = "Placed";
    /// Job: finished (status True for success, False for failure once terminal).
    pub const COMPLETE: &str = "Complete";
    /// Job: failed for good.
    pub const FAILED: &str = "Failed";
    /// Stake: deposit found on chain and matching the spec.
    pub const DEPOSIT_VERIFIED: &str = "DepositVerified";
}

/// kstatus' reading of an object's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Status reflects the current spec and the object is ready.
    Current,
    /// Work in progress, or status not yet written for the current generation.
    InProgress,
    /// The controller gave up until something changes.
    Failed,
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of this type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Inserts or updates a condition. `lastTransitionTime` keeps its old value unless the
/// status flips, so reconciling the same state twice writes the same bytes.
/// Returns whether anything changed.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Removes a condition by type (kstatus' abnormal-true conditions are removed, not set
/// False, when the abnormal state ends). Returns whether one was removed.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Builds a condition.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.into(),
        last_transition_time: now.to_owned(),
        observed_generation: generation,
    }
}

/// kstatus' health computation for an object with the given generation and status: a
/// stale `observedGeneration` is InProgress; else the first condition in the list that is
/// `Reconciling=True` (InProgress) or `Stalled=True` (Failed); else `Ready=True` is
/// Current and anything else InProgress. A controller that stalls must therefore remove
/// `Reconciling`, or its object never reads Failed.
pub fn health(generation: Option<i64>, observed_generation: Option<i64>, conditions: &[Condition]) -> Health {
    if generation.is_some() && observed_generation != generation {
        return Health::InProgress;
    }
    // As kstatus: the first of Reconciling and Stalled that is True, in list order, decides
    // (a leftover Reconciling=True before a Stalled=True reads InProgress, not Failed).
    let abnormal = conditions
        .iter()
        .filter(|c| c.status == ConditionStatus::True)
        .find_map(|c| match c.type_.as_str() {
            types::RECONCILING => Some(Health::InProgress),
            types::STALLED => Some(Health::Failed),
            _ => None,
        });
    if let Some(h) = abnormal {
        return h;
    }
    match find(conditions, types::READY) {
        Some(c) if c.status == ConditionStatus::True => Health::Current,
        _ => Health::InProgress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConditionStatus::{False, True};

    fn c(type_: &str, status: ConditionStatus, reason: &str, at: &str) -> Condition {
        condition(type_, status, reason, "", Some(1), at)
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut cs = vec![c("Ready", False, "Queued", "t1")];
        assert!(set(&mut cs, c("Ready", False, "NoProviderFits", "t2")));
        assert_eq!(cs[0].last_transition_time, "t1");
        assert_eq!(cs[0].reason, "NoProviderFits");
        assert!(
            !set(&mut cs, c("Ready", False, "NoProviderFits", "t3")),
            "same state is no change"
        );
        assert!(set(&mut cs, c("Ready", True, "Running", "t4")));
        assert_eq!(cs[0].last_transition_time, "t4");
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn kstatus_health() {
        let ready = vec![c("Ready", True, "Running", "t")];
        assert_eq!(health(Some(1), Some(1), &ready), Health::Current);
        assert_eq!(
            health(Some(2), Some(1), &ready),
            Health::InProgress,
            "stale generation"
        );
        let mut stalled = ready.clone();
        stalled.push(c("Stalled", True, "InvalidSpec", "t"));
        assert_eq!(health(Some(1), Some(1), &stalled), Health::Failed);
        let mut reconciling = ready.clone();
        reconciling.push(c("Reconciling", True, "Placing", "t"));
        assert_eq!(health(Some(1), Some(1), &reconciling), Health::InProgress);
        assert!(remove(&mut reconciling, "Reconciling"));
        assert_eq!(health(Some(1), Some(1), &reconciling), Health::Current);
        assert_eq!(health(Some(1), Some(1), &[]), Health::InProgress);
    }

    /// kstatus reads the first of Reconciling/Stalled that is True, in list order.
    #[test]
    fn kstatus_takes_the_first_abnormal_condition_in_list_order() {
        let reconciling = c("Reconciling", True, "Progressing", "t");
        let stalled = c("Stalled", True, "InvalidSpec", "t");
        let ready = c("Ready", False, "InvalidSpec", "t");
        let first_reconciling = [ready.clone(), reconciling.clone(), stalled.clone()];
        assert_eq!(health(Some(1), Some(1), &first_reconciling), Health::InProgress);
        let first_stalled = [ready, stalled, reconciling];
        assert_eq!(health(Some(1), Some(1), &first_stalled), Health::Failed);
        // A Reconciling that is not True is no work in progress.
        let done = [
            c("Reconciling", False, "Done", "t"),
            c("Ready", True, "Ready", "t"),
        ];
        assert_eq!(health(Some(1), Some(1), &done), Health::Current);
    }
}
