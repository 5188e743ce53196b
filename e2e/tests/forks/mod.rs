//! A transaction confirmed in a slot that a validator restart drops: the node's stale
//! `finalized` status for it must not be believed (gpufed_chain::finality).

use std::time::{Duration, Instant};

use gpufed_chain::Rpc;
use gpufed_settlement::Commitment;
use serde_json::{Value, json};

/// The status as the node reports it, without our block check: (slot, confirmationStatus).
async fn reported(rpc: &Rpc, signature: &str) -> Option<(u64, String)> {
    let v = rpc
        .call(
            "getSignatureStatuses",
            json!([[signature], {"searchTransactionHistory": true}]),
        )
        .await
        .ok()?;
    let st = &v["value"][0];
    Some((
        st["slot"].as_u64()?,
        st["confirmationStatus"].as_str()?.to_owned(),
    ))
}

async fn finalized_slot(rpc: &Rpc) -> Option<u64> {
    rpc.call("getSlot", json!([{"commitment": "finalized"}]))
        .await
        .ok()
        .as_ref()
        .and_then(Value::as_u64)
}

/// Waits until `signature` is confirmed and returns its slot, asserting the node has not
/// rooted that slot yet (the debug validator roots ≈32 slots, ≈45 s, behind).
pub async fn wait_confirmed_unrooted(rpc: &Rpc, signature: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((slot, level)) = reported(rpc, signature).await
            && level == "confirmed"
        {
            let root = finalized_slot(rpc).await.expect("finalized slot");
            assert!(root < slot, "slot {slot} already rooted ({root}) before the stop");
            return slot;
        }
        assert!(Instant::now() < deadline, "{signature} not confirmed within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After the restart: once the new chain has rooted past `slot`, whatever the node reports
/// for the dropped transaction, our status check says it is not on the chain.
pub async fn stale_status_is_not_believed(rpc: &Rpc, signature: &str, slot: u64) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while finalized_slot(rpc).await.is_none_or(|root| root <= slot + 2) {
        assert!(
            Instant::now() < deadline,
            "the restarted chain never rooted slot {slot}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let raw = reported(rpc, signature).await;
    let checked = rpc.signature_status(signature).await.expect("status");
    eprintln!("dropped transaction {signature} (slot {slot}): node reports {raw:?}, checked {checked:?}");
    assert_eq!(checked, None, "the dropped transaction is not on the chain");
    let tx = rpc
        .transaction(signature, Commitment::Finalized)
        .await
        .expect("getTransaction");
    assert!(tx.is_none(), "no finalized transaction either");
}
