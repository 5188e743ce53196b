use std::collections::BTreeSet;

use gpufed_settlement::{AttemptMeter, JobRef, Journal, PlanConfig};

use super::*;
use crate::store::MemoryStore;

/// A node that keeps history (the probe's method answers) and serves nothing else.
fn history_only(method: &str) -> Result<serde_json::Value, serde_json::Value> {
    match method {
        "getSignaturesForAddress" => Ok(serde_json::json!([])),
        other => Err(serde_json::json!({"code": -32601, "message": format!("{other} not served")})),
    }
}

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
async fn a_batch_whose_provider_lost_its_payout_account_is_taken_back_and_the_round_goes_on() {
    // The provider was deleted after its batch was planned: signing would fail for want of
    // its payout account. That batch must neither end the round (and with it metering and
    // every other batch) nor back off forever in an in-flight lane: never signed, it is
    // taken back, and its record waits unbatched with the reason. The RPC node keeps
    // history and answers nothing else.
    let store = MemoryStore::default();
    store.clone().save(&planned_for("gone")).await.unwrap();
    let url = crate::fake_rpc::serve(history_only).await;
    let rpc = Rpc::new(&url, Duration::from_millis(500)).unwrap();
    let mut cfg = SettlerConfig::default();
    cfg.accounts
        .escrows
        .insert("team-a".into(), Keypair::generate().pubkey());
    let mut settler = Settler::open(rpc, Keypair::generate(), store.clone(), cfg)
        .await
        .unwrap();
    let report = settler.round().await.expect("the round goes on");
    assert_eq!(report.paused, None, "{report:?}");
    assert_eq!(report.withdrawn.len(), 1, "{report:?}");
    assert_eq!(report.unpaid, ["gone"]);
    assert!(report.settled.is_empty() && report.failed.is_empty());
    assert_eq!(report.backlog, 1, "the record waits");
    assert_eq!(settler.journal().in_flight().count(), 0, "the lane is free");
    // And so do the next rounds.
    let report = settler.round().await.expect("again");
    assert!(
        report.withdrawn.is_empty() && report.planned.is_empty(),
        "{report:?}"
    );
}

#[tokio::test]
async fn against_a_node_without_history_a_round_signs_and_concludes_nothing() {
    // A batch planned and the settler restarted: with history it would be resolved and
    // signed. Without, the round only reports the backlog and why it waits; the journal
    // is left as it was (not even the restart's resolution is spent).
    fn no_history(method: &str) -> Result<serde_json::Value, serde_json::Value> {
        match method {
            "getSignaturesForAddress" => Err(serde_json::json!({
                "code": -32011,
                "message": "Transaction history is not available from this node"
            })),
            // Anything else would be a step taken: the test sees it as a signed batch.
            _ => Ok(serde_json::json!({"context": {"slot": 1}, "value": {
                "blockhash": "11111111111111111111111111111111", "lastValidBlockHeight": 100}})),
        }
    }
    let store = MemoryStore::default();
    let before = planned_for("p1");
    store.clone().save(&before).await.unwrap();
    let url = crate::fake_rpc::serve(no_history).await;
    let rpc = Rpc::new(&url, Duration::from_millis(500)).unwrap();
    let mut cfg = SettlerConfig::default();
    cfg.accounts
        .escrows
        .insert("team-a".into(), Keypair::generate().pubkey());
    cfg.accounts
        .payout_wallets
        .insert("p1".into(), Keypair::generate().pubkey());
    let mut settler = Settler::open(rpc, Keypair::generate(), store.clone(), cfg)
        .await
        .unwrap();
    for _ in 0..2 {
        let report = settler.round().await.unwrap();
        let why = report.paused.as_deref().unwrap_or_default();
        assert!(why.contains("keeps no transaction history"), "{report:?}");
        assert_eq!(report.backlog, 1);
        assert!(report.planned.is_empty() && report.settled.is_empty() && report.failed.is_empty());
        assert_eq!(report.rpc_errors, 0, "a clear answer, not an error");
    }
    let after = store.clone().load().await.unwrap().unwrap();
    assert_eq!(after, before, "the journal is untouched");
}
