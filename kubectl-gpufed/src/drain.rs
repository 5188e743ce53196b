//! Pure: `provider cordon|uncordon|drain NAME`, as `kubectl cordon|uncordon|drain NODE`
//! for a GpuProvider. The plugin only sets the spec fields the operator acts on
//! (`spec.paused`: no new jobs; `spec.drain`: and move the running work elsewhere, within
//! the ComputeServices' disruption budgets) and follows the drain as the operator reports
//! it: `Ready=False`, reason `Draining` (what still runs, what holds it), then `Drained`.

use gpufed_api::GpuProvider;
use gpufed_api::conditions::{self, types};
use gpufed_operator::provider::plan::{REASON_DRAINED, REASON_DRAINING};
use kube::ResourceExt;

/// What to do with the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `spec.paused: true`: no new jobs.
    Cordon,
    /// `spec.paused: false`, `spec.drain: false`: new jobs again, evictions stop.
    Uncordon,
    /// `spec.drain: true`.
    Drain,
}

impl Action {
    /// The merge patch of the provider's spec.
    pub fn patch(self) -> serde_json::Value {
        match self {
            Self::Cordon => serde_json::json!({"spec": {"paused": true}}),
            Self::Uncordon => serde_json::json!({"spec": {"paused": false, "drain": false}}),
            Self::Drain => serde_json::json!({"spec": {"drain": true}}),
        }
    }

    /// The line kubectl prints for the node: `gpuprovider.gpufed.io/NAME cordoned`.
    pub fn done_line(self, provider: &str) -> String {
        let verb = match self {
            Self::Cordon => "cordoned",
            Self::Uncordon => "uncordoned",
            Self::Drain => "draining",
        };
        format!("gpuprovider.gpufed.io/{provider} {verb}\n")
    }
}

/// The patch of `provider drain`: `spec.drain: true`, and with `--deadline` also
/// `spec.drainDeadline` (checked here, so the error names the flag). Without the flag a
/// deadline already set stays as it is.
pub fn drain_patch(deadline: Option<&str>) -> Result<serde_json::Value, crate::error::Error> {
    let mut patch = Action::Drain.patch();
    if let Some(d) = deadline {
        gpufed_api::formats::parse_duration(d).map_err(|e| crate::error::Error::Flag {
            flag: "--deadline".into(),
            message: e.to_string(),
        })?;
        patch["spec"]["drainDeadline"] = serde_json::Value::String(d.to_owned());
    }
    Ok(patch)
}

/// Where a drain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing runs on the provider any more.
    Drained(String),
    /// Still evicting (or not observed yet): what it waits for.
    Draining(String),
    /// `spec.drain` is no longer set (someone uncordoned it).
    Cancelled,
}

/// The drain's state from the provider's spec and the operator's status.
pub fn state(p: &GpuProvider) -> State {
    let name = p.name_any();
    if !p.spec.drain {
        return State::Cancelled;
    }
    let st = p.status.as_ref();
    if st.and_then(|s| s.observed_generation) < p.metadata.generation {
        return State::Draining(format!(
            "waiting for the operator to observe the drain of gpuprovider/{name}"
        ));
    }
    let ready = st.and_then(|s| conditions::find(&s.conditions, types::READY));
    match ready {
        Some(c) if c.reason == REASON_DRAINED => {
            State::Drained(format!("gpuprovider.gpufed.io/{name} drained"))
        }
        Some(c) if c.reason == REASON_DRAINING => {
            State::Draining(format!("gpuprovider/{name}: {}", c.message))
        }
        // Unreachable, say: its work fails over instead; the line says what is known.
        Some(c) => State::Draining(format!(
            "gpuprovider/{name} not drained yet: Ready={:?} {}: {}",
            c.status, c.reason, c.message
        )),
        None => State::Draining(format!("gpuprovider/{name}: no status from the operator yet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{provider, ready_h100_status};

    fn with_ready(reason: &str, message: &str, observed: i64) -> GpuProvider {
        let mut p = provider("dc-east", Some(ready_h100_status(8, 8)));
        p.spec.drain = true;
        p.metadata.generation = Some(4);
        if let Some(st) = p.status.as_mut() {
            st.observed_generation = Some(observed);
            st.conditions[0].status = gpufed_api::ConditionStatus::False;
            st.conditions[0].reason = reason.into();
            st.conditions[0].message = message.into();
        }
        p
    }

    #[test]
    fn the_drain_is_followed_through_the_operators_ready_condition() {
        let msg = "spec.drain is true: no new jobs; evicting 2 running attempt(s)";
        assert_eq!(
            state(&with_ready("Draining", msg, 4)),
            State::Draining(format!("gpuprovider/dc-east: {msg}"))
        );
        assert_eq!(
            state(&with_ready("Drained", "", 4)),
            State::Drained("gpuprovider.gpufed.io/dc-east drained".into())
        );
        // A status of the generation before the drain says nothing about it.
        assert!(matches!(
            state(&with_ready("Drained", "", 3)),
            State::Draining(l) if l.contains("waiting for the operator")
        ));
        let mut undone = with_ready("Draining", msg, 4);
        undone.spec.drain = false;
        assert_eq!(state(&undone), State::Cancelled);
        assert!(matches!(
            state(&with_ready("HeartbeatLost", "no heartbeat for longer than 2m", 4)),
            State::Draining(l) if l.contains("Ready=False HeartbeatLost: no heartbeat")
        ));
    }

    #[test]
    fn each_action_patches_its_fields() {
        assert_eq!(
            Action::Cordon.patch(),
            serde_json::json!({"spec": {"paused": true}})
        );
        assert_eq!(
            Action::Uncordon.patch(),
            serde_json::json!({"spec": {"paused": false, "drain": false}})
        );
        assert_eq!(
            Action::Drain.patch(),
            serde_json::json!({"spec": {"drain": true}})
        );
        assert_eq!(drain_patch(None).ok(), Some(Action::Drain.patch()));
        assert_eq!(
            drain_patch(Some("4h")).ok(),
            Some(serde_json::json!({"spec": {"drain": true, "drainDeadline": "4h"}}))
        );
        for bad in ["", "4 hours", "30m1h"] {
            let e = drain_patch(Some(bad)).expect_err(bad).to_string();
            assert!(e.starts_with("invalid --deadline:"), "{e}");
        }
        assert_eq!(
            Action::Uncordon.done_line("p"),
            "gpuprovider.gpufed.io/p uncordoned\n"
        );
    }
}
