//! How a `ComputeService` replaces its replicas when its template changes: the bounds of a
//! Deployment's rolling update (`maxSurge`, `maxUnavailable`), resolved against the
//! desired replica count.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A count, or a percentage of the desired replicas (`"25%"`), as Kubernetes' `IntOrString`.
///
/// Any integer or string deserializes (the API server admits them under
/// `x-kubernetes-int-or-string`), so one bad value never makes the object unreadable to
/// the operator; [`IntOrPercent::check`] says what is wrong with it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrPercent {
    /// A number of replicas.
    Count(i64),
    /// A percentage of the desired replicas, such as `"25%"`.
    Text(String),
}

impl JsonSchema for IntOrPercent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrPercent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The structural spelling of Kubernetes' IntOrString (the API server admits an
        // integer or a string); the value's range is checked by `check`. Not nullable
        // (kube would add `nullable: true` to an optional int-or-string): the API server
        // then drops a `null` and applies the default, and the operator never reads one.
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "nullable": false
        })
    }
}

impl IntOrPercent {
    /// The value as a count or a percentage, or what is wrong with it (`max_percent`
    /// bounds a percentage).
    pub fn check(&self, max_percent: Option<u32>) -> Result<Amount, String> {
        match self {
            Self::Count(n) => u32::try_from(*n)
                .map(Amount::Count)
                .map_err(|_| format!("{n} is not a count of replicas (0 or more)")),
            Self::Text(t) => {
                let pct = t
                    .strip_suffix('%')
                    .filter(|d| !d.is_empty() && d.len() <= 4 && d.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|d| d.parse::<u32>().ok())
                    .ok_or_else(|| format!("{t:?} is neither a count nor a percentage such as \"25%\""))?;
                match max_percent {
                    Some(max) if pct > max => Err(format!("{t:?} is more than {max}%")),
                    _ => Ok(Amount::Percent(pct)),
                }
            }
        }
    }
}

/// A checked [`IntOrPercent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// Replicas.
    Count(u32),
    /// Percent of the desired replicas.
    Percent(u32),
}

impl Amount {
    /// Zero whatever the replica count (`0` or `0%`).
    pub fn is_zero(self) -> bool {
        matches!(self, Self::Count(0) | Self::Percent(0))
    }

    /// Replicas, for `desired` replicas; a percentage rounds up or down.
    pub fn of(self, desired: u32, round_up: bool) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::Percent(p) => {
                let scaled = u64::from(desired) * u64::from(p);
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }
}

/// The bounds of a rollout (a template change). The defaults keep every replica serving
/// and start the whole new revision at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Replicas started above `replicas` while a rollout runs: a count, or a percentage of
    /// `replicas` (rounded up). Each is a replica's GPUs held, and billed, until an old
    /// replica retires. Default `100%`: the whole new revision at once; `1` rolls one
    /// replica at a time, for fleets without spare GPUs.
    #[serde(default = "hundred_percent")]
    pub max_surge: IntOrPercent,
    /// Ready replicas a rollout may take away below `replicas`: a count, or a percentage
    /// (rounded down), at most `100%`. Default 0. Both 0 would never progress: the service
    /// is then refused (`Stalled=InvalidSpec`).
    #[serde(default = "zero")]
    pub max_unavailable: IntOrPercent,
    /// Seconds the service may go without progress (a spec change, or one more ready
    /// replica of the current template) while short of its desired state before it is
    /// reported stuck: `Stalled=True`, reason `ProgressDeadlineExceeded`, naming a replica
    /// that is not ready and why. Nothing is rolled back: the old replicas keep serving,
    /// and the next progress clears it. Default 600, as a Deployment's.
    #[serde(default = "ten_minutes")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: u32,
}

fn hundred_percent() -> IntOrPercent {
    IntOrPercent::Text("100%".to_owned())
}

fn zero() -> IntOrPercent {
    IntOrPercent::Count(0)
}

fn ten_minutes() -> u32 {
    600
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            max_surge: hundred_percent(),
            max_unavailable: zero(),
            progress_deadline_seconds: ten_minutes(),
        }
    }
}

impl Rollout {
    /// The checked values, or the field errors (`spec.rollout.…`, what is wrong).
    pub fn check(&self) -> Result<(Amount, Amount), Vec<(&'static str, String)>> {
        let surge = self.max_surge.check(None);
        let unavailable = self.max_unavailable.check(Some(100));
        let mut errors: Vec<(&'static str, String)> = [
            ("spec.rollout.maxSurge", surge.as_ref().err()),
            ("spec.rollout.maxUnavailable", unavailable.as_ref().err()),
        ]
        .into_iter()
        .filter_map(|(f, e)| Some((f, e?.clone())))
        .collect();
        if matches!((&surge, &unavailable), (Ok(s), Ok(u)) if s.is_zero() && u.is_zero()) {
            errors.push((
                "spec.rollout.maxUnavailable",
                "may not be 0 when maxSurge is 0: the rollout could never start a replica".to_owned(),
            ));
        }
        if self.progress_deadline_seconds == 0 {
            errors.push((
                "spec.rollout.progressDeadlineSeconds",
                "must be at least 1".to_owned(),
            ));
        }
        match (surge, unavailable) {
            (Ok(s), Ok(u)) if errors.is_empty() => Ok((s, u)),
            _ => Err(errors),
        }
    }

    /// `(surge, unavailable)` in replicas for `desired` replicas, as a Deployment resolves
    /// them: surge rounds up, unavailable down, and when both come to 0 (a percentage of a
    /// few replicas), one replica may be unavailable so the rollout still moves. `None`
    /// when the values are invalid ([`Rollout::check`]).
    pub fn bounds(&self, desired: u32) -> Option<(u32, u32)> {
        let (s, u) = self.check().ok()?;
        let (surge, unavailable) = (s.of(desired, true), u.of(desired, false).min(desired));
        Some(if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        })
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
