//! Payout token accounts the operator creates (the authority pays their rent), so a batch
//! never fails on a provider that has not opened one.
//!
//! An account found (or created) is not looked up again each round ([`Payouts::ready`]) —
//! but it can go afterwards: its owner may close it (an empty token account can be closed
//! at any time, its rent returned to the owner). The settler then reports the provider
//! unpaid ("does not exist") every round, so each round's report takes the provider's
//! account back out of `ready` ([`Payouts::after_round`]); looked up again and found
//! missing, that is a loss, and the account is created again. After [`MAX_LOSSES`] losses
//! it is not created any more: its owner closes what the authority pays for, so the
//! provider must create its own (its records wait; the settler reads the account every
//! round regardless, so payments resume once it exists), and its `PayoutAccountUnusable`
//! Event says so ([`Payouts::reasons`]).
//!
//! Every creation is paced per account, recorded before it is sent ([`ATTEMPT_BACKOFF`]):
//! a creation that fails on chain (reported like a transient RPC error, and costing a
//! fee), or whose confirmation timed out, is tried again no sooner than a minute later,
//! then ever less often. Only a refusal in simulation, which sends nothing and costs no
//! fee, is tried again next round ([`Payouts::not_sent`]); a lookup that fails sends
//! nothing either. This memory is kept across settlement terms (`super::Memory`), so a
//! term ended by an error does not forget it.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_chain::{Pubkey, RoundReport, SettlementAccounts, Settler};
use gpufed_settlement::{BackoffConfig, Commitment};
use tracing::warn;

use super::store::ConfigMapStore;

/// Losses of one account (found missing after it was ready) after which the operator no
/// longer creates it: the authority has paid its rent this many times, the owner took it
/// back each time.
pub const MAX_LOSSES: u32 = 3;

/// Delay after the n-th creation attempt of an account before the next (n ≥ 1): 1
/// minute, doubling, at most an hour.
pub const ATTEMPT_BACKOFF: BackoffConfig = BackoffConfig {
    base_ms: 60_000,
    max_ms: 3_600_000,
    jitter_pct: 0,
};

/// What is known of one account's creations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Track {
    /// Creations sent (or begun: the send may have failed before reaching the node).
    attempts: u32,
    /// Times it was found missing after it had been ready.
    losses: u32,
    /// Taken out of `ready` by a round's report; a loss if the lookup finds it missing.
    lost: bool,
    /// No creation before this.
    not_before_ms: u64,
}

/// The payout accounts settlement knows of: found (or created) ones, and the creations of
/// the others with their pacing. Kept across terms (keyed by account address: `ready` only
/// spares a lookup, and a round's report corrects it).
#[derive(Debug, Default)]
pub(super) struct Payouts {
    ready: BTreeSet<Pubkey>,
    track: BTreeMap<Pubkey, Track>,
}

impl Payouts {
    /// Whether `ata` should be looked up (and created if missing) at `now_ms`.
    pub fn due(&self, ata: &Pubkey, now_ms: u64) -> bool {
        !self.ready.contains(ata)
            && !self.given_up(ata)
            && self.track.get(ata).is_none_or(|t| now_ms >= t.not_before_ms)
    }

    /// Whether the operator no longer creates `ata` ([`MAX_LOSSES`]).
    pub fn given_up(&self, ata: &Pubkey) -> bool {
        self.track.get(ata).is_some_and(|t| t.losses >= MAX_LOSSES)
    }

    /// `ata` exists (found by a lookup, or created now).
    pub fn exists(&mut self, ata: Pubkey) {
        if let Some(t) = self.track.get_mut(&ata) {
            // Still there (frozen, say): not a loss.
            t.lost = false;
        }
        self.ready.insert(ata);
    }

    /// `ata` was looked up and is missing: whether to create it now. Counts a loss if it
    /// had been ready; past [`MAX_LOSSES`] answers `false` (once: it is not due after). Else
    /// records the attempt — before it is sent, so that whatever happens to it (failed on
    /// chain, confirmation timed out) the next one waits [`ATTEMPT_BACKOFF`].
    pub fn creating(&mut self, ata: Pubkey, now_ms: u64) -> bool {
        let t = self.track.entry(ata).or_default();
        if std::mem::take(&mut t.lost) {
            t.losses = t.losses.saturating_add(1);
        }
        if t.losses >= MAX_LOSSES {
            return false;
        }
        t.attempts = t.attempts.saturating_add(1);
        t.not_before_ms = now_ms.saturating_add(ATTEMPT_BACKOFF.delay_ms(t.attempts, 0));
        true
    }

    /// The attempt [`Self::creating`] recorded sent nothing (refused in simulation, no
    /// fee): it is not paced, the next round tries again.
    pub fn not_sent(&mut self, ata: &Pubkey) {
        if let Some(t) = self.track.get_mut(ata) {
            t.attempts = t.attempts.saturating_sub(1);
            t.not_before_ms = 0;
        }
    }

    /// After a settler round: the account of every provider the round left unpaid is no
    /// longer taken as ready (closed since, typically; or frozen — looked up again, a loss
    /// only if missing). Returns the providers whose ready account went.
    pub fn after_round(&mut self, report: &RoundReport, accounts: &SettlementAccounts) -> Vec<String> {
        let mut gone = Vec::new();
        for p in report.unpaid_reasons.keys() {
            let Some(ata) = accounts.payout_account(p) else {
                continue;
            };
            if self.ready.remove(&ata) {
                self.track.entry(ata).or_default().lost = true;
                gone.push(p.clone());
            }
        }
        gone
    }

    /// The round's unpaid reasons as the operator tells them: a provider whose account it
    /// gave up creating is told that it must create its own.
    pub fn reasons(&self, report: &RoundReport, accounts: &SettlementAccounts) -> BTreeMap<String, String> {
        let mut out = report.unpaid_reasons.clone();
        for (p, why) in &mut out {
            if accounts.payout_account(p).is_some_and(|ata| self.given_up(&ata)) {
                why.push_str(&format!(
                    "; this payout account was found closed {MAX_LOSSES} times after it had \
                     existed, so the operator no longer creates it: the provider must create \
                     its own associated token account of the settlement mint {} for its payout wallet",
                    accounts.mint
                ));
            }
        }
        out
    }
}

/// Creates the missing payout accounts of providers with pending records that are due
/// ([`Payouts::due`]). Providers whose account cannot be created are left out of the
/// accounts: their records wait.
pub(super) async fn ensure_payouts(
    settler: &Settler<ConfigMapStore>,
    accounts: &mut SettlementAccounts,
    payouts: &mut Payouts,
    now_ms: u64,
) {
    let providers: BTreeSet<String> = settler
        .journal()
        .pending_iter()
        .map(|r| r.provider.clone())
        .collect();
    for p in providers {
        let (Some(ata), Some(wallet)) = (
            accounts.payout_account(&p),
            accounts.payout_wallets.get(&p).copied(),
        ) else {
            continue;
        };
        if !payouts.due(&ata, now_ms) {
            continue;
        }
        // Looked up here, so that only a creation that may be sent is paced: an unreachable
        // node sends nothing, and delays a new provider by no more than a round.
        match settler.rpc().token_balance(&ata, Commitment::Confirmed).await {
            Ok(Some(_)) => {
                payouts.exists(ata);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(provider = %p, error = %e, "cannot look up the provider's payout account; looked up next round");
                continue;
            }
        }
        if !payouts.creating(ata, now_ms) {
            warn!(provider = %p, account = %ata, losses = MAX_LOSSES,
                  "the payout account was closed again; it is not created any more: the provider must create its own, its records wait until then");
            continue;
        }
        match settler.ensure_payout_account(&wallet).await {
            Ok(()) => payouts.exists(ata),
            // The chain unreachable: keep the wallet. Its batch then waits on the RPC like
            // any other (the backlog grows); removing the wallet made signing a planned batch
            // that pays this provider fail as a configuration error, which ended the whole
            // settlement term — and with it metering — for as long as the chain was down
            // (found by the operator-restart-during-outage e2e test).
            // Refused in simulation: the same again next round until its cause (named in
            // the node's logs, now in the error) is fixed — typically the settlement
            // authority's SOL for the account's rent. Nothing was sent: not paced.
            Err(e) if e.refused_in_preflight() => {
                payouts.not_sent(&ata);
                warn!(provider = %p, authority = %settler.authority(), error = %e,
                      "the RPC node refused creating the provider's payout account (does the settlement authority hold SOL for its rent?); retried next round");
            }
            // Failed on chain (reported as an RPC error), or not confirmed in time: it may
            // have cost a fee, so the next attempt is paced.
            Err(e) if e.is_transient() => {
                warn!(provider = %p, error = %e, "payout account creation failed or not confirmed; looked up again at the next paced attempt");
            }
            Err(e) => {
                warn!(provider = %p, error = %e, "payout account not ready; provider's records wait");
                accounts.payout_wallets.remove(&p);
            }
        }
    }
}

/// [`Payouts::after_round`] with the settler's accounts, logging each account gone.
pub(super) fn after_round(settler: &Settler<ConfigMapStore>, payouts: &mut Payouts, report: &RoundReport) {
    for p in payouts.after_round(report, &settler.config().accounts) {
        warn!(provider = %p, reason = ?report.unpaid_reasons.get(&p),
              "the provider's payout account cannot receive any more (closed by its owner?); looked up again, and created again if missing");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "payouts_tests.rs"]
mod tests;
