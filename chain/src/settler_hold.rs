//! What a round leaves out, and why: tenants whose escrow cannot pay, providers whose
//! payout account cannot receive, and planned batches that cannot be signed for want of
//! an account.
//!
//! A batch pays all its pairs in one transaction, so one pair that cannot be paid holds up
//! the others: planned, it either cannot be signed (a provider deleted, a tenant's escrow
//! annotation removed: it would back off forever, taking one of the few in-flight lanes
//! with it) or fails on chain every time it is re-batched. Such pairs are therefore held
//! out of planning with a reason, and a batch already planned with one is taken back
//! while nothing was signed for it that could still land.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::{Commitment, TxPhase};
use tracing::{debug, info, warn};

use super::{JournalStore, RoundReport, Settler};
use crate::error::ChainError;
use crate::payout::payout_problem;
use crate::pubkey::Pubkey;

/// Which providers a round leaves out of planning.
#[derive(Debug, Default)]
pub(super) struct PayoutCheck {
    /// Known not to be payable now, with why (reported).
    pub bad: BTreeMap<String, String>,
    /// Not known this round (the node did not answer): held silently, like a tenant
    /// whose escrow balance could not be read.
    pub unknown: BTreeSet<String>,
}

impl PayoutCheck {
    /// Every provider left out of planning.
    pub fn held(&self) -> BTreeSet<String> {
        self.bad.keys().chain(&self.unknown).cloned().collect()
    }
}

impl<S: JournalStore> Settler<S> {
    /// Checks the payout account of every provider that records waiting, or a batch not
    /// yet signed, would pay: a wallet must be known and its associated token account able
    /// to receive the mint ([`payout_problem`]). Logs a provider's reason when it changes.
    pub(super) async fn check_payouts(&mut self, report: &mut RoundReport) -> PayoutCheck {
        let mut providers: BTreeSet<String> =
            self.journal.pending_iter().map(|r| r.provider.clone()).collect();
        for b in self.journal.in_flight() {
            if matches!(b.tx.phase, TxPhase::Pending) {
                providers.extend(b.transfers.iter().map(|t| t.provider.clone()));
            }
        }
        let mut check = PayoutCheck::default();
        let mut to_read: Vec<(String, Pubkey, Pubkey)> = Vec::new();
        let checked = providers.clone();
        for p in providers {
            match (
                self.cfg.accounts.payout_wallets.get(&p),
                self.cfg.accounts.payout_account(&p),
            ) {
                (Some(wallet), Some(ata)) => to_read.push((p, *wallet, ata)),
                _ => {
                    let why = format!(
                        "provider {p:?} has no payout wallet (deleted, or its payout wallet invalid)"
                    );
                    check.bad.insert(p, why);
                }
            }
        }
        if !to_read.is_empty() {
            let keys: Vec<Pubkey> = to_read.iter().map(|(_, _, a)| *a).collect();
            // Confirmed, as the operator confirms the accounts it creates: a batch is
            // planned without waiting for finality, and a rolled-back creation costs at
            // most one failed transaction, after which the provider is held here.
            match self.rpc.accounts_parsed(&keys, Commitment::Confirmed).await {
                Ok(values) => {
                    let mint = self.cfg.accounts.mint;
                    for ((p, wallet, ata), v) in to_read.into_iter().zip(values) {
                        if let Some(why) = payout_problem(&ata, &v, &wallet, &mint) {
                            check.bad.insert(p, why);
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %e, "payout accounts unavailable; their providers wait this round");
                    report.rpc_errors += 1;
                    check.unknown.extend(to_read.into_iter().map(|(p, _, _)| p));
                }
            }
        }
        for (p, why) in &check.bad {
            if self.unpayable.get(p) != Some(why) {
                warn!(provider = %p, reason = %why, "provider's records wait until its payout account can receive");
            }
        }
        for p in self.unpayable.keys() {
            if checked.contains(p) && !check.bad.contains_key(p) && !check.unknown.contains(p) {
                info!(provider = %p, "provider's payout account can receive again; its records settle");
            }
        }
        let unknown = &check.unknown;
        // Keep the reasons of providers not read this round, so they are not logged again.
        self.unpayable.retain(|p, _| unknown.contains(p));
        self.unpayable.extend(check.bad.clone());
        check
    }

    /// Takes back every batch not yet signed that pays a provider in `bad` or charges a
    /// tenant without an escrow account ([`gpufed_settlement::Journal::withdraw_unsigned`]:
    /// only while nothing signed for it can still land); its records are pending again and
    /// the next plan leaves the unpayable pair out. Returns whether any was.
    pub(super) fn withdraw_unsignable(
        &mut self,
        bad: &BTreeMap<String, String>,
        report: &mut RoundReport,
    ) -> bool {
        let why = |b: &gpufed_settlement::Batch| {
            b.transfers.iter().find_map(|t| {
                if let Some(reason) = bad.get(&t.provider) {
                    Some(format!("it pays provider {:?}: {reason}", t.provider))
                } else if !self.cfg.accounts.escrows.contains_key(&t.tenant) {
                    Some(format!(
                        "it charges tenant {:?}, which has no escrow account",
                        t.tenant
                    ))
                } else {
                    None
                }
            })
        };
        let doomed: Vec<(u64, String)> = self
            .journal
            .in_flight()
            .filter(|b| matches!(b.tx.phase, TxPhase::Pending))
            .filter_map(|b| why(b).map(|w| (b.id, w)))
            .collect();
        let mut changed = false;
        for (id, reason) in doomed {
            // Every candidate is `Pending` (filtered above), so this is not refused.
            if self.journal.withdraw_unsigned(id).is_ok() {
                warn!(batch = id, %reason, "batch taken back before signing; its payable records are re-planned");
                report.withdrawn.push((id, reason));
                changed = true;
            }
        }
        changed
    }

    /// What the authority may spend (finalized) from the escrows of tenants with unsettled
    /// records ([`crate::escrow::spendable`]); tenants without an escrow account count as
    /// 0, so they are held and reported.
    pub(super) async fn escrow_balances(&self, report: &mut RoundReport) -> BTreeMap<String, u64> {
        let tenants: BTreeSet<String> = self.journal.pending_iter().map(|r| r.tenant.clone()).collect();
        let mut out = BTreeMap::new();
        for t in tenants {
            let bal = match self.cfg.accounts.escrows.get(&t) {
                Some(acct) => match self
                    .rpc
                    .escrow_spendable(
                        acct,
                        &self.authority.pubkey(),
                        &self.cfg.accounts.mint,
                        Commitment::Finalized,
                    )
                    .await
                {
                    Ok(b) => b.unwrap_or(0),
                    // Not a token account: nothing to spend, reported short.
                    Err(e @ ChainError::Decode { .. }) => {
                        warn!(tenant = %t, error = %e, "escrow is not a usable token account");
                        0
                    }
                    Err(e) => {
                        // Unknown balance: don't settle this tenant now, but don't report it short.
                        debug!(tenant = %t, error = %e, "escrow balance unavailable");
                        report.rpc_errors += 1;
                        continue;
                    }
                },
                None => 0,
            };
            out.insert(t, bal);
        }
        out
    }
}
