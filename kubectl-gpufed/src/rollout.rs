//! Pure: `rollout status` and `rollout restart` of a ComputeService, as `kubectl rollout`
//! does them for a Deployment (kubectl's own command knows only built-in kinds).
//!
//! The state is read from what the operator writes: `observedGeneration`, the counts, and
//! the kstatus conditions (`Ready` once no old replica serves and every replica of the
//! current template is ready; `Stalled` for a spec it refused or a rollout past
//! `spec.rollout.progressDeadlineSeconds`).

use gpufed_api::ComputeService;
use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions::{self, types};
use kube::ResourceExt;

/// The pod-template annotation `rollout restart` sets: a new template, so a new
/// revision, rolled out under `spec.rollout` like any other change.
pub const RESTARTED_AT: &str = "gpufed.io/restartedAt";

/// Where a service's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Every replica runs the current template and is ready.
    Done(String),
    /// Still rolling (or not yet observed): what it waits for.
    Waiting(String),
    /// The operator reports it stuck (`Stalled=True`): reason and message.
    Stuck {
        /// The `Stalled` reason, e.g. `ProgressDeadlineExceeded`.
        reason: String,
        /// The `Stalled` message.
        message: String,
    },
}

/// The rollout state of `svc`, with kubectl's wording for a Deployment.
pub fn state(svc: &ComputeService) -> State {
    let name = svc.name_any();
    let waiting = |what: String| {
        State::Waiting(format!(
            "Waiting for computeservice {name:?} rollout to finish: {what}"
        ))
    };
    let Some(st) = svc.status.as_ref() else {
        return waiting("the operator has not written its status yet...".into());
    };
    if svc.metadata.generation.is_some() && st.observed_generation < svc.metadata.generation {
        return waiting(format!(
            "the operator has not observed generation {} yet...",
            svc.metadata.generation.unwrap_or_default()
        ));
    }
    if let Some(c) =
        conditions::find(&st.conditions, types::STALLED).filter(|c| c.status == ConditionStatus::True)
    {
        return State::Stuck {
            reason: c.reason.clone(),
            message: c.message.clone(),
        };
    }
    let desired = svc.spec.replicas;
    if conditions::is_true(&st.conditions, types::READY) {
        return State::Done(format!("computeservice {name:?} successfully rolled out"));
    }
    let ready = conditions::find(&st.conditions, types::READY);
    if ready.is_some_and(|c| c.reason == gpufed_operator::service::plan::PAUSED) {
        return waiting(format!(
            "the rollout is paused (spec.paused); `kubectl gpufed rollout resume {name}` resumes it..."
        ));
    }
    if st.updated_replicas < desired {
        return waiting(format!(
            "{} out of {desired} new replicas have been updated...",
            st.updated_replicas
        ));
    }
    let old = st.replicas.saturating_sub(st.updated_replicas);
    if old > 0 {
        return waiting(format!("{old} old replicas are pending termination..."));
    }
    if svc.spec.min_ready_seconds > 0 && st.available_replicas < st.ready_replicas {
        return waiting(format!(
            "{} of {desired} updated replicas are available...",
            st.available_replicas.min(desired)
        ));
    }
    waiting(format!(
        "{} of {desired} updated replicas are ready...",
        st.ready_replicas.min(desired)
    ))
}

/// The merge patch of `rollout pause` (`true`) and `rollout resume` (`false`).
pub fn pause_patch(paused: bool) -> serde_json::Value {
    serde_json::json!({"spec": {"paused": paused}})
}

/// The merge patch `rollout restart` sends: [`RESTARTED_AT`] on the pod template, set to
/// `now` (RFC 3339).
pub fn restart_patch(now: &str) -> serde_json::Value {
    serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
