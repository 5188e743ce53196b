//! The chain goes away while jobs keep metering: the backlog only grows, nothing is lost,
//! and after the validator returns every record settles exactly once.
//!
//! Outage length: `GPUFED_CHAIN_OUTAGE_SECS` (default 30 s in CI).
//!
//! The batch in flight at the stop is confirmed in a slot the validator has not rooted. When
//! the restart drops that slot, the node later reports the dropped transaction `finalized`
//! from a stale status (`forks`), and it is re-signed only once the restarted chain's
//! finalized height has passed its blockhash's last valid height (~150 blocks), so the
//! drain takes minutes; when the restart keeps the slot, the batch is final as it was.
#![allow(clippy::unwrap_used)]

mod chainsupport;
mod forks;

use std::time::{Duration, Instant};

use chainsupport::{Chain, init_tracing, records, sum_by};
use gpufed_chain::store::MemoryStore;

/// Escrow per tenant for a 30 s outage; longer outages scale it (see [`escrow_for`]).
const ESCROW: u64 = 10_000_000_000;

/// Enough escrow that every tenant can pay for everything metered during `outage` (80
/// one-minute 8-GPU records per wave, one wave per 2 s at most): a shortfall would hold the
/// tenant out of batches and leave a backlog that says nothing about the outage. (A
/// 60-minute run with the 30 s escrow owed 1.35× its balance.)
fn escrow_for(outage: Duration) -> u64 {
    let waves = outage.as_secs() / 2 + 10;
    let per_tenant_wave = 40 * (8 * 60 * chainsupport::PRICE).div_ceil(3600);
    ESCROW.max(2 * waves * per_tenant_wave)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_outage_grows_the_backlog_then_drains_exactly_once() {
    init_tracing();
    let outage = Duration::from_secs(
        std::env::var("GPUFED_CHAIN_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let tenants = ["team-a", "team-b"];
    let providers = ["dc-1", "dc-2"];
    let escrow = escrow_for(outage);
    let mut chain = Chain::start(&tenants, &providers, escrow).await;
    let store = MemoryStore::default();
    let mut settler = chain.settler(store.clone()).await;

    // Before the outage: one batch signed and broadcast, confirmed in a slot the node has
    // not rooted yet: the restart may drop that slot and re-produce its number.
    let mut all = records("before", &tenants, &providers, 5, 10, 1_700_000_000);
    settler.append(all.clone()).await.unwrap();
    let r = settler.round().await.unwrap();
    assert_eq!(r.planned.len(), 1, "{r:?}");
    let in_flight = settler.journal().in_flight().next().unwrap();
    let in_flight = in_flight.tx.signature().unwrap().to_owned();
    let landed = forks::wait_confirmed_unrooted(&chain.rpc, &in_flight).await;

    // The chain goes away. Jobs keep running and finishing: metering keeps appending.
    chain.validator.stop();
    let start = Instant::now();
    let mut wave = 0u64;
    let mut errors = 0;
    while start.elapsed() < outage {
        let recs = records(
            &format!("during{wave}"),
            &tenants,
            &providers,
            2,
            10,
            1_700_100_000 + wave * 1000,
        );
        settler.append(recs.clone()).await.unwrap();
        all.extend(recs);
        wave += 1;
        let r = settler
            .round()
            .await
            .expect("an outage is not an error of the settler");
        errors += r.rpc_errors;
        assert_eq!(
            r.backlog,
            all.len(),
            "nothing settles and nothing is lost while the chain is down"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(errors > 0, "the settler saw the outage");

    // The process restarts during the outage too (journal survives in the store).
    drop(settler);
    let mut settler = chain.settler(store).await;
    assert_eq!(settler.journal().backlog_records(), all.len());

    chain
        .validator
        .resume()
        .await
        .expect("validator restarts on its ledger");
    forks::status_agrees_with_the_chain(&chain.rpc, &in_flight, landed).await;
    let t = Instant::now();
    let report = settler
        .drain(Duration::from_secs(600), Duration::from_millis(300))
        .await
        .unwrap();
    let drain = t.elapsed();
    assert_eq!(report.backlog, 0, "{report:?}");
    eprintln!(
        "outage {outage:?}: {} records backlogged, drained in {drain:?} ({:.0} records/s), {} batches",
        all.len(),
        all.len() as f64 / drain.as_secs_f64(),
        settler.journal().batches().count()
    );

    let by_tenant = sum_by(&all, |r| &r.tenant);
    let by_provider = sum_by(&all, |r| &r.provider);
    for t in tenants {
        assert_eq!(
            chain.escrow_balance(t).await,
            escrow - by_tenant[t],
            "tenant {t} paid exactly once"
        );
    }
    for p in providers {
        assert_eq!(
            chain.payout_balance(p).await,
            by_provider[p],
            "provider {p} paid exactly once"
        );
        let batches_with_p = settler
            .journal()
            .batches()
            .filter(|b| b.transfers.iter().any(|t| t.provider == p))
            .count();
        // ATA creation + one transaction per batch that paid this provider.
        assert_eq!(
            chain.payout_transactions(p).await,
            1 + batches_with_p,
            "provider {p}"
        );
    }
}
