//! Settlement against a real local Solana validator: batches of ≥1000 records per
//! transaction, memo roots that verify every record, balances that add up to the base
//! unit, and exactly one settlement whatever step a crash interrupts.
#![allow(clippy::unwrap_used)]

mod chainsupport;

use std::time::Duration;

use chainsupport::{Chain, init_tracing, records, sum_by};
use gpufed_chain::store::MemoryStore;
use gpufed_chain::{ChainError, FaultPoint, verify};
use gpufed_settlement::{Commitment, RecordStatus};

const ESCROW: u64 = 10_000_000_000; // 10,000 tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_settle_once_with_verifiable_memo_roots() {
    init_tracing();
    let tenants = ["team-a", "team-b", "team-c"];
    let providers = ["dc-1", "dc-2", "miner-3", "home-4"];
    let chain = Chain::start(&tenants, &providers, ESCROW).await;
    let recs = records("bulk", &tenants, &providers, 10, 25, 1_700_000_000);
    assert_eq!(recs.len(), 3000);

    let store = MemoryStore::default();
    let mut settler = chain.settler(store).await;
    assert_eq!(settler.append(recs.clone()).await.unwrap(), 3000);
    // Appending again (a re-metered interval after a restart) is a no-op.
    assert_eq!(settler.append(recs.clone()).await.unwrap(), 0);

    let t = std::time::Instant::now();
    let report = settler
        .drain(Duration::from_secs(180), Duration::from_millis(300))
        .await
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(report.backlog, 0, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let batches: Vec<_> = settler.journal().batches().collect();
    assert!(!batches.is_empty());
    let max_records = batches.iter().map(|b| b.records.len()).max().unwrap();
    assert!(
        max_records >= 1000,
        "a transaction anchors ≥1000 records, got {max_records}"
    );
    eprintln!(
        "settled {} records in {} transaction(s) in {elapsed:?} ({:.0} records/s at finalized)",
        recs.len(),
        batches.len(),
        recs.len() as f64 / elapsed.as_secs_f64()
    );

    // Every record's proof leads to the root in the memo of its finalized transaction.
    let mut fetched = std::collections::BTreeMap::new();
    let proofs = settler.journal().proofs(recs.iter().map(|r| &r.id));
    assert_eq!(proofs.len(), recs.len(), "every settled record has a proof");
    for r in &recs {
        assert!(matches!(
            settler.journal().status(&r.id),
            Some(RecordStatus::Settled(_))
        ));
        let proof = &proofs[&r.id];
        let sig = proof.signature.clone().expect("signature");
        if !fetched.contains_key(&sig) {
            let tx = chain
                .rpc
                .transaction_when_served(&sig, Commitment::Finalized, Duration::from_secs(30))
                .await
                .unwrap()
                .expect("tx on chain");
            fetched.insert(sig.clone(), tx);
        }
        let verdict = verify::judge(&fetched[&sig], r, &proof.proof);
        assert!(matches!(verdict, verify::Verdict::Verified { .. }), "{verdict:?}");
    }
    // A tampered record does not verify against the same root.
    let (sig, tx) = fetched.iter().next().unwrap();
    let mut forged = recs[0].clone();
    forged.amount += 1;
    let proof = settler.journal().proof(&recs[0].id).unwrap();
    assert!(proof.signature.as_deref() == Some(sig.as_str()) || fetched.len() > 1);
    assert!(matches!(
        verify::judge(tx, &forged, &proof.proof),
        verify::Verdict::ProofMismatch { .. }
    ));
    // The online check agrees.
    let online = verify::verify_record(
        &chain.rpc,
        &recs[0],
        &proof.proof,
        proof.signature.as_deref().unwrap(),
    )
    .await
    .unwrap();
    assert!(matches!(online, verify::Verdict::Verified { .. }), "{online:?}");

    // Balances add up exactly: what tenants paid is what providers got, record by record.
    let by_tenant = sum_by(&recs, |r| &r.tenant);
    let by_provider = sum_by(&recs, |r| &r.provider);
    for t in tenants {
        assert_eq!(chain.escrow_balance(t).await, ESCROW - by_tenant[t], "tenant {t}");
    }
    for p in providers {
        assert_eq!(chain.payout_balance(p).await, by_provider[p], "provider {p}");
    }
    assert_eq!(by_tenant.values().sum::<u64>(), by_provider.values().sum::<u64>());

    // Past its retention the settled history is pruned, and its jobs' totals stay.
    let totals = |s: &gpufed_chain::Settler<MemoryStore>| {
        let uids: std::collections::BTreeSet<&str> = recs.iter().map(|r| r.job.uid.as_str()).collect();
        uids.into_iter()
            .map(|u| (u.to_owned(), s.journal().billing(u).settled))
            .collect::<Vec<_>>()
    };
    let before = totals(&settler);
    let keep = gpufed_settlement::Retention {
        batches: 1,
        records: 1000,
    };
    let (pruned, forgotten) = settler.retain(&keep, &Default::default()).await.unwrap();
    assert!(pruned >= 2000, "{pruned} of 3000 settled records pruned");
    assert_eq!(forgotten, 0);
    let (kept_batches, kept_records) = settler.journal().history();
    assert!(
        kept_batches <= 1 && kept_records <= 500,
        "{kept_batches} {kept_records}"
    );
    assert_eq!(totals(&settler), before, "settled totals survive pruning");
    // What was persisted is the pruned journal, and metering it all again adds nothing:
    // no second transaction, the balances stay.
    let mut reopened = chain.settler(settler.into_store()).await;
    assert_eq!(reopened.journal().history(), (kept_batches, kept_records));
    assert_eq!(reopened.append(recs.clone()).await.unwrap(), 0);
    let report = reopened.round().await.unwrap();
    assert!(report.planned.is_empty(), "{report:?}");
    for t in tenants {
        assert_eq!(chain.escrow_balance(t).await, ESCROW - by_tenant[t], "tenant {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_settles_exactly_once() {
    init_tracing();
    let points = [
        FaultPoint::BeforeSign,
        FaultPoint::AfterSignBeforePersist,
        FaultPoint::AfterPersistBeforeSend,
        FaultPoint::AfterSend,
        FaultPoint::BeforeRecordStatus,
    ];
    let providers: Vec<String> = (0..points.len()).map(|i| format!("p-{i}")).collect();
    let provider_refs: Vec<&str> = providers.iter().map(String::as_str).collect();
    let chain = Chain::start(&["tenant"], &provider_refs, ESCROW).await;
    // The five crash points run at once, each with its own journal and provider (so its
    // payout account counts only its own settlements): each waits for finality (~45 s on
    // the debug validator before its clock was unstarved, ~18 s now); one after another
    // they took ~8 minutes of CI.
    let runs = points
        .into_iter()
        .enumerate()
        .map(|(i, point)| crash_once(&chain, i, point, provider_refs[i]));
    futures::future::join_all(runs).await;
}

/// One settler crashes at `point`; a new one on the same journal settles exactly once.
async fn crash_once(chain: &Chain, i: usize, point: FaultPoint, p: &str) {
    let recs = records(&format!("crash{i}"), &["tenant"], &[p], 2, 5, 1_700_000_000);
    let expected: u64 = recs.iter().map(|r| r.amount).sum();
    let store = MemoryStore::default();
    let mut settler = chain.settler(store.clone()).await;
    settler.append(recs.clone()).await.unwrap();
    let mut fired = false;
    settler.inject_faults(move |at| {
        let hit = at == point && !fired;
        fired |= hit;
        hit
    });
    // Run until the crash fires (the escrow must be finalized before the first batch is
    // planned, and status polls come a few rounds later).
    let mut crashed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        match settler.round().await {
            Err(ChainError::InjectedCrash(at)) => {
                assert_eq!(at, point);
                crashed = true;
                break;
            }
            Ok(r) if r.backlog == 0 => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(crashed, "{point:?} never reached");
    drop(settler);

    // A new process on the same journal resolves what was in flight.
    let mut settler = chain.settler(store).await;
    let report = settler
        .drain(Duration::from_secs(180), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(report.backlog, 0, "{point:?}: {report:?}");
    assert_eq!(
        chain.payout_balance(p).await,
        expected,
        "{point:?}: paid exactly once"
    );
    assert_eq!(
        chain.payout_transactions(p).await,
        2, // the ATA creation + exactly one settlement
        "{point:?}: exactly one settlement transaction on chain"
    );
}
