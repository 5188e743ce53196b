//! Pure: verification results, report problems and reputation inputs → the provider's
//! `status.verification`, `Verified` condition and `status.reputation`.

use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::AttemptOutcome;
use gpufed_api::provider::{GpuProviderStatus, Reputation, Verification, VerificationFailure};
use gpufed_api::{ComputeJob, conditions::condition};
use gpufed_trust::Failure;
use gpufed_trust::fleet::ProviderVerdict;
use gpufed_trust::reputation::{self, Inputs};

/// `Verified=False` reason when a GPU failed in a way only a lie explains.
pub const REASON_CHALLENGE_FAILED: &str = "ChallengeFailed";
/// `Verified=False` reason when GPUs are claimed by another node or provider too.
pub const REASON_DUPLICATE: &str = "DuplicateGpu";
/// Most failures listed in status.
const MAX_FAILURES: usize = 32;
/// Verified nodes listed in status (the CRD's bound); nodes past it read as unverified.
const MAX_VERIFIED_NODES: usize = 5000;

/// Completed and provider-caused lost attempts on `provider` over the jobs the hub holds.
pub fn job_outcomes<'a>(jobs: impl IntoIterator<Item = &'a ComputeJob>, provider: &str) -> (u64, u64) {
    let mut done = (0, 0);
    for a in jobs
        .into_iter()
        .filter_map(|j| j.status.as_ref())
        .flat_map(|s| &s.attempts)
        .filter(|a| a.provider == provider)
    {
        match a.outcome {
            AttemptOutcome::Succeeded => done.0 += 1,
            AttemptOutcome::ProviderLost | AttemptOutcome::NodeLost => done.1 += 1,
            _ => {}
        }
    }
    done
}

fn failure(uuid: &str, node: &str, f: &Failure) -> VerificationFailure {
    VerificationFailure {
        gpu_uuid: uuid.chars().take(64).collect(),
        reason: f.reason().to_owned(),
        message: format!("node {node}: {f}").chars().take(1024).collect(),
    }
}

/// The reputation inputs of a provider: its uptime average, its attempts' outcomes
/// (`(completed, lost by the provider)`, see [`job_outcomes`]) and its verification
/// verdict (GPUs without a band are neither good nor bad evidence, so they do not count).
pub fn reputation_inputs(v: &ProviderVerdict, uptime: f64, outcomes: (u64, u64)) -> Inputs {
    let judged_failures = v
        .failures
        .iter()
        .filter(|(_, g)| {
            g.failure
                .as_ref()
                .is_some_and(|f| !matches!(f, Failure::NoBand { .. }))
        })
        .count();
    Inputs {
        uptime,
        jobs_completed: outcomes.0,
        jobs_failed_by_provider: outcomes.1,
        gpus_verified: v.verified,
        gpus_failed: u32::try_from(judged_failures).unwrap_or(u32::MAX),
        evidence_open: !v.evidence_kinds().is_empty(),
    }
}

/// `Staked=Unknown` reason when `--stake-per-gpu` has no value in the stake mint's base units.
pub const REASON_INVALID_STAKE_POLICY: &str = "InvalidStakePolicy";

/// The stake a provider's verified GPUs require: `per_gpu` (stake-token units, decimal)
/// converted with the mint's `decimals`, times each model's factor (the product rounded up
/// in [`gpufed_settlement::stake::required_stake`], so a factor never lowers what is asked).
///
/// `Ok(None)` while the decimals are not known (the Stake controller has not read the mint
/// this term): a non-zero `per_gpu` has no base-unit value yet, and guessing one (0 was the
/// guess once) would call every provider covered. Zero is zero in any mint, so `"0"` is a
/// policy even then. `Err` when `per_gpu` is not a decimal or the mint cannot represent it
/// (`0.125` with 2 decimals, or more base units than a `u64` holds): it is never rounded,
/// least of all down to nothing.
pub fn stake_policy(
    per_gpu: &str,
    multipliers_bps: &std::collections::BTreeMap<String, u32>,
    decimals: Option<u8>,
) -> Result<Option<gpufed_settlement::stake::StakePolicy>, String> {
    let zero = gpufed_api::formats::parse_decimal(per_gpu)
        .map_err(|e| format!("--stake-per-gpu {per_gpu:?}: {e}"))?
        == 0;
    let base_per_gpu = match decimals {
        _ if zero => 0,
        None => return Ok(None),
        Some(d) => {
            crate::stake::plan::to_base_units(per_gpu, d).map_err(|e| format!("--stake-per-gpu {e}"))?
        }
    };
    Ok(Some(gpufed_settlement::stake::StakePolicy {
        base_per_gpu,
        multipliers_bps: multipliers_bps.clone(),
        default_multiplier_bps: 10_000,
    }))
}

/// Writes verification and reputation into `st`, as of `now`, the next challenge round
/// starting at `next_round` (both RFC 3339).
pub fn apply(
    st: &mut GpuProviderStatus,
    v: &ProviderVerdict,
    problems: &[(String, Failure)],
    rep: &Inputs,
    generation: Option<i64>,
    (now, next_round): (&str, &str),
) {
    let mut failures: Vec<VerificationFailure> = v
        .failures
        .iter()
        .filter_map(|(node, g)| Some(failure(&g.uuid, node, g.failure.as_ref()?)))
        .chain(problems.iter().map(|(node, f)| failure("", node, f)))
        .collect();
    // Lies first, then the rest; stable within each group.
    failures.sort_by_key(|f| {
        !matches!(
            f.reason.as_str(),
            "WrongDigest" | "BadOpening" | "ImpossiblyFast" | "DuplicateUuid" | "DuplicateSerial"
        )
    });
    failures.truncate(MAX_FAILURES);
    let old = st.verification.take().unwrap_or_default();
    let verified_nodes: Vec<String> = v
        .verified_nodes
        .iter()
        .take(MAX_VERIFIED_NODES)
        .cloned()
        .collect();
    let probation_gpus = (v.on_probation > 0).then_some(v.on_probation);
    let same = old.verified_gpus == v.verified
        && old.failed_gpus == v.failed
        && old.probation_gpus == probation_gpus
        && old.failures == failures
        && old.verified_nodes == verified_nodes;
    st.verification = Some(Verification {
        verified_gpus: v.verified,
        failed_gpus: v.failed,
        probation_gpus,
        last_run_time: if same {
            old.last_run_time
        } else {
            Some(now.to_owned())
        },
        next_round_time: Some(next_round.to_owned()),
        failures,
        verified_nodes,
    });
    let kinds = v.evidence_kinds();
    let first_lie = v.failures.iter().find_map(|(node, g)| {
        let f = g.failure.as_ref()?;
        (f.evidence_kind() == Some(gpufed_trust::verify::EVIDENCE_FAILED_CHALLENGE))
            .then(|| format!("node {node}, GPU {}: {f}", g.uuid))
    });
    let (status, reason, message) = if let Some(lie) = first_lie {
        (False, REASON_CHALLENGE_FAILED, lie)
    } else if kinds.contains(gpufed_trust::verify::EVIDENCE_DUPLICATE_GPU) && v.verified == 0 {
        (
            False,
            REASON_DUPLICATE,
            format!("{} GPUs are also claimed elsewhere in the fleet", v.failed),
        )
    } else if v.verified > 0 {
        let mut message = format!(
            "{} of {} GPUs verified",
            v.verified,
            v.verified + v.failed + v.on_probation
        );
        if v.on_probation > 0 {
            message.push_str(&format!(
                "; {} on probation until the round at {next_round}",
                v.on_probation
            ));
        }
        (True, "ChallengesPassed", message)
    } else if v.on_probation > 0 {
        (
            False,
            "OnProbation",
            format!(
                "{} GPUs passed between rounds; on probation, they count from the round at {next_round}",
                v.on_probation
            ),
        )
    } else {
        // A node that failed waits for the round (gpufed_trust::rounds): say when.
        let why = v
            .failures
            .first()
            .and_then(|(n, g)| {
                Some(format!(
                    "node {n}: {}; challenged again at the next round, {next_round}",
                    g.failure.as_ref()?
                ))
            })
            .or_else(|| problems.first().map(|(n, f)| format!("node {n}: {f}")))
            .unwrap_or_else(|| "no challenge answered yet".into());
        (False, "NotVerified", why)
    };
    conditions::set(
        &mut st.conditions,
        condition(types::VERIFIED, status, reason, message, generation, now),
    );
    st.reputation = Some(Reputation {
        score: reputation::format_score(reputation::score(rep)),
        uptime_percent: Some((rep.uptime.clamp(0.0, 1.0) * 100.0).round() as u32),
        jobs_completed: rep.jobs_completed,
        jobs_failed_by_provider: rep.jobs_failed_by_provider,
    });
}

/// What the Stake controller says a provider has bonded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bonded {
    /// No Stake controller runs (no `--stake-vault`): stake is not required.
    NotRequired,
    /// The Stake controller runs but has not read the bonded stake yet (a new term, its
    /// RPC node down, its keypair unreadable).
    Unknown,
    /// Base units bonded.
    Known(u64),
}

/// The `Staked` condition: bonded stake against what the provider's verified GPUs require
/// (`per_gpu` base units × the model's factor, summed, rounded up). No Stake controller:
/// no condition. Not read yet (the stake or, for a non-zero `--stake-per-gpu`, the mint's
/// decimals: `policy` is `Ok(None)`): `Unknown`, which placement does not take for covered —
/// a provider's GPUs count as verified only once its stake is known to cover them. A
/// policy the mint cannot represent (`policy` is `Err`): `Unknown` with
/// [`REASON_INVALID_STAKE_POLICY`], never covered.
pub fn staked(
    st: &mut GpuProviderStatus,
    bonded: Bonded,
    policy: &Result<Option<gpufed_settlement::stake::StakePolicy>, String>,
    verified_by_model: &std::collections::BTreeMap<String, u32>,
    generation: Option<i64>,
    now: &str,
) {
    let bonded = match bonded {
        Bonded::NotRequired => {
            conditions::remove(&mut st.conditions, types::STAKED);
            return;
        }
        Bonded::Unknown => None,
        Bonded::Known(b) => Some(b),
    };
    let policy = match policy {
        Ok(p) => p.as_ref(),
        Err(e) => {
            let c = condition(
                types::STAKED,
                gpufed_api::common::ConditionStatus::Unknown,
                REASON_INVALID_STAKE_POLICY,
                format!(
                    "{e}: the Stake controller does not run and the provider's GPUs do not count as verified until the operator's --stake-per-gpu is fixed"
                ),
                generation,
                now,
            );
            conditions::set(&mut st.conditions, c);
            return;
        }
    };
    let by_key = verified_by_model
        .iter()
        .fold(std::collections::BTreeMap::new(), |mut m, (model, n)| {
            *m.entry(gpufed_trust::bands::model_key(model)).or_insert(0) += n;
            m
        });
    // `None`: the requirement is not known yet; `Some(None)`: it overflows.
    let required = policy.map(|p| gpufed_settlement::stake::required_stake(&by_key, p));
    let c = match (required, bonded) {
        (Some(Some(0)), None) => condition(
            types::STAKED,
            True,
            "Bonded",
            "its verified GPUs require no stake",
            generation,
            now,
        ),
        (None, _) | (_, None) => condition(
            types::STAKED,
            gpufed_api::common::ConditionStatus::Unknown,
            "StakeUnknown",
            "the Stake controller has not read the bonded stake yet (Solana or its keypair unavailable): the provider's GPUs do not count as verified until it has",
            generation,
            now,
        ),
        (Some(Some(required)), Some(bonded)) if bonded >= required => condition(
            types::STAKED,
            True,
            "Bonded",
            format!("{bonded} base units bonded; its verified GPUs require {required}"),
            generation,
            now,
        ),
        (Some(Some(required)), Some(bonded)) => condition(
            types::STAKED,
            False,
            "InsufficientStake",
            format!(
                "{bonded} base units bonded, its verified GPUs require {required}: they do not count as verified until more is bonded"
            ),
            generation,
            now,
        ),
        (Some(None), Some(_)) => condition(
            types::STAKED,
            False,
            "InsufficientStake",
            "required stake overflows",
            generation,
            now,
        ),
    };
    conditions::set(&mut st.conditions, c);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "plan_tests.rs"]
mod tests;
