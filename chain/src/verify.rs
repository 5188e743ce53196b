//! Checking settled records against the chain: the batch transaction's memo carries the
//! Merkle root; a record's inclusion proof must lead to it.

use gpufed_settlement::{Commitment, Hash32, Memo, MerkleProof, UsageRecord, verify_proof};
use serde_json::Value;

use crate::error::ChainError;
use crate::programs;
use crate::rpc::Rpc;

/// The memo texts of a `getTransaction` (jsonParsed) answer, outer instructions first.
pub fn memos(tx: &Value) -> Vec<String> {
    let memo_id = programs::MEMO.to_string();
    crate::deposit::all_instructions(tx)
        .filter(|ix| ix["programId"].as_str() == Some(memo_id.as_str()))
        .filter_map(|ix| ix["parsed"].as_str().map(str::to_string))
        .collect()
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The transaction is finalized, succeeded, and its memo root proves the record.
    Verified {
        /// Slot of the transaction.
        slot: u64,
        /// The root from the memo.
        root: Hash32,
    },
    /// The signature is unknown at finalized commitment.
    NotFound,
    /// The transaction failed on chain.
    Failed(String),
    /// No gpufed batch memo in the transaction.
    NoMemo,
    /// The proof does not lead to the memo's root (tampered record or proof).
    ProofMismatch {
        /// The root on chain.
        root: Hash32,
    },
}

/// Verifies one record against the batch transaction `signature`.
pub async fn verify_record(
    rpc: &Rpc,
    record: &UsageRecord,
    proof: &MerkleProof,
    signature: &str,
) -> Result<Verdict, ChainError> {
    let Some(tx) = rpc.transaction(signature, Commitment::Finalized).await? else {
        return Ok(Verdict::NotFound);
    };
    Ok(judge(&tx, record, proof))
}

/// The pure part of [`verify_record`].
pub fn judge(tx: &Value, record: &UsageRecord, proof: &MerkleProof) -> Verdict {
    if !tx["meta"]["err"].is_null() {
        return Verdict::Failed(tx["meta"]["err"].to_string());
    }
    let root = memos(tx).iter().find_map(|m| match Memo::parse(m) {
        Some(Memo::Batch { root, .. }) => Some(root),
        _ => None,
    });
    let Some(root) = root else {
        return Verdict::NoMemo;
    };
    if verify_proof(record, proof, &root) {
        Verdict::Verified {
            slot: tx["slot"].as_u64().unwrap_or(0),
            root,
        }
    } else {
        Verdict::ProofMismatch { root }
    }
}
