//! Transitions of the stake machine and provider eligibility.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    DepositTx, Effect, EffectKind, ExecutedSlash, PendingSlash, RejectReason, StakeAction, StakeConfig,
    StakeError, StakeEvent, StakePhase, StakeState,
};
use crate::machine::{self, Commitment, MachineConfig, Observation, TxPhase, TxState};
use crate::memo::{Memo, valid_kind};

impl StakeState {
    /// A new Stake from its spec.
    pub fn new(staker: String, stated_amount: u64, deposit_signature: String, seed: u64) -> Self {
        Self {
            staker,
            stated_amount,
            deposit_signature,
            phase: StakePhase::Pending,
            bonded: 0,
            missing_since_ms: None,
            pending_slash: None,
            slashes: Vec::new(),
            release: None,
            next_seed: seed,
        }
    }

    fn new_tx(&mut self) -> TxState {
        self.next_seed = self.next_seed.wrapping_add(1);
        TxState::new(self.next_seed)
    }

    /// True when the collateral counts for eligibility.
    pub fn is_bonded(&self) -> bool {
        self.phase == StakePhase::Bonded
    }
}

/// Checks a finalized deposit; `Ok(amount)` is the verified amount.
fn verify(d: &DepositTx, s: &StakeState, cfg: &StakeConfig) -> Result<u64, RejectReason> {
    if let Some(error) = &d.error {
        return Err(RejectReason::DepositFailed { error: error.clone() });
    }
    let into_vault: Vec<_> = d
        .moves
        .iter()
        .filter(|m| m.mint == cfg.stake_mint && m.to == cfg.vault)
        .collect();
    if into_vault.is_empty() {
        return Err(RejectReason::NotIntoVault);
    }
    let found = into_vault
        .iter()
        .filter(|m| m.from_owner == s.staker)
        .fold(0u64, |a, m| a.saturating_add(m.amount));
    if found == 0 {
        return Err(RejectReason::WrongStaker);
    }
    if found < s.stated_amount {
        return Err(RejectReason::InsufficientAmount {
            stated: s.stated_amount,
            found,
        });
    }
    Ok(found)
}

fn phase_name(p: &StakePhase) -> String {
    format!("{p:?}")
}

/// One stake transition. Pure: errors leave `state` as it was. The driver persists the
/// returned state before executing the actions.
pub fn step(
    state: &StakeState,
    now: u64,
    ev: StakeEvent,
    cfg: &StakeConfig,
    mcfg: &MachineConfig,
) -> Result<(StakeState, Vec<StakeAction>), StakeError> {
    let mut s = state.clone();
    let mut out = Vec::new();
    match ev {
        StakeEvent::Deposit(found) => {
            if s.phase != StakePhase::Pending {
                return Err(StakeError::NotAllowed("deposit", phase_name(&s.phase)));
            }
            match found {
                None => {
                    let since = *s.missing_since_ms.get_or_insert(now);
                    if now >= since.saturating_add(cfg.deposit_not_found_grace_ms) {
                        s.phase = StakePhase::Rejected {
                            reason: RejectReason::DepositNotFound,
                        };
                    }
                }
                Some(d) if d.commitment < Commitment::Finalized => {}
                Some(d) => match verify(&d, &s, cfg) {
                    Ok(amount) => {
                        s.bonded = amount;
                        s.phase = StakePhase::Bonded;
                    }
                    Err(reason) => s.phase = StakePhase::Rejected { reason },
                },
            }
        }
        StakeEvent::RequestUnbond => match s.phase {
            StakePhase::Bonded | StakePhase::Slashed if s.bonded > 0 => {
                s.phase = StakePhase::Unbonding {
                    ends_at_ms: now.saturating_add(cfg.unbonding_period_ms),
                };
            }
            _ => return Err(StakeError::NotAllowed("unbond", phase_name(&s.phase))),
        },
        StakeEvent::RaiseSlash {
            kind,
            evidence,
            amount,
        } => {
            if !valid_kind(&kind) {
                return Err(StakeError::BadEvidenceKind);
            }
            // A Stake slashed before that still holds tokens answers for new evidence too:
            // a provider that keeps failing is slashed once per evidence, not once ever.
            let open = matches!(
                s.phase,
                StakePhase::Bonded | StakePhase::Unbonding { .. } | StakePhase::Slashed
            );
            if !open || s.pending_slash.is_some() || s.bonded == 0 || s.release.is_some() {
                return Err(StakeError::NotAllowed("slash", phase_name(&s.phase)));
            }
            let tx = s.new_tx();
            let amount = amount.min(s.bonded);
            let dispute_until_ms = now.saturating_add(cfg.dispute_window_ms);
            s.pending_slash = Some(PendingSlash {
                kind,
                evidence,
                amount,
                dispute_until_ms,
                tx,
            });
        }
        StakeEvent::DismissSlash => match &s.pending_slash {
            Some(p)
                if now < p.dispute_until_ms && p.tx.phase == TxPhase::Pending && p.tx.awaiting.is_none() =>
            {
                s.pending_slash = None;
            }
            _ => return Err(StakeError::NotAllowed("dismiss", phase_name(&s.phase))),
        },
        StakeEvent::Tx(kind, obs) => drive(&mut s, now, kind, obs, mcfg, &mut out)?,
        StakeEvent::Tick | StakeEvent::Restarted => {
            let obs = || {
                if ev == StakeEvent::Tick {
                    Observation::Tick
                } else {
                    Observation::Restarted
                }
            };
            if s.phase == StakePhase::Pending {
                out.push(StakeAction::VerifyDeposit {
                    signature: s.deposit_signature.clone(),
                });
            }
            if s.pending_slash
                .as_ref()
                .is_some_and(|p| now >= p.dispute_until_ms)
            {
                drive(&mut s, now, EffectKind::Slash, obs(), mcfg, &mut out)?;
            }
            let release_due = matches!(s.phase, StakePhase::Unbonding { ends_at_ms } if now >= ends_at_ms);
            if release_due && s.pending_slash.is_none() {
                if s.release.is_none() {
                    s.release = Some(s.new_tx());
                }
                drive(&mut s, now, EffectKind::Release, obs(), mcfg, &mut out)?;
            }
        }
    }
    Ok((s, out))
}

/// Steps one effect's transaction machine and applies its outcome.
fn drive(
    s: &mut StakeState,
    now: u64,
    kind: EffectKind,
    obs: Observation,
    mcfg: &MachineConfig,
    out: &mut Vec<StakeAction>,
) -> Result<(), StakeError> {
    let (effect, tx) = match kind {
        EffectKind::Slash => {
            let p = s
                .pending_slash
                .as_ref()
                .ok_or(StakeError::NotAllowed("slash tx", phase_name(&s.phase)))?;
            let memo = Memo::Slash {
                kind: p.kind.clone(),
                evidence: p.evidence,
                stake: Some(crate::memo::stake_tag(&s.deposit_signature)),
            }
            .to_string();
            (
                Effect::Slash {
                    amount: p.amount,
                    memo,
                },
                &p.tx,
            )
        }
        EffectKind::Release => {
            let tx = s
                .release
                .as_ref()
                .ok_or(StakeError::NotAllowed("release tx", phase_name(&s.phase)))?;
            (
                Effect::Release {
                    to_owner: s.staker.clone(),
                    amount: s.bonded,
                    memo: Memo::Release {
                        stake: crate::memo::stake_tag(&s.deposit_signature),
                    }
                    .to_string(),
                },
                tx,
            )
        }
    };
    let (tx, actions) = machine::step(tx, now, obs, mcfg)?;
    let outcome = tx.phase.clone();
    match kind {
        EffectKind::Slash => {
            if let Some(p) = s.pending_slash.as_mut() {
                p.tx = tx;
            }
        }
        EffectKind::Release => s.release = Some(tx),
    }
    out.extend(actions.into_iter().map(|action| StakeAction::Tx {
        kind,
        effect: effect.clone(),
        action,
    }));
    match (kind, outcome) {
        (EffectKind::Slash, TxPhase::Done { signature, .. }) => {
            if let Some(p) = s.pending_slash.take() {
                s.bonded = s.bonded.saturating_sub(p.amount);
                s.slashes.push(ExecutedSlash {
                    kind: p.kind,
                    evidence: p.evidence,
                    amount: p.amount,
                    signature,
                });
                if !matches!(s.phase, StakePhase::Unbonding { .. }) || s.bonded == 0 {
                    s.phase = StakePhase::Slashed;
                }
            }
        }
        (EffectKind::Release, TxPhase::Done { .. }) => {
            s.bonded = 0;
            s.phase = StakePhase::Released;
        }
        // A failed transaction had no effect: retry with a fresh state after backoff.
        (EffectKind::Slash, TxPhase::Failed { .. }) => {
            let mut fresh = s.new_tx();
            fresh.wake_at_ms = now.saturating_add(mcfg.backoff.max_ms);
            if let Some(p) = s.pending_slash.as_mut() {
                p.tx = fresh;
            }
        }
        (EffectKind::Release, TxPhase::Failed { .. }) => {
            let mut fresh = s.new_tx();
            fresh.wake_at_ms = now.saturating_add(mcfg.backoff.max_ms);
            s.release = Some(fresh);
        }
        _ => {}
    }
    Ok(())
}

/// Required collateral per verified GPU: `base_per_gpu × multiplier_bps / 10_000` for the
/// GPU's model (default multiplier for unknown models), summed and rounded **up**.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StakePolicy {
    /// Stake per GPU at multiplier 1.0, base units.
    pub base_per_gpu: u64,
    /// Multiplier per GPU model, basis points (10_000 = 1.0).
    pub multipliers_bps: BTreeMap<String, u32>,
    /// Multiplier for models not listed, basis points.
    pub default_multiplier_bps: u32,
}

/// Required stake for verified GPUs by model; `None` on overflow.
pub fn required_stake(verified_gpus: &BTreeMap<String, u32>, policy: &StakePolicy) -> Option<u64> {
    let mut total: u128 = 0;
    for (model, &count) in verified_gpus {
        let bps = policy
            .multipliers_bps
            .get(model)
            .copied()
            .unwrap_or(policy.default_multiplier_bps);
        // Each term is below 2^128 (u32 × u64 × u32); their sum need not be.
        let term = u128::from(count) * u128::from(policy.base_per_gpu) * u128::from(bps);
        total = total.checked_add(term)?;
    }
    u64::try_from(total.div_ceil(10_000)).ok()
}

impl StakeState {
    /// Eligible when Bonded and the bonded amount covers the requirement.
    pub fn eligible(&self, verified_gpus: &BTreeMap<String, u32>, policy: &StakePolicy) -> bool {
        self.is_bonded() && required_stake(verified_gpus, policy).is_some_and(|r| self.bonded >= r)
    }
}

/// Deposit signatures claimed by more than one Stake (a deposit bonds once):
/// `(signature, stake names)`.
pub fn duplicate_deposits<'a>(
    stakes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, Vec<String>)> {
    let mut by_sig: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, sig) in stakes {
        by_sig.entry(sig).or_default().push(name.to_string());
    }
    by_sig
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(s, v)| (s.to_string(), v))
        .collect()
}
