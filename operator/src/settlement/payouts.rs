//! Payout token accounts the operator creates (the authority pays their rent), so a batch
//! never fails on a provider that has not opened one.
//!
//! An account created once is not looked up again each round ([`Payouts::ready`]) — but it
//! can go afterwards: its owner may close it (an empty token account can be closed at any
//! time, its rent returned to the owner). The settler then reports the provider unpaid
//! ("does not exist") every round, so each round's report takes the provider's account
//! back out of `ready` ([`Payouts::after_round`]) and it is created again. Re-creation is
//! paced per account ([`LOSS_BACKOFF`]): the first at once, then ever less often, so an
//! owner closing its account again and again (collecting the rent each time) cannot make
//! the authority pay rent every round. A creation that fails is tried again next round,
//! as for a provider seen for the first time (a refusal in simulation costs no fee).

use std::collections::{BTreeMap, BTreeSet};

use gpufed_chain::{Pubkey, RoundReport, SettlementAccounts, Settler};
use gpufed_settlement::BackoffConfig;
use tracing::warn;

use super::store::ConfigMapStore;

/// Delay before re-creating an account found gone for the n-th time (n ≥ 2; the first
/// time it is re-created at once): 1 minute, doubling, at most an hour.
pub const LOSS_BACKOFF: BackoffConfig = BackoffConfig {
    base_ms: 60_000,
    max_ms: 3_600_000,
    jitter_pct: 0,
};

/// How often an account created by this term was found gone since, and when it may be
/// created again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    times: u32,
    not_before_ms: u64,
}

/// The payout accounts of one leadership term: created (or found) ones, and those gone
/// since with their pacing.
#[derive(Debug, Default)]
pub(super) struct Payouts {
    ready: BTreeSet<Pubkey>,
    lost: BTreeMap<Pubkey, Lost>,
}

impl Payouts {
    /// Whether `ata` should be looked up (and created if missing) at `now_ms`.
    pub fn due(&self, ata: &Pubkey, now_ms: u64) -> bool {
        !self.ready.contains(ata) && self.lost.get(ata).is_none_or(|l| now_ms >= l.not_before_ms)
    }

    /// `ata` exists (created now, or found).
    pub fn created(&mut self, ata: Pubkey) {
        self.ready.insert(ata);
    }

    /// After a settler round: the account of every provider the round left unpaid is no
    /// longer taken as ready (closed since it was created, typically; or of another mint,
    /// owner, frozen — looked up again, at the same pace, in case that changed). Returns the
    /// providers whose ready account went.
    pub fn after_round(
        &mut self,
        report: &RoundReport,
        accounts: &SettlementAccounts,
        now_ms: u64,
    ) -> Vec<String> {
        let mut gone = Vec::new();
        for p in report.unpaid_reasons.keys() {
            let Some(ata) = accounts.payout_account(p) else {
                continue;
            };
            if !self.ready.remove(&ata) {
                continue;
            }
            let lost = self.lost.entry(ata).or_insert(Lost {
                times: 0,
                not_before_ms: 0,
            });
            lost.times = lost.times.saturating_add(1);
            let delay = LOSS_BACKOFF.delay_ms(lost.times.saturating_sub(1), 0);
            lost.not_before_ms = now_ms.saturating_add(delay);
            gone.push(p.clone());
        }
        gone
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
        let Some(ata) = accounts.payout_account(&p) else {
            continue;
        };
        if !payouts.due(&ata, now_ms) {
            continue;
        }
        let wallet = accounts.payout_wallets[&p];
        match settler.ensure_payout_account(&wallet).await {
            Ok(()) => payouts.created(ata),
            // The chain unreachable: keep the wallet. Its batch then waits on the RPC like
            // any other (the backlog grows); removing the wallet made signing a planned batch
            // that pays this provider fail as a configuration error, which ended the whole
            // settlement term — and with it metering — for as long as the chain was down
            // (found by the operator-restart-during-outage e2e test).
            // Refused in simulation: the same again next round until its cause (named in
            // the node's logs, now in the error) is fixed — typically the settlement
            // authority's SOL for the account's rent.
            Err(e) if e.refused_in_preflight() => {
                warn!(provider = %p, authority = %settler.authority(), error = %e,
                      "the RPC node refused creating the provider's payout account (does the settlement authority hold SOL for its rent?); retried next round");
            }
            Err(e) if e.is_transient() => {
                warn!(provider = %p, error = %e, "payout account not confirmed yet; retried next round");
            }
            Err(e) => {
                warn!(provider = %p, error = %e, "payout account not ready; provider's records wait");
                accounts.payout_wallets.remove(&p);
            }
        }
    }
}

/// [`Payouts::after_round`] with the settler's accounts, logging each account gone.
pub(super) fn after_round(
    settler: &Settler<ConfigMapStore>,
    payouts: &mut Payouts,
    report: &RoundReport,
    now_ms: u64,
) {
    for p in payouts.after_round(report, &settler.config().accounts, now_ms) {
        warn!(provider = %p, reason = ?report.unpaid_reasons.get(&p),
              "the payout account the operator created cannot receive any more (closed by its owner?); it is created again");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn accounts() -> SettlementAccounts {
        let mut a = SettlementAccounts {
            mint: Pubkey([7; 32]),
            ..Default::default()
        };
        a.payout_wallets.insert("p".into(), Pubkey([1; 32]));
        a.payout_wallets.insert("q".into(), Pubkey([2; 32]));
        a
    }

    fn unpaid(providers: &[&str]) -> RoundReport {
        let mut r = RoundReport::default();
        for p in providers {
            r.unpaid_reasons.insert(
                (*p).into(),
                "payout token account X of wallet Y does not exist".into(),
            );
        }
        r.unpaid = r.unpaid_reasons.keys().cloned().collect();
        r
    }

    #[test]
    fn a_created_account_reported_unpaid_is_created_again_at_a_slowing_pace() {
        let acc = accounts();
        let (p, q) = (acc.payout_account("p").unwrap(), acc.payout_account("q").unwrap());
        let mut pay = Payouts::default();
        assert!(pay.due(&p, 0));
        pay.created(p);
        pay.created(q);
        assert!(!pay.due(&p, 0), "created: not looked up every round");
        // p's owner closed it: the next round reports p unpaid; q still receives.
        assert_eq!(pay.after_round(&unpaid(&["p"]), &acc, 1_000), vec!["p"]);
        assert!(pay.due(&p, 1_000), "the first loss: created again at once");
        assert!(!pay.due(&q, 1_000));
        // Reported unpaid while not ready (creation failed or not tried): nothing new.
        assert!(pay.after_round(&unpaid(&["p"]), &acc, 2_000).is_empty());
        assert!(pay.due(&p, 2_000));
        // Closed again: a minute, then two, before the next creation.
        pay.created(p);
        assert_eq!(pay.after_round(&unpaid(&["p"]), &acc, 10_000), vec!["p"]);
        assert!(!pay.due(&p, 10_000 + 59_999));
        assert!(pay.due(&p, 10_000 + 60_000));
        pay.created(p);
        pay.after_round(&unpaid(&["p"]), &acc, 100_000);
        assert!(!pay.due(&p, 100_000 + 119_999));
        assert!(pay.due(&p, 100_000 + 120_000));
        // At most an hour, however often.
        for i in 0..40 {
            pay.created(p);
            pay.after_round(&unpaid(&["p"]), &acc, 1_000_000 * i);
        }
        assert!(pay.due(&p, 1_000_000 * 39 + 3_600_000));
    }

    #[test]
    fn a_provider_without_wallet_or_a_paused_round_changes_nothing() {
        let acc = accounts();
        let p = acc.payout_account("p").unwrap();
        let mut pay = Payouts::default();
        pay.created(p);
        assert!(pay.after_round(&unpaid(&["gone"]), &acc, 0).is_empty());
        assert!(pay.after_round(&RoundReport::default(), &acc, 0).is_empty());
        assert!(!pay.due(&p, 0));
    }
}
