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
/// rooted that slot yet (the test validator roots 32 slots, ≈18 s, behind).
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

/// Solana's JSON-RPC error for a slot the chain skipped (agave `rpc_custom_error`).
const SLOT_SKIPPED: i64 = -32007;

/// Whether the finalized block at `slot` holds `signature`, asked of the node directly
/// (`getBlock`, signatures only), independent of `gpufed_chain::finality`. Waits (≤ 120 s)
/// while the node does not serve that block yet.
async fn block_holds(rpc: &Rpc, slot: u64, signature: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let params = json!([slot, {"commitment": "finalized", "transactionDetails": "signatures",
            "rewards": false, "maxSupportedTransactionVersion": 0}]);
        match rpc.call("getBlock", params).await {
            Ok(block) if !block.is_null() => {
                let signatures = block["signatures"].as_array().expect("signatures");
                return signatures.iter().any(|s| s.as_str() == Some(signature));
            }
            // A slot the new chain skipped holds nothing.
            Err(gpufed_chain::ChainError::Rpc {
                code: SLOT_SKIPPED, ..
            }) => return false,
            other => assert!(Instant::now() < deadline, "getBlock {slot} not served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After the restart: once the new chain has rooted past `slot`, our status check agrees
/// with the chain's own finalized block at `slot`, whatever the node's status index says.
///
/// Which way the restart goes depends on how far the node got before the stop: when the
/// slot's last shreds were not yet in the blockstore the restart replays up to the slot
/// before and produces a new block under that number, and the node's status index still
/// reports the transaction `finalized` (the stale status our check exists for); when the
/// slot was complete the restart replays it and the transaction really is final. With
/// the validator's clock no longer starved (0.5 s slots) the second happens too, so the
/// test asserts the agreement either way and says which case it saw.
pub async fn status_agrees_with_the_chain(rpc: &Rpc, signature: &str, slot: u64) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while finalized_slot(rpc).await.is_none_or(|root| root <= slot + 2) {
        assert!(
            Instant::now() < deadline,
            "the restarted chain never rooted slot {slot}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let raw = reported(rpc, signature).await;
    let on_chain = block_holds(rpc, slot, signature).await;
    let checked = rpc.signature_status(signature).await.expect("status");
    let tx = rpc
        .transaction(signature, Commitment::Finalized)
        .await
        .expect("getTransaction");
    let case = if on_chain { "kept" } else { "dropped" };
    eprintln!(
        "transaction {signature} (slot {slot}) {case} by the restart: node reports {raw:?}, checked {checked:?}"
    );
    if on_chain {
        let checked = checked.expect("a transaction in a finalized block has a status");
        assert_eq!((checked.slot, checked.commitment), (slot, Commitment::Finalized));
        assert!(tx.is_some(), "getTransaction finds the finalized transaction");
    } else {
        assert_eq!(checked, None, "the dropped transaction is not on the chain");
        assert!(tx.is_none(), "no finalized transaction either");
    }
}
