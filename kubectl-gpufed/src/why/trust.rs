//! Pure: what a provider's `Verified` condition says against a job, in `why`'s words.

use gpufed_api::GpuProvider;
use gpufed_api::conditions::{self, types};
use gpufed_operator::verification::plan::REASON_CHALLENGE_FAILED;

use crate::providers::provider_conditions;

/// Why the operator offers `p` no new jobs at all after a failed GPU challenge (its
/// `Verified` condition's reason is `ChallengeFailed`, whatever its status: as
/// `gpufed_operator::mapping` leaves it out), if it does.
pub(super) fn caught(p: &GpuProvider) -> Option<String> {
    let c = conditions::find(provider_conditions(p), types::VERIFIED)
        .filter(|c| c.reason == REASON_CHALLENGE_FAILED)?;
    let detail = match c.message.is_empty() {
        true => String::new(),
        false => format!(": {}", c.message),
    };
    Some(format!(
        "caught failing a GPU challenge (Verified={:?} {REASON_CHALLENGE_FAILED}{detail}): takes no new jobs",
        c.status
    ))
}

/// "not verified", and when some of the provider's GPUs are on probation (passed only
/// between challenge rounds: docs/trust.md), what its `Verified` condition says of them:
/// they count from the next round, so the job need not look elsewhere.
pub(super) fn not_verified(p: &GpuProvider) -> String {
    let probation = p
        .status
        .as_ref()
        .and_then(|s| s.verification.as_ref())
        .and_then(|v| v.probation_gpus)
        .unwrap_or(0);
    match conditions::find(provider_conditions(p), types::VERIFIED) {
        Some(c) if probation > 0 && !c.message.is_empty() => format!("not verified: {}", c.message),
        _ => "not verified".into(),
    }
}
