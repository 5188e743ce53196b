use std::collections::BTreeSet;

use gpufed_settlement::{AttemptMeter, JobRef, Journal, PlanConfig};

use super::*;
use crate::store::MemoryStore;

/// A journal holding one batch planned for `provider`, never signed.
fn planned_for(provider: &str) -> Journal {
    let job = JobRef {
        namespace: "team-a".into(),
        name: "train".into(),
        uid: "uid-1".into(),
    };
    let mut m = AttemptMeter::new(job, 1, provider.into(), "team-a".into(), 1_000_000);
    let mut j = Journal::new();
    j.append(m.record(1_700_000_000, 1_700_000_060, 1).unwrap())
        .unwrap();
    j.plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0).unwrap();
    j
}

#[tokio::test]
async fn a_batch_whose_provider_lost_its_payout_account_backs_off_and_the_round_goes_on() {
    // The provider was deleted after its batch was planned: signing fails for want of its
    // payout account. That batch must wait, not end the round (and with it metering and
    // every other batch). The RPC node is not there at all (a closed port).
    let store = MemoryStore::default();
    store.clone().save(&planned_for("gone")).await.unwrap();
    let rpc = Rpc::new("http://127.0.0.1:9", Duration::from_millis(500)).unwrap();
    let mut cfg = SettlerConfig::default();
    cfg.accounts
        .escrows
        .insert("team-a".into(), Keypair::generate().pubkey());
    let mut settler = Settler::open(rpc, Keypair::generate(), store.clone(), cfg)
        .await
        .unwrap();
    let report = settler.round().await.expect("the round goes on");
    assert!(report.rpc_errors >= 1, "{report:?}");
    assert!(report.settled.is_empty() && report.failed.is_empty());
    assert_eq!(report.backlog, 1, "the record waits in its batch");
    // And so do the next rounds (the batch backs off; no error ends them).
    settler.round().await.expect("again");
}
