//! A `ComputeService`'s disruption budget: how many of its ready replicas preemption may
//! take — a PodDisruptionBudget for the replicas, resolved against the desired count.
//!
//! Only voluntary disruptions are bounded: a higher-priority job evicting replicas. A
//! provider that vanishes is not asked, and a rollout or scale-down follows `rollout`
//! and `replicas`, as a Deployment's do beside a PDB.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::IntOrPercent;

/// Exactly one of `minAvailable` and `maxUnavailable`, as a PodDisruptionBudget's.
///
/// Atomic for server-side apply: switching from one field to the other replaces the
/// budget whole, so two field managers never leave both set (which the API refuses).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct DisruptionBudget {
    /// Ready replicas that must keep serving: a count, or a percentage of `replicas`
    /// (rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrPercent>,
    /// Replicas that may be unavailable, counting those already not ready: a count, or a
    /// percentage of `replicas` (rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// The field path of the budget.
pub const FIELD: &str = "spec.disruptionBudget";

impl DisruptionBudget {
    /// The fewest ready replicas that must stay for `desired` replicas, or the field
    /// errors (`spec.disruptionBudget.…`, what is wrong).
    pub fn min_healthy(&self, desired: u32) -> Result<u32, Vec<(&'static str, String)>> {
        match (&self.min_available, &self.max_unavailable) {
            (Some(_), Some(_)) => Err(vec![(
                FIELD,
                "set one of minAvailable and maxUnavailable, not both".to_owned(),
            )]),
            (None, None) => Err(vec![(
                FIELD,
                "set minAvailable or maxUnavailable (or leave the budget out)".to_owned(),
            )]),
            (Some(min), None) => min
                .check(Some(100))
                .map(|a| a.of(desired, true))
                .map_err(|e| vec![("spec.disruptionBudget.minAvailable", e)]),
            (None, Some(max)) => max
                .check(Some(100))
                .map(|a| desired.saturating_sub(a.of(desired, true)))
                .map_err(|e| vec![("spec.disruptionBudget.maxUnavailable", e)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(v: serde_json::Value) -> DisruptionBudget {
        serde_json::from_value(v).expect("budget")
    }

    #[test]
    fn resolves_as_a_pod_disruption_budget() {
        let min = |v: serde_json::Value, desired| {
            budget(serde_json::json!({"minAvailable": v})).min_healthy(desired)
        };
        let max = |v: serde_json::Value, desired| {
            budget(serde_json::json!({"maxUnavailable": v})).min_healthy(desired)
        };
        assert_eq!(min(2.into(), 3), Ok(2));
        // A count above the replicas protects them all (and lets none go).
        assert_eq!(min(5.into(), 3), Ok(5));
        // Percentages round up, for both fields (the disruption controller's rounding).
        assert_eq!(min("50%".into(), 3), Ok(2));
        assert_eq!(max("50%".into(), 3), Ok(1));
        assert_eq!(max(1.into(), 3), Ok(2));
        assert_eq!(max(4.into(), 3), Ok(0));
        assert_eq!(max("0%".into(), 4), Ok(4));
        assert_eq!(min("100%".into(), 0), Ok(0));
    }

    #[test]
    fn bad_budgets_name_the_field() {
        let err = |v: serde_json::Value| budget(v).min_healthy(3).expect_err("refused");
        assert_eq!(err(serde_json::json!({}))[0].0, "spec.disruptionBudget");
        assert_eq!(
            err(serde_json::json!({"minAvailable": 1, "maxUnavailable": 1}))[0].0,
            "spec.disruptionBudget"
        );
        let e = err(serde_json::json!({"minAvailable": -1}));
        assert_eq!(e[0].0, "spec.disruptionBudget.minAvailable");
        assert!(e[0].1.contains("-1"), "{e:?}");
        let e = err(serde_json::json!({"maxUnavailable": "150%"}));
        assert_eq!(e[0].0, "spec.disruptionBudget.maxUnavailable");
        assert!(e[0].1.contains("100%"), "{e:?}");
        assert_eq!(
            err(serde_json::json!({"maxUnavailable": "one"}))[0].0,
            "spec.disruptionBudget.maxUnavailable"
        );
    }
}
