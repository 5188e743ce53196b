//! The settler against a stateful fake node: pairs that cannot settle are held with a
//! reason while the others settle, batches that cannot be signed never take a lane for
//! good, and an expired batch is re-signed only once its signature is proven dead.

use std::collections::BTreeMap;

use gpufed_settlement::{AttemptMeter, BackoffConfig, Batch, JobRef, Journal, MachineConfig, TxPhase};
use serde_json::json;

use super::*;
use crate::fake_chain::{FakeChain, confirmed};
use crate::payout::token_account_json;
use crate::programs::associated_token_address;
use crate::store::MemoryStore;

/// A node with an escrow for tenant `team-a` delegated to the authority and a payout
/// account that can receive for every provider in `payable`; wallets for every provider
/// in `wallets`.
struct World {
    chain: FakeChain,
    authority: Keypair,
    cfg: SettlerConfig,
    store: MemoryStore,
}

fn world(wallets: &[&str], payable: &[&str]) -> World {
    let authority = Keypair::generate();
    let mint = Keypair::generate().pubkey();
    let escrow = Keypair::generate().pubkey();
    let chain = FakeChain::default();
    let mut cfg = SettlerConfig {
        machine: MachineConfig {
            commitment: Commitment::Confirmed,
            poll_ms: 0,
            backoff: BackoffConfig {
                base_ms: 0,
                max_ms: 0,
                jitter_pct: 0,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    cfg.accounts.mint = mint;
    cfg.accounts.decimals = 6;
    cfg.accounts.escrows.insert("team-a".into(), escrow);
    chain.with(|s| {
        s.slot = 10;
        s.height = 5;
        s.blockhash = 1;
        s.last_valid = 100;
        let mut e = token_account_json(&mint, &Keypair::generate().pubkey(), 1_000_000_000, "initialized");
        e["data"]["parsed"]["info"]["delegate"] = json!(authority.pubkey().to_string());
        e["data"]["parsed"]["info"]["delegatedAmount"] = json!({"amount": "1000000000", "decimals": 6});
        s.accounts.insert(escrow.to_string(), e);
    });
    for p in wallets {
        let wallet = Keypair::generate().pubkey();
        cfg.accounts.payout_wallets.insert((*p).into(), wallet);
        if payable.contains(p) {
            set_payout(
                &chain,
                &cfg,
                p,
                Some(token_account_json(&mint, &wallet, 0, "initialized")),
            );
        }
    }
    World {
        chain,
        authority,
        cfg,
        store: MemoryStore::default(),
    }
}

/// Sets (or removes) provider `p`'s payout token account on the node.
fn set_payout(chain: &FakeChain, cfg: &SettlerConfig, p: &str, value: Option<serde_json::Value>) {
    let ata = associated_token_address(&cfg.accounts.payout_wallets[p], &cfg.accounts.mint).to_string();
    chain.with(|s| match value {
        Some(v) => s.accounts.insert(ata, v),
        None => s.accounts.remove(&ata),
    });
}

/// One record of a job of `team-a` run on `provider`.
fn record(provider: &str, job: &str) -> gpufed_settlement::UsageRecord {
    let job = JobRef {
        namespace: "team-a".into(),
        name: job.into(),
        uid: format!("uid-{job}"),
    };
    let mut m = AttemptMeter::new(job, 1, provider.into(), "team-a".into(), 1_000_000);
    m.record(1_700_000_000, 1_700_000_060, 1).unwrap()
}

async fn settler(w: &World) -> Settler<MemoryStore> {
    let rpc = Rpc::new(&w.chain.serve().await, Duration::from_secs(2)).unwrap();
    Settler::open(
        rpc,
        Keypair::from_json(&w.authority.to_json()).unwrap(),
        w.store.clone(),
        w.cfg.clone(),
    )
    .await
    .unwrap()
}

fn paid(j: &Journal) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for b in j.batches().filter(|b| matches!(b.tx.phase, TxPhase::Done { .. })) {
        for t in &b.transfers {
            *out.entry(t.provider.clone()).or_default() += t.amount;
        }
    }
    out
}

#[tokio::test]
async fn a_provider_whose_payout_account_cannot_receive_waits_with_its_reason_and_the_others_settle() {
    // p2's payout account was refused at creation: a batch paying it would fail on chain,
    // and with it every other pair in the batch, again each time it is re-batched.
    let w = world(&["p1", "p2"], &["p1"]);
    w.chain.with(|s| s.land = true);
    let mut s = settler(&w).await;
    s.append(vec![record("p2", "a"), record("p1", "b")])
        .await
        .unwrap();
    let r = s.round().await.unwrap();
    assert_eq!(r.planned.len(), 1, "{r:?}");
    let b = s.journal().batch(r.planned[0]).unwrap();
    let providers: Vec<&str> = b.transfers.iter().map(|t| t.provider.as_str()).collect();
    assert_eq!(providers, ["p1"], "the pair that cannot be paid is left out");
    assert_eq!(r.unpaid, ["p2"]);
    assert!(r.unpaid_reasons["p2"].contains("does not exist"), "{r:?}");
    // An account of someone else at the address: still held, with that reason.
    let (mint, stranger) = (w.cfg.accounts.mint, Keypair::generate().pubkey());
    set_payout(
        &w.chain,
        &w.cfg,
        "p2",
        Some(token_account_json(&mint, &stranger, 0, "initialized")),
    );
    let r = s.round().await.unwrap();
    assert!(
        r.unpaid_reasons["p2"].contains("not to the provider's payout wallet"),
        "{r:?}"
    );
    assert_eq!(
        paid(s.journal()).keys().collect::<Vec<_>>(),
        ["p1"],
        "p1 settled meanwhile"
    );
    // Fixed: p2's records settle too.
    let wallet = w.cfg.accounts.payout_wallets["p2"];
    set_payout(
        &w.chain,
        &w.cfg,
        "p2",
        Some(token_account_json(&mint, &wallet, 0, "initialized")),
    );
    for _ in 0..4 {
        s.round().await.unwrap();
    }
    assert_eq!(s.journal().backlog_records(), 0);
    assert_eq!(paid(s.journal()).len(), 2);
    let signed: Vec<&Batch> = s.journal().batches().collect();
    assert!(
        signed.iter().all(|b| matches!(b.tx.phase, TxPhase::Done { .. })),
        "{signed:?}"
    );
}

/// A journal holding one batch, never signed, of the records of `providers`.
fn planned(providers: &[&str]) -> Journal {
    let mut j = Journal::new();
    for (i, p) in providers.iter().enumerate() {
        j.append(record(p, &format!("job{i}"))).unwrap();
    }
    j.plan_batch(&Default::default(), &Default::default(), 0).unwrap();
    j
}

#[tokio::test]
async fn a_planned_batch_that_cannot_be_signed_for_a_provider_gone_is_taken_back_and_the_rest_settles() {
    // Planned before provider "gone" was deleted: it could never be signed, and backed off
    // forever in one of the in-flight lanes with p1's records in it.
    let w = world(&["p1"], &["p1"]);
    w.chain.with(|s| s.land = true);
    w.store.clone().save(&planned(&["p1", "gone"])).await.unwrap();
    let mut s = settler(&w).await;
    let r = s.round().await.unwrap();
    assert_eq!(r.withdrawn.len(), 1, "{r:?}");
    assert_eq!(r.withdrawn[0].0, 0);
    assert!(r.withdrawn[0].1.contains("\"gone\""), "{r:?}");
    assert_eq!(r.unpaid, ["gone"]);
    assert!(r.unpaid_reasons["gone"].contains("no payout wallet"));
    assert!(s.journal().batch(0).is_none(), "the lane is free");
    for _ in 0..3 {
        s.round().await.unwrap();
    }
    assert_eq!(paid(s.journal()).keys().collect::<Vec<_>>(), ["p1"]);
    assert_eq!(s.journal().backlog_records(), 1, "gone's record waits, unbatched");
    assert_eq!(s.journal().pending().len(), 1);
    // Persisted: a restart does not bring the withdrawn batch back.
    let stored = w.store.clone().load().await.unwrap().unwrap();
    assert!(stored.batch(0).is_none());
}

#[tokio::test]
async fn a_planned_batch_paying_an_account_that_cannot_receive_is_taken_back_unsigned() {
    // The payout account was frozen after the batch was planned: signed, it would only
    // fail on chain (the fee paid) and return every record in it to the queue.
    let w = world(&["p1", "p2"], &["p1"]);
    let wallet = w.cfg.accounts.payout_wallets["p2"];
    let frozen = token_account_json(&w.cfg.accounts.mint, &wallet, 0, "frozen");
    set_payout(&w.chain, &w.cfg, "p2", Some(frozen));
    w.store.clone().save(&planned(&["p1", "p2"])).await.unwrap();
    let mut s = settler(&w).await;
    let r = s.round().await.unwrap();
    assert!(
        r.withdrawn
            .iter()
            .any(|(id, why)| *id == 0 && why.contains("frozen")),
        "{r:?}"
    );
    assert!(s.journal().batch(0).is_none(), "never signed");
    for b in s.journal().batches() {
        assert!(b.transfers.iter().all(|t| t.provider == "p1"), "{b:?}");
    }
}

#[tokio::test]
async fn a_signed_batch_is_never_taken_back_even_when_its_provider_goes() {
    // Exactly once: a batch whose signature may still land is resolved by it, never
    // dropped (its records re-batched would be paid twice).
    let w = world(&["p1"], &["p1"]);
    let mut s = settler(&w).await;
    s.append(vec![record("p1", "a")]).await.unwrap();
    s.round().await.unwrap();
    let sig = s.journal().batch(0).unwrap().tx.signature().unwrap().to_string();
    let mut accounts = w.cfg.accounts.clone();
    accounts.payout_wallets.clear();
    s.set_accounts(accounts);
    let r = s.round().await.unwrap();
    assert!(r.withdrawn.is_empty(), "{r:?}");
    assert_eq!(s.journal().batch(0).unwrap().tx.signature(), Some(sig.as_str()));
    w.chain.with(|c| c.statuses.insert(sig.clone(), confirmed(11)));
    let r = s.round().await.unwrap();
    assert_eq!(r.settled, [(0, sig)]);
}

#[tokio::test]
async fn a_batch_that_cannot_be_signed_backs_off_with_its_reason_and_the_round_goes_on() {
    // A node answering getLatestBlockhash with something unreadable (and any other
    // signing error but the node's transport): the round ended, and with it the
    // settlement term, again after every restart.
    let w = world(&["p1"], &["p1"]);
    w.chain.with(|s| {
        s.land = true;
        s.blockhash_answer = Some(Ok(json!({"context": {"slot": 10}, "value": {}})));
    });
    let mut s = settler(&w).await;
    s.append(vec![record("p1", "a")]).await.unwrap();
    let r = s.round().await.expect("the round goes on");
    assert_eq!(r.sign_errors.len(), 1, "{r:?}");
    assert!(r.sign_errors[0].1.contains("blockhash"), "{r:?}");
    let b = s.journal().batch(0).unwrap();
    assert_eq!(b.tx.phase, TxPhase::Pending);
    assert_eq!(b.tx.failures, 1, "it backs off");
    w.chain.with(|c| c.blockhash_answer = None);
    for _ in 0..3 {
        s.round().await.unwrap();
    }
    assert_eq!(s.journal().backlog_records(), 0);
}

#[tokio::test]
async fn an_expired_unseen_batch_is_re_signed_with_a_fresh_blockhash_and_a_stale_one_waits() {
    let w = world(&["p1"], &["p1"]);
    let mut s = settler(&w).await;
    s.append(vec![record("p1", "a")]).await.unwrap();
    s.round().await.unwrap();
    let first = s.journal().batch(0).unwrap().tx.signature().unwrap().to_string();
    // Still valid and unseen: the same bytes again, never a new signature.
    s.round().await.unwrap();
    assert_eq!(w.chain.with(|c| c.sent.clone()), [first.clone(), first.clone()]);
    // Past its last valid height and still unknown: proven dead. A node behind hands out
    // the same blockhash again, which signs the same dead signature: refused, retried.
    w.chain.with(|c| {
        c.height = 150;
        c.slot = 200;
    });
    let r = s.round().await.expect("a stale blockhash does not end the round");
    assert_eq!(r.sign_errors.len(), 1, "{r:?}");
    let b = s.journal().batch(0).unwrap();
    assert_eq!(b.tx.phase, TxPhase::Pending);
    assert_eq!(b.tx.expired_signatures, std::slice::from_ref(&first));
    // A fresh blockhash: a new signature, which lands; the dead one is never sent again.
    w.chain.with(|c| {
        c.blockhash = 2;
        c.last_valid = 300;
        c.land = true;
    });
    s.round().await.unwrap();
    let r = s.round().await.unwrap();
    let second = s.journal().batch(0).unwrap().tx.signature().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(r.settled, [(0, second.clone())]);
    assert_eq!(w.chain.with(|c| c.sent.clone()), [first.clone(), first, second]);
}

#[tokio::test]
async fn a_signature_found_after_its_blockhash_expired_is_never_re_signed() {
    let w = world(&["p1"], &["p1"]);
    let mut s = settler(&w).await;
    s.append(vec![record("p1", "a")]).await.unwrap();
    s.round().await.unwrap();
    let sig = s.journal().batch(0).unwrap().tx.signature().unwrap().to_string();
    w.chain.with(|c| {
        c.height = 150;
        c.slot = 200;
        c.blockhash = 2;
        c.statuses.insert(sig.clone(), confirmed(90));
    });
    let r = s.round().await.unwrap();
    assert_eq!(r.settled, [(0, sig.clone())]);
    assert_eq!(w.chain.with(|c| c.sent.clone()), [sig]);
}
