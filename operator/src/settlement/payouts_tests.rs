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

const MIN: u64 = 60_000;

#[test]
fn a_closed_account_is_created_again_paced_and_not_after_three_losses() {
    let acc = accounts();
    let (p, q) = (acc.payout_account("p").unwrap(), acc.payout_account("q").unwrap());
    let mut pay = Payouts::default();
    assert!(pay.due(&p, 0));
    assert!(pay.creating(p, 0), "missing: created");
    pay.exists(p);
    pay.exists(q);
    assert!(!pay.due(&p, 0), "created: not looked up every round");
    // p's owner closed it: the next round reports p unpaid; q still receives.
    assert_eq!(pay.after_round(&unpaid(&["p"]), &acc), vec!["p"]);
    assert!(!pay.due(&q, 1_000));
    assert!(!pay.due(&p, MIN - 1), "a minute after the last creation");
    assert!(pay.due(&p, MIN));
    // Reported unpaid while not ready (a creation failed or not tried): nothing new.
    assert!(pay.after_round(&unpaid(&["p"]), &acc).is_empty());
    assert!(pay.creating(p, MIN), "the first loss: created again");
    pay.exists(p);
    pay.after_round(&unpaid(&["p"]), &acc);
    assert!(!pay.due(&p, MIN + 2 * MIN - 1), "then two minutes");
    assert!(pay.creating(p, 3 * MIN), "the second loss: created again");
    pay.exists(p);
    assert!(!pay.given_up(&p));
    pay.after_round(&unpaid(&["p"]), &acc);
    assert!(pay.due(&p, 10 * MIN), "looked up once more");
    assert!(!pay.creating(p, 10 * MIN), "the third loss: not created again");
    assert!(pay.given_up(&p));
    for later in [10 * MIN, 1_000 * MIN, u64::MAX] {
        assert!(!pay.due(&p, later), "never looked up or created again");
    }
    // Its Event says the provider must create its own; q's reason is the settler's.
    let reasons = pay.reasons(&unpaid(&["p", "q"]), &acc);
    assert!(
        reasons["p"].starts_with("payout token account X of wallet Y does not exist; ")
            && reasons["p"].contains("must create its own"),
        "{}",
        reasons["p"]
    );
    assert_eq!(reasons["q"], "payout token account X of wallet Y does not exist");
}

#[test]
fn every_creation_attempt_is_paced_not_only_after_a_loss() {
    // A creation that fails on chain (or is not confirmed in time) leaves the account
    // missing: the next one waits, a minute, doubling, at most an hour.
    let acc = accounts();
    let p = acc.payout_account("p").unwrap();
    let mut pay = Payouts::default();
    assert!(pay.creating(p, 0));
    assert!(!pay.due(&p, 1_000), "not the next round");
    assert!(!pay.due(&p, MIN - 1));
    assert!(pay.creating(p, MIN));
    assert!(!pay.due(&p, MIN + 2 * MIN - 1));
    assert!(pay.due(&p, 3 * MIN));
    let mut at = 3 * MIN;
    for _ in 0..40 {
        assert!(pay.creating(p, at));
        at += 3_600_000;
        assert!(pay.due(&p, at), "at most an hour apart");
    }
    // None of this was a loss: it never existed.
    assert!(!pay.given_up(&p));
}

#[test]
fn a_refusal_in_simulation_is_not_paced_and_an_existing_account_is_no_loss() {
    let acc = accounts();
    let p = acc.payout_account("p").unwrap();
    let mut pay = Payouts::default();
    assert!(pay.creating(p, 0));
    pay.not_sent(&p);
    assert!(pay.due(&p, 1_000), "nothing sent: tried again next round");
    // Reported unpaid but still there (frozen): found, not a loss, however often.
    pay.exists(p);
    for i in 0..10 {
        pay.after_round(&unpaid(&["p"]), &acc);
        assert!(pay.due(&p, i));
        pay.exists(p);
    }
    pay.after_round(&unpaid(&["p"]), &acc);
    assert!(pay.creating(p, 0), "missing now: its first loss");
}

#[test]
fn a_provider_without_wallet_or_a_paused_round_changes_nothing() {
    let acc = accounts();
    let p = acc.payout_account("p").unwrap();
    let mut pay = Payouts::default();
    pay.exists(p);
    assert!(pay.after_round(&unpaid(&["gone"]), &acc).is_empty());
    assert!(pay.after_round(&RoundReport::default(), &acc).is_empty());
    assert!(!pay.due(&p, 0));
}
