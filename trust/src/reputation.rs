//! The provider reputation score (0–100) that placement weighs.
//!
//! ```text
//! U = uptime: exponentially weighted share of the hub's probes the member answered
//! J = (completed + 1) / (completed + failed_by_provider + 2)      job outcomes, Laplace prior
//! V = (verified + 1) / (verified + failed + 2)                     verification results
//! score = 100 × (0.40·U + 0.35·J + 0.25·V) × (0.5 if evidence of a lie is open, else 1)
//! ```
//! A new provider (no history) starts near 50 + its uptime share, so newcomers are
//! placed, but below proven ones. "Failed by provider" counts attempts lost to the
//! provider (it vanished, a node or GPU failed), never the job's own errors.

/// Weight of one probe in the uptime average (≈ the last 1/α probes matter).
pub const UPTIME_ALPHA: f64 = 0.01;

/// What the score is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Inputs {
    /// Uptime share, 0..=1.
    pub uptime: f64,
    /// Attempts that completed on the provider.
    pub jobs_completed: u64,
    /// Attempts lost because of the provider.
    pub jobs_failed_by_provider: u64,
    /// GPUs that passed the last challenge (and are unique).
    pub gpus_verified: u32,
    /// GPUs that failed it (any reason but "no band").
    pub gpus_failed: u32,
    /// Evidence of a lie (wrong result, impossible timing, duplicate) is open.
    pub evidence_open: bool,
}

/// The next uptime average after one probe.
pub fn uptime_after(previous: Option<f64>, answered: bool) -> f64 {
    let x = if answered { 1.0 } else { 0.0 };
    match previous {
        // A first probe sets the average; no history to weigh it against.
        None => x,
        Some(p) => (p.clamp(0.0, 1.0) * (1.0 - UPTIME_ALPHA) + x * UPTIME_ALPHA).clamp(0.0, 1.0),
    }
}

/// The score, 0..=100.
pub fn score(i: &Inputs) -> f64 {
    let ratio = |good: u64, bad: u64| (good as f64 + 1.0) / ((good + bad) as f64 + 2.0);
    let u = i.uptime.clamp(0.0, 1.0);
    let j = ratio(i.jobs_completed, i.jobs_failed_by_provider);
    let v = ratio(u64::from(i.gpus_verified), u64::from(i.gpus_failed));
    let penalty = if i.evidence_open { 0.5 } else { 1.0 };
    (100.0 * (0.40 * u + 0.35 * j + 0.25 * v) * penalty).clamp(0.0, 100.0)
}

/// The score as status shows it: a decimal with one fractional digit.
pub fn format_score(s: f64) -> String {
    format!("{:.1}", s.clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_moves_the_score_both_ways() {
        let new = score(&Inputs {
            uptime: 1.0,
            ..Inputs::default()
        });
        assert!((new - 70.0).abs() < 1e-9, "{new}");
        let proven = score(&Inputs {
            uptime: 1.0,
            jobs_completed: 100,
            gpus_verified: 8,
            ..Inputs::default()
        });
        let flaky = score(&Inputs {
            uptime: 0.6,
            jobs_completed: 10,
            jobs_failed_by_provider: 30,
            gpus_verified: 8,
            ..Inputs::default()
        });
        assert!(
            proven > 90.0 && proven > new && flaky < new,
            "{proven} {new} {flaky}"
        );
        let liar = score(&Inputs {
            evidence_open: true,
            uptime: 1.0,
            jobs_completed: 100,
            gpus_verified: 8,
            ..Inputs::default()
        });
        assert!(liar < 50.0, "{liar}");
    }

    #[test]
    fn uptime_is_a_bounded_moving_average() {
        assert_eq!(uptime_after(None, false), 0.0);
        let mut u = uptime_after(None, true);
        for _ in 0..50 {
            u = uptime_after(Some(u), false);
        }
        assert!(u > 0.5 && u < 0.7, "{u}");
        assert_eq!(uptime_after(Some(7.0), true), 1.0);
        assert_eq!(format_score(99.96), "100.0");
        assert_eq!(format_score(-3.0), "0.0");
    }
}
