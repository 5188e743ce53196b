//! Simulation tests: the journal and machine driven against a deterministic chain model
//! with crash injection at every step, RPC outages, chain halts, dropped packets and
//! blockhash expiry. Every record must settle exactly once, none lost, none doubled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "sim/chain.rs"]
mod chain;
mod common;
#[path = "sim/driver.rs"]
mod driver;

use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::{Memo, RecordStatus, verify_proof};
use proptest::prelude::*;

use chain::{Chain, Weather, escrow, payout};
use common::{Rng, records};
use driver::{Crash, Driver};

const FUNDS: u64 = 1_000_000_000_000;

fn setup(seed: u64, jobs: usize, per_job: usize) -> Driver {
    let mut rng = Rng(seed);
    let recs = records(jobs, per_job, 4, &mut rng);
    let mut chain = Chain::new(seed ^ 0xabcdef);
    for t in 0..3 {
        chain.balances.insert(escrow(&format!("tenant-{t}")), FUNDS);
    }
    Driver::new(chain, recs, seed)
}

/// Runs metering (one record per job every 10 iterations) with `weather(i)` applied, then
/// clears all faults and runs until the backlog is empty.
fn run(d: &mut Driver, per_job: usize, weather: impl Fn(usize) -> Weather) {
    let metering = per_job * 10;
    for i in 0..metering {
        d.chain.weather = weather(i);
        d.iterate(i / 10 + 1);
    }
    d.chain.weather = Weather::Fine;
    d.crash_pct = 0;
    d.crash_once.clear();
    d.chain.drop_pct = 0;
    d.chain.ack_loss_pct = 0;
    for _ in 0..20_000 {
        if d.journal.backlog_records() == 0 && d.journal.in_flight().count() == 0 {
            return;
        }
        d.iterate(per_job);
    }
    panic!(
        "backlog did not drain: {} records left",
        d.journal.backlog_records()
    );
}

fn assert_exactly_once(d: &Driver) {
    let all: Vec<_> = d.jobs.iter().flatten().collect();
    assert_eq!(d.journal.backlog_records(), 0);
    let mut count: BTreeMap<_, u32> = BTreeMap::new();
    let mut batches_on_chain: BTreeSet<u64> = BTreeSet::new();
    for (_, landed) in d.chain.successes() {
        let Some(Memo::Batch { id, root, count: n }) = Memo::parse(&landed.tx.memo) else {
            panic!("bad memo {}", landed.tx.memo)
        };
        assert!(batches_on_chain.insert(id), "batch {id} landed twice");
        let b = d.journal.batch(id).expect("landed batch unknown to the journal");
        assert_eq!(b.root, root);
        assert_eq!(b.records.len() as u64, n);
        for r in &b.records {
            *count.entry(*r).or_default() += 1;
        }
    }
    for r in &all {
        assert_eq!(
            count.get(&r.id),
            Some(&1),
            "record {} settled {:?} times",
            r.id,
            count.get(&r.id)
        );
        assert!(matches!(d.journal.status(&r.id), Some(RecordStatus::Settled(_))));
        let p = d.journal.proof(&r.id).unwrap();
        assert!(verify_proof(r, &p.proof, &p.root));
        let landed = d.chain.landed.get(p.signature.as_deref().unwrap()).unwrap();
        assert!(landed.tx.memo.contains(&p.root.to_hex()));
    }
    assert_eq!(count.len(), all.len());
    // Balances add up to the base unit.
    let mut debit: BTreeMap<String, u64> = BTreeMap::new();
    let mut credit: BTreeMap<String, u64> = BTreeMap::new();
    for r in &all {
        *debit.entry(escrow(&r.tenant)).or_default() += r.amount;
        *credit.entry(payout(&r.provider)).or_default() += r.amount;
    }
    for (acct, d_amt) in &debit {
        assert_eq!(FUNDS - d.chain.balances[acct], *d_amt, "{acct}");
    }
    for (acct, c_amt) in &credit {
        assert_eq!(d.chain.balances.get(acct).copied().unwrap_or(0), *c_amt, "{acct}");
    }
    assert_eq!(d.chain.total_tokens(), 3 * FUNDS);
}

#[test]
fn settles_exactly_once_without_faults() {
    let mut d = setup(1, 12, 6);
    run(&mut d, 6, |_| Weather::Fine);
    assert_exactly_once(&d);
    // 72 records in batches of at most 16: at least 5 batches, no re-signs needed.
    assert!(d.journal.batches().count() >= 5);
    assert!(d.journal.batches().all(|b| b.tx.resigns == 0));
}

#[test]
fn every_crash_point_once_still_settles_exactly_once() {
    let points = [
        Crash::BeforeSign,
        Crash::AfterSignBeforePersist,
        Crash::AfterPersistBeforeSend,
        Crash::AfterSend,
        Crash::BeforeRecordingStatus,
        Crash::DuringConfirmation,
        Crash::AfterPlanBeforePersist,
        Crash::AfterAppendBeforePersist,
    ];
    for p in points {
        let mut d = setup(7, 9, 5);
        d.crash_once.insert(p);
        run(&mut d, 5, |_| Weather::Fine);
        assert_eq!(d.crashes.get(&p), Some(&1), "{p:?} never fired");
        assert_exactly_once(&d);
    }
}

#[test]
fn rpc_outage_only_grows_the_backlog_then_drains() {
    let mut d = setup(3, 9, 8);
    let mut backlog = Vec::new();
    for i in 0..80 {
        d.chain.weather = if (20..60).contains(&i) {
            Weather::RpcDown
        } else {
            Weather::Fine
        };
        d.iterate(i / 10 + 1);
        backlog.push(d.journal.backlog_records());
    }
    // During the outage nothing settles: the backlog never shrinks.
    assert!(backlog[21..60].windows(2).all(|w| w[1] >= w[0]), "{backlog:?}");
    assert!(backlog[59] > backlog[20]);
    run(&mut d, 8, |_| Weather::Fine);
    assert_exactly_once(&d);
}

#[test]
fn dropped_packets_expire_and_are_resigned_once_proven_dead() {
    let mut d = setup(5, 6, 4);
    d.chain.drop_pct = 100;
    // Every broadcast is lost for long enough that blockhashes expire.
    for i in 0..(40 + chain::VALIDITY as usize + chain::FINALITY as usize) {
        d.iterate(i / 10 + 1);
    }
    assert!(d.chain.landed.is_empty());
    d.chain.drop_pct = 0;
    run(&mut d, 4, |_| Weather::Fine);
    assert!(
        d.journal.batches().any(|b| b.tx.resigns > 0),
        "expected at least one re-sign"
    );
    assert_exactly_once(&d);
}

#[test]
fn chain_halt_keeps_the_signature_and_does_not_resign() {
    let mut d = setup(11, 6, 4);
    run(&mut d, 4, |i| {
        if (5..35).contains(&i) {
            Weather::Halted
        } else {
            Weather::Fine
        }
    });
    // The height did not move, so no blockhash expired: the same signatures landed.
    assert!(d.journal.batches().all(|b| b.tx.resigns == 0));
    assert_exactly_once(&d);
}

/// Behind a load balancer, the status query may reach a node far behind the one that
/// said the blockhash expired; its "unknown" for a batch that landed late must not re-sign
/// it (the batch would be paid twice).
#[test]
fn an_unknown_from_a_lagging_rpc_node_never_resigns_a_landed_batch() {
    use gpufed_settlement::machine::TxPhase;
    for seed in 0..3 {
        let mut d = setup(100 + seed, 6, 4);
        d.chain.lag = 120;
        // Every broadcast lost until a batch nears its last valid height; then its next
        // broadcast lands, and every status query reaches the lagging node, which has not
        // seen that block, until the expiry has been observed.
        d.chain.drop_pct = 100;
        let mut late = None;
        for i in 0..400 {
            d.iterate((i / 10 + 1).min(4));
            let lvbh = d.journal.batches().find_map(|b| match &b.tx.phase {
                TxPhase::InFlight { intent, .. } => Some(intent.last_valid_block_height),
                _ => None,
            });
            if late.is_none() && lvbh.is_some_and(|l| d.chain.height + 8 >= l) {
                late = Some(i);
                d.chain.drop_pct = 0;
                d.chain.lagging_pct = 100;
            }
            if late.is_some_and(|l| i > l + 100) {
                break;
            }
        }
        assert!(late.is_some(), "a batch reached its last valid height");
        d.chain.lagging_pct = 0;
        run(&mut d, 4, |_| Weather::Fine);
        assert_exactly_once(&d);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_faults_never_lose_or_double(
        seed: u64,
        crash_pct in 0u64..12,
        drop_pct in 0u64..60,
        ack_loss_pct in 0u64..40,
        outage_start in 0usize..40,
        outage_len in 0usize..40,
        halt in any::<bool>(),
    ) {
        let mut d = setup(seed, 6, 5);
        d.crash_pct = crash_pct;
        d.chain.drop_pct = drop_pct;
        d.chain.ack_loss_pct = ack_loss_pct;
        let bad = if halt { Weather::Halted } else { Weather::RpcDown };
        run(&mut d, 5, |i| if (outage_start..outage_start + outage_len).contains(&i) { bad } else { Weather::Fine });
        assert_exactly_once(&d);
    }
}
