//! A signature status that says "finalized" is believed only when the finalized block at
//! its slot holds the signature.
//!
//! Why: a node that stops before rooting its newest slots drops them when it restarts
//! (replay ends at the last root) and produces *new* blocks under the same slot numbers.
//! The statuses its blockstore recorded for transactions in the dropped blocks survive;
//! once the new chain roots those slot numbers, `getSignatureStatuses` with
//! `searchTransactionHistory` reports them `finalized` — for transactions that no block on
//! the chain contains and whose transfers never happened. Seen on agave 3.1's test
//! validator after a 60-minute outage: six settlement batches counted final at slots
//! 80–115 (root 83 at the stop) while `getBlock` of those slots lacked their signatures
//! and the escrows had not paid them (docs/reliability.md).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde_json::{Value, json};
use tracing::debug;

use gpufed_settlement::Commitment;

use crate::error::ChainError;
use crate::pubkey::Pubkey;
use crate::rpc::{Rpc, SignatureStatus};

/// What the finalized block at a status' slot says about the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCheck {
    /// The block holds the signature: the status is true.
    Contains,
    /// The slot's finalized block lacks it, or the slot was skipped: the status is stale.
    Absent,
    /// The node does not serve that block (yet): not final as far as we can show.
    NotYet,
    /// The node keeps no history for that slot (cleaned up, or history disabled): the
    /// status is all there is.
    Unverifiable,
}

// Solana's JSON-RPC server error codes (agave `rpc_custom_error`).
const BLOCK_CLEANED_UP: i64 = -32001;
const BLOCK_NOT_AVAILABLE: i64 = -32004;
const SLOT_SKIPPED: i64 = -32007;
const LONG_TERM_STORAGE_SLOT_SKIPPED: i64 = -32009;
const TRANSACTION_HISTORY_NOT_AVAILABLE: i64 = -32011;
const BLOCK_STATUS_NOT_AVAILABLE_YET: i64 = -32014;

/// Classifies a `getBlock` answer (signatures only) for `signature`. Transport and other
/// errors stay errors (the caller retries).
pub fn classify(answer: Result<Value, ChainError>, signature: &str) -> Result<BlockCheck, ChainError> {
    match answer {
        Ok(block) => holds(&block, signature),
        Err(ChainError::Rpc {
            code: SLOT_SKIPPED | LONG_TERM_STORAGE_SLOT_SKIPPED,
            ..
        }) => Ok(BlockCheck::Absent),
        Err(ChainError::Rpc {
            code: BLOCK_NOT_AVAILABLE | BLOCK_STATUS_NOT_AVAILABLE_YET,
            ..
        }) => Ok(BlockCheck::NotYet),
        Err(ChainError::Rpc {
            code: BLOCK_CLEANED_UP | TRANSACTION_HISTORY_NOT_AVAILABLE,
            ..
        }) => Ok(BlockCheck::Unverifiable),
        Err(e) => Err(e),
    }
}

/// Whether a `getBlock` result (signatures only; null when not served) holds `signature`.
fn holds(block: &Value, signature: &str) -> Result<BlockCheck, ChainError> {
    if block.is_null() {
        return Ok(BlockCheck::NotYet);
    }
    let Some(signatures) = block["signatures"].as_array() else {
        return Err(ChainError::Decode {
            method: "getBlock",
            message: "no signatures in the block".into(),
        });
    };
    Ok(if signatures.iter().any(|s| s.as_str() == Some(signature)) {
        BlockCheck::Contains
    } else {
        BlockCheck::Absent
    })
}

/// The status to act on, given what the node reported and what its block says.
pub fn verdict(reported: SignatureStatus, block: BlockCheck) -> Option<SignatureStatus> {
    match block {
        BlockCheck::Contains | BlockCheck::Unverifiable => Some(reported),
        // Unknown: the settlement machine then re-signs once the blockhash has expired.
        BlockCheck::Absent => None,
        BlockCheck::NotYet => Some(SignatureStatus {
            commitment: Commitment::Confirmed,
            ..reported
        }),
    }
}

impl Rpc {
    /// `getSignatureStatuses` with `searchTransactionHistory`; `None` = unknown. A
    /// `finalized` status is checked against the finalized block of its slot: stale ones
    /// (dropped slots re-produced after a restart) answer `None`, and one whose block the
    /// node does not serve yet answers `confirmed`.
    pub async fn signature_status(&self, signature: &str) -> Result<Option<SignatureStatus>, ChainError> {
        self.signature_status_seen_from(signature, None, None).await
    }

    /// [`Self::signature_status`], where "unknown" counts only from a node whose answer is
    /// at `min_context_slot` or later: an endpoint that is a pool of nodes may answer the
    /// height and the status from two of them, and one still replaying does not know a
    /// transaction that landed — taken for proof that it is dead, the batch would be paid
    /// twice. An older answer is an error (retried), code -32016 as a node's own
    /// "minimum context slot has not been reached". With `min_context_slot` and
    /// `signed_at` (the slot the transaction's blockhash was read at, before which it
    /// cannot have landed), "unknown" also needs the node's ledger to reach back to
    /// `signed_at`: a node started from a later snapshot, or keeping a limited ledger,
    /// searches no older history and answers "unknown" for a transaction that landed.
    pub async fn signature_status_seen_from(
        &self,
        signature: &str,
        min_context_slot: Option<u64>,
        signed_at: Option<u64>,
    ) -> Result<Option<SignatureStatus>, ChainError> {
        let (reported, context) = self.reported_signature_status(signature).await?;
        let Some(reported) = reported else {
            if let Some(min) = min_context_slot.filter(|m| context < *m) {
                return Err(ChainError::Rpc {
                    method: "getSignatureStatuses",
                    code: -32016,
                    message: format!(
                        "the node answered unknown at slot {context}, behind slot {min} where the \
                         transaction's expiry was read: no proof that it is dead"
                    ),
                });
            }
            if let (Some(_), Some(signed)) = (min_context_slot, signed_at) {
                let first = self.first_available_block().await?;
                if first > signed {
                    return Err(ChainError::Rpc {
                        method: "getSignatureStatuses",
                        code: -32016,
                        message: format!(
                            "the node answered unknown, but its ledger starts at slot {first}, after \
                             slot {signed} where the transaction was signed: no proof that it is dead"
                        ),
                    });
                }
            }
            return Ok(None);
        };
        if reported.commitment < Commitment::Finalized {
            return Ok(Some(reported));
        }
        let check = classify(self.finalized_block(reported.slot).await, signature)?;
        if check == BlockCheck::Absent {
            debug!(
                %signature,
                slot = reported.slot,
                "the node reports the signature finalized, but the finalized block of that \
                 slot does not hold it (a dropped slot re-produced): treating it as unknown"
            );
        }
        Ok(verdict(reported, check))
    }

    /// `getSignaturesForAddress` at `c` (newest first, up to 1000): (signature, succeeded).
    /// At `finalized`, entries whose slot's finalized block lacks them are left out (the
    /// address index keeps dropped slots' transactions as [`Self::signature_status`]
    /// explains); at lower commitments the node's list is returned as it is.
    pub async fn signatures_for_address(
        &self,
        account: &Pubkey,
        c: Commitment,
    ) -> Result<Vec<(String, bool)>, ChainError> {
        let reported = self.reported_signatures_for_address(account, c).await?;
        let mut kept = Vec::with_capacity(reported.len());
        // One getBlock per slot: the block, or what its error means for any signature.
        let mut blocks: BTreeMap<u64, Result<Value, BlockCheck>> = BTreeMap::new();
        for (signature, ok, slot) in reported {
            if c == Commitment::Finalized {
                if let Entry::Vacant(entry) = blocks.entry(slot) {
                    entry.insert(match self.finalized_block(slot).await {
                        Ok(block) => Ok(block),
                        Err(e) => Err(classify(Err(e), &signature)?),
                    });
                }
                let check = match &blocks[&slot] {
                    Ok(block) => holds(block, &signature)?,
                    Err(check) => *check,
                };
                if check == BlockCheck::Absent {
                    debug!(%signature, slot, "dropped slot's transaction left out");
                    continue;
                }
            }
            kept.push((signature, ok));
        }
        Ok(kept)
    }

    /// `getBlock` at `finalized`, signatures only.
    async fn finalized_block(&self, slot: u64) -> Result<Value, ChainError> {
        self.call(
            "getBlock",
            json!([slot, {"commitment": "finalized", "encoding": "json",
                "transactionDetails": "signatures", "rewards": false,
                "maxSupportedTransactionVersion": 0}]),
        )
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rpc_err(code: i64) -> Result<Value, ChainError> {
        Err(ChainError::Rpc {
            method: "getBlock",
            code,
            message: String::new(),
        })
    }

    /// A pool whose status answers come from a node at slot 400, unaware of the signature,
    /// and whose finalized bank is at slot 500, height 450.
    fn lagging_pool(method: &str) -> Result<Value, Value> {
        match method {
            "getSignatureStatuses" => Ok(serde_json::json!({"context": {"slot": 400}, "value": [null]})),
            "getEpochInfo" => Ok(serde_json::json!({
                "absoluteSlot": 500, "blockHeight": 450, "epoch": 1, "slotIndex": 68,
                "slotsInEpoch": 432, "transactionCount": 9
            })),
            other => Err(serde_json::json!({"code": -32601, "message": format!("{other} not served")})),
        }
    }

    #[tokio::test]
    async fn an_unknown_from_a_node_behind_the_expiry_is_no_proof() {
        let url = crate::fake_rpc::serve(lagging_pool).await;
        let rpc = Rpc::new(&url, std::time::Duration::from_millis(500)).unwrap();
        assert_eq!(rpc.finalized_height_and_slot().await.unwrap(), (450, 500));
        let behind = rpc
            .signature_status_seen_from("sig", Some(500), None)
            .await
            .unwrap_err();
        assert!(behind.is_transient(), "retried: {behind}");
        assert!(behind.to_string().contains("slot 400"), "{behind}");
        assert_eq!(
            rpc.signature_status_seen_from("sig", Some(400), None)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            rpc.signature_status("sig").await.unwrap(),
            None,
            "no bound: as before"
        );
    }

    /// A node whose ledger starts at slot 9000 (a snapshot, a limited ledger), answering at
    /// slot 10000 and unaware of the signature.
    fn short_ledger(method: &str) -> Result<Value, Value> {
        match method {
            "getSignatureStatuses" => Ok(serde_json::json!({"context": {"slot": 10000}, "value": [null]})),
            "getFirstAvailableBlock" => Ok(serde_json::json!(9000)),
            other => Err(serde_json::json!({"code": -32601, "message": format!("{other} not served")})),
        }
    }

    #[tokio::test]
    async fn an_unknown_from_a_node_whose_ledger_starts_after_the_signing_is_no_proof() {
        let url = crate::fake_rpc::serve(short_ledger).await;
        let rpc = Rpc::new(&url, std::time::Duration::from_millis(500)).unwrap();
        let e = rpc
            .signature_status_seen_from("sig", Some(9500), Some(100))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "retried: {e}");
        assert!(e.to_string().contains("starts at slot 9000"), "{e}");
        assert_eq!(
            rpc.signature_status_seen_from("sig", Some(9500), Some(9200))
                .await
                .unwrap(),
            None,
            "signed within the node's ledger: unknown is dead"
        );
        assert_eq!(
            rpc.signature_status_seen_from("sig", Some(9500), None)
                .await
                .unwrap(),
            None,
            "an intent from before the slot was kept: as before"
        );
    }

    fn finalized(error: Option<&str>) -> SignatureStatus {
        SignatureStatus {
            slot: 90,
            commitment: Commitment::Finalized,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn a_block_that_holds_the_signature_confirms_the_status() {
        let block = json!({"blockHeight": 80, "signatures": ["other", "sig"]});
        assert_eq!(classify(Ok(block), "sig").unwrap(), BlockCheck::Contains);
        let st = finalized(None);
        assert_eq!(verdict(st.clone(), BlockCheck::Contains), Some(st));
    }

    #[test]
    fn a_block_without_it_or_a_skipped_slot_makes_the_status_unknown() {
        let block = json!({"blockHeight": 80, "signatures": ["other"]});
        assert_eq!(classify(Ok(block), "sig").unwrap(), BlockCheck::Absent);
        assert_eq!(classify(rpc_err(-32007), "sig").unwrap(), BlockCheck::Absent);
        assert_eq!(classify(rpc_err(-32009), "sig").unwrap(), BlockCheck::Absent);
        // A failed transaction in a dropped block did not fail on the chain either.
        assert_eq!(verdict(finalized(Some("{}")), BlockCheck::Absent), None);
        assert_eq!(verdict(finalized(None), BlockCheck::Absent), None);
    }

    #[test]
    fn a_block_not_served_yet_holds_the_status_at_confirmed() {
        for answer in [Ok(Value::Null), rpc_err(-32004), rpc_err(-32014)] {
            assert_eq!(classify(answer, "sig").unwrap(), BlockCheck::NotYet);
        }
        let v = verdict(finalized(None), BlockCheck::NotYet).unwrap();
        assert_eq!((v.slot, v.commitment), (90, Commitment::Confirmed));
    }

    #[test]
    fn without_history_the_status_stands_and_other_errors_stay_errors() {
        for code in [-32001, -32011] {
            assert_eq!(classify(rpc_err(code), "sig").unwrap(), BlockCheck::Unverifiable);
        }
        assert!(matches!(
            classify(rpc_err(-32005), "sig"),
            Err(ChainError::Rpc { code: -32005, .. })
        ));
        let transport = Err(ChainError::Transport {
            method: "getBlock",
            message: "refused".into(),
        });
        assert!(classify(transport, "sig").unwrap_err().is_transient());
        let shapeless = json!({"blockHeight": 1});
        assert!(matches!(
            classify(Ok(shapeless), "sig"),
            Err(ChainError::Decode { .. })
        ));
    }
}
