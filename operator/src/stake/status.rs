//! The pure status of a Stake: phase, amounts, slashes and conditions from its persisted
//! [`StakeDoc`] and what the round found.

use gpufed_api::ConditionStatus::{False, True, Unknown};
use gpufed_api::conditions::{self, types};
use gpufed_api::stake::{EvidenceKind, Slash, StakePhase as ApiPhase};
use gpufed_api::{Condition, ConditionStatus, StakeStatus};
use gpufed_settlement::Hash32;
use gpufed_settlement::stake::StakePhase;

use super::plan::{display_amount, evidence_kind};
use super::store::StakeDoc;

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct StatusView<'a> {
    /// The persisted state.
    pub doc: &'a StakeDoc,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Decimals of the stake mint.
    pub decimals: u8,
    /// Another Stake claims this one's deposit.
    pub held_by: Option<&'a str>,
    /// Something worth telling (an RPC error, a refused annotation).
    pub note: Option<&'a str>,
    /// Deposit-not-found grace period, ms.
    pub grace_ms: u64,
}

fn rfc3339(ms: u64) -> String {
    crate::time::format(i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX))
}

/// Longest note shown (characters): a note can quote an annotation's value, and annotations
/// run to 256 KiB, past the 32768 characters a condition's message may hold.
const MAX_NOTE: usize = 1024;

fn with_note(msg: String, note: Option<&str>) -> String {
    match note {
        Some(n) if n.chars().count() > MAX_NOTE => {
            format!("{msg} ({}…)", n.chars().take(MAX_NOTE).collect::<String>())
        }
        Some(n) => format!("{msg} ({n})"),
        None => msg,
    }
}

struct Conds<'a> {
    list: Vec<Condition>,
    generation: Option<i64>,
    now: &'a str,
}

impl Conds<'_> {
    fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: String) {
        let c = conditions::condition(type_, status, reason, message, self.generation, self.now);
        conditions::set(&mut self.list, c);
    }
    fn clear(&mut self, type_: &str) {
        conditions::remove(&mut self.list, type_);
    }
}

fn slashes(doc: &StakeDoc, decimals: u8) -> Vec<Slash> {
    let window = |e: &Hash32| rfc3339(doc.slash_windows.get(&e.to_hex()).copied().unwrap_or(0));
    let kind = |k: &str| evidence_kind(k).unwrap_or(EvidenceKind::FailedChallenge);
    let mut out: Vec<Slash> = doc
        .state
        .slashes
        .iter()
        .map(|s| Slash {
            evidence: kind(&s.kind),
            evidence_hash: s.evidence.to_hex(),
            amount: display_amount(s.amount, decimals),
            dispute_window_end_time: window(&s.evidence),
            signature: Some(s.signature.clone()),
            executed: true,
        })
        .collect();
    if let Some(p) = &doc.state.pending_slash {
        out.push(Slash {
            evidence: kind(&p.kind),
            evidence_hash: p.evidence.to_hex(),
            amount: display_amount(p.amount, decimals),
            dispute_window_end_time: rfc3339(p.dispute_until_ms),
            signature: p.tx.signature().map(str::to_string),
            executed: false,
        });
    }
    let skip = out.len().saturating_sub(32);
    out.split_off(skip)
}

/// The status a Stake's persisted state shows. The round's note (a refused or waiting
/// annotation, an RPC error, stake transactions waiting for the RPC node's history) is in
/// `Ready`'s message in every phase: `Reconciling`, which carries it too while something
/// is in progress, is removed once nothing is, and the note must not go with it.
pub fn status(old: Option<&StakeStatus>, v: &StatusView, now: &str) -> StakeStatus {
    let s = &v.doc.state;
    let amount = |x: u64| display_amount(x, v.decimals);
    let mut c = Conds {
        list: old.map(|o| o.conditions.clone()).unwrap_or_default(),
        generation: v.generation,
        now,
    };
    let pending_slash = s.pending_slash.as_ref().map(|p| {
        format!(
            "a slash of {} ({}) executes after {} unless dismissed",
            amount(p.amount),
            p.kind,
            rfc3339(p.dispute_until_ms)
        )
    });
    let phase = match &s.phase {
        StakePhase::Pending => {
            if let Some(other) = v.held_by {
                let msg = format!(
                    "deposit {} is already claimed by Stake {other}",
                    s.deposit_signature
                );
                c.set(
                    types::READY,
                    False,
                    "DepositAlreadyClaimed",
                    with_note(msg.clone(), v.note),
                );
                c.set(
                    types::DEPOSIT_VERIFIED,
                    False,
                    "DepositAlreadyClaimed",
                    msg.clone(),
                );
                c.set(types::STALLED, True, "DepositAlreadyClaimed", msg);
                c.clear(types::RECONCILING);
            } else {
                let msg = match s.missing_since_ms {
                    Some(since) => format!(
                        "deposit {} not found yet; rejected at {} if still unknown",
                        s.deposit_signature,
                        rfc3339(since.saturating_add(v.grace_ms))
                    ),
                    None => format!(
                        "verifying deposit {} (waits for finalization)",
                        s.deposit_signature
                    ),
                };
                let msg = with_note(msg, v.note);
                c.set(types::READY, False, "DepositPending", msg.clone());
                c.set(types::DEPOSIT_VERIFIED, Unknown, "DepositPending", msg.clone());
                c.set(types::RECONCILING, True, "DepositPending", msg);
                c.clear(types::STALLED);
            }
            ApiPhase::Pending
        }
        StakePhase::Rejected { reason } => {
            let (r, msg) = (
                reason.condition_reason(),
                format!("{reason}: {}", s.deposit_signature),
            );
            c.set(types::READY, False, r, with_note(msg.clone(), v.note));
            c.set(types::DEPOSIT_VERIFIED, False, r, msg.clone());
            c.set(types::STALLED, True, r, msg);
            c.clear(types::RECONCILING);
            ApiPhase::Rejected
        }
        other => {
            c.set(
                types::DEPOSIT_VERIFIED,
                True,
                "DepositVerified",
                format!("deposit {} verified (finalized)", s.deposit_signature),
            );
            c.clear(types::STALLED);
            let phase = match other {
                StakePhase::Bonded => {
                    c.set(
                        types::READY,
                        True,
                        "Bonded",
                        with_note(format!("{} bonded", amount(s.bonded)), v.note),
                    );
                    ApiPhase::Bonded
                }
                StakePhase::Unbonding { ends_at_ms } => {
                    let msg = format!(
                        "{} returns to {} after {}",
                        amount(s.bonded),
                        s.staker,
                        rfc3339(*ends_at_ms)
                    );
                    c.set(types::READY, False, "Unbonding", with_note(msg.clone(), v.note));
                    c.set(types::RECONCILING, True, "Unbonding", with_note(msg, v.note));
                    ApiPhase::Unbonding
                }
                StakePhase::Released => {
                    c.set(
                        types::READY,
                        True,
                        "Released",
                        with_note(format!("returned to {}", s.staker), v.note),
                    );
                    ApiPhase::Released
                }
                _ => {
                    let msg = match s.bonded {
                        0 => "fully slashed".to_string(),
                        b => format!(
                            "slashed; the remaining {} can be unbonded (spec.unbond)",
                            amount(b)
                        ),
                    };
                    c.set(types::READY, False, "Slashed", with_note(msg.clone(), v.note));
                    c.set(types::STALLED, True, "Slashed", msg);
                    ApiPhase::Slashed
                }
            };
            match (&pending_slash, phase) {
                (Some(msg), _) => c.set(
                    types::RECONCILING,
                    True,
                    "SlashPending",
                    with_note(msg.clone(), v.note),
                ),
                (None, ApiPhase::Unbonding) => {}
                (None, _) => c.clear(types::RECONCILING),
            }
            phase
        }
    };
    let bonded = !matches!(s.phase, StakePhase::Pending | StakePhase::Rejected { .. });
    StakeStatus {
        phase: Some(phase),
        conditions: c.list,
        observed_generation: v.generation,
        bonded_amount: bonded.then(|| amount(s.bonded)),
        unbonding_end_time: v.doc.unbonding_end_ms.map(rfc3339),
        release_signature: s
            .release
            .as_ref()
            .filter(|t| matches!(t.phase, gpufed_settlement::TxPhase::Done { .. }))
            .and_then(|t| t.signature().map(str::to_string)),
        slashes: slashes(v.doc, v.decimals),
    }
}

/// Status of a Stake the controller cannot act on until its spec changes (or its state
/// belongs to another object): Stalled with `reason`.
pub fn stalled(
    old: Option<&StakeStatus>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &str,
) -> StakeStatus {
    let mut st = old.cloned().unwrap_or_default();
    let mut c = Conds {
        list: std::mem::take(&mut st.conditions),
        generation,
        now,
    };
    c.set(types::READY, False, reason, message.to_string());
    c.set(types::STALLED, True, reason, message.to_string());
    c.clear(types::RECONCILING);
    st.conditions = c.list;
    st.observed_generation = generation;
    st.phase = st.phase.or(Some(ApiPhase::Pending));
    st
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
