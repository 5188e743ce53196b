//! Pure: `bill --verify`. A job's usage records from the operator's settlement journal,
//! and, for each settled one, whether its Merkle proof leads to the root that the memo of
//! its batch transaction carries on chain ([`gpufed_chain::verify::judge`]).
//!
//! The I/O (reading the journal from the hub, fetching transactions) is in
//! [`crate::onchain`]; this module turns what it read into rows, a summary and a verdict.

mod human;

pub use human::{ID_PREFIX, render};
// The tests (`use super::*`) check the abbreviation of ids and signatures.
#[cfg(test)]
use human::abbreviate;

use std::collections::{BTreeMap, BTreeSet};

use gpufed_api::formats::format_decimal;
use gpufed_chain::verify::{Verdict as ChainVerdict, judge};
use gpufed_settlement::journal::RecordProof;
use gpufed_settlement::{Journal, RecordStatus, UsageRecord};
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

/// A record of the job as the journal holds it, with its inclusion proof when batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// The record.
    pub record: UsageRecord,
    /// Pending, in a batch in flight, or settled.
    pub status: RecordStatus,
    /// Batch, root, memo, signature and Merkle proof (batched records only).
    pub proof: Option<RecordProof>,
}

/// What the RPC node answered for a settlement signature.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The transaction at finalized commitment (`getTransaction`, jsonParsed).
    Finalized(Value),
    /// Known to the node (its signature status) but not served by `getTransaction` at
    /// finalized yet: not finalized (a settler running at a lower commitment settles
    /// before finality), or final moments ago (the node serves it a little later): not
    /// verifiable yet, not a failure.
    NotFinalized,
    /// Unknown to the node.
    Missing,
}

/// The outcome for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Settled, and its proof leads to the root in the finalized transaction's memo.
    Verified,
    /// Not in a batch yet.
    Pending,
    /// In a batch whose transaction is not final yet.
    InFlight,
    /// Settled by the operator, but its transaction is not finalized yet.
    NotFinalized,
    /// Settled, but the node does not know its transaction.
    NotFound,
    /// Settled, but its transaction failed on chain.
    Failed,
    /// Settled, but its transaction carries no gpufed batch memo.
    NoMemo,
    /// Settled, but its proof does not lead to the memo's root (tampered record or proof).
    ProofMismatch,
    /// Settled, but the journal has no proof or signature for it.
    NoProof,
}

impl Verdict {
    /// Whether this is a failed verification (of a settled record).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::NotFound | Self::Failed | Self::NoMemo | Self::ProofMismatch | Self::NoProof
        )
    }

    fn text(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Pending => "pending",
            Self::InFlight => "in flight",
            Self::NotFinalized => "not finalized yet",
            Self::NotFound => "FAILED: transaction not found",
            Self::Failed => "FAILED: transaction failed",
            Self::NoMemo => "FAILED: no gpufed memo",
            Self::ProofMismatch => "FAILED: proof does not match the memo root",
            Self::NoProof => "FAILED: no proof in the journal",
        }
    }
}

/// One record of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordRow {
    /// Record id (hex).
    pub id: String,
    /// Attempt of the job.
    pub attempt: u32,
    /// Provider that ran it.
    pub provider: String,
    /// Interval start (RFC 3339).
    pub start: String,
    /// Interval end, exclusive (RFC 3339).
    pub end: String,
    /// GPU-seconds of the interval.
    pub gpu_seconds: u64,
    /// Amount (decimal, settlement token).
    pub amount: String,
    /// Batch, once batched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// The batch's transaction signature, once signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The outcome.
    pub verdict: Verdict,
    /// Slot of the verified transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// Merkle root (hex) in the memo of the settlement transaction, once fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Why verification failed (the transaction's error, what differs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Counts over the job's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Records of the job in the journal.
    pub records: u64,
    /// Settled and verified on chain.
    pub verified: u64,
    /// Not batched yet.
    pub pending: u64,
    /// Batched, transaction not final yet (or settled but not finalized).
    pub in_flight: u64,
    /// Settled records in the journal, checked against the chain whatever the outcome
    /// (verified, not finalized yet, or failed).
    pub settled: u64,
    /// Settled records that failed verification.
    pub failed: u64,
    /// Settled records no longer in the journal (pruned), which cannot be checked here.
    pub pruned: u64,
}

/// The result of `bill --verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// `namespace/name`.
    pub job: String,
    /// metadata.uid (the journal's key of the job).
    pub uid: String,
    /// Per record, in (attempt, start) order.
    pub records: Vec<RecordRow>,
    /// Counts.
    pub summary: Summary,
}

impl VerifyReport {
    /// True when no settled record failed verification (pending ones do not count).
    pub fn passed(&self) -> bool {
        self.summary.failed == 0
    }

    /// The error `bill --verify` ends with, unless it [`passed`](Self::passed): failed
    /// records out of all settled ones checked, not finalized ones included.
    pub fn failure(&self) -> Option<Error> {
        (!self.passed()).then(|| Error::VerificationFailed {
            job: self.job.clone(),
            failed: self.summary.failed,
            settled: self.summary.settled,
        })
    }
}

/// The records of the job with metadata.uid `uid`, batched or pending, in (attempt,
/// start, provider) order.
pub fn collect(journal: &Journal, uid: &str) -> Vec<JournalRecord> {
    let batched = journal.batches().flat_map(|b| b.records.iter());
    let pending = journal.pending_iter().map(|r| &r.id);
    // A failed batch keeps its ids while they are pending again: each id once.
    let ids: BTreeSet<_> = batched
        .chain(pending)
        .filter(|id| journal.record(id).is_some_and(|r| r.job.uid == uid))
        .collect();
    // Each batch's Merkle tree once, not once per record.
    let mut proofs = journal.proofs(ids.iter().copied());
    let mut out: Vec<JournalRecord> = ids
        .into_iter()
        .filter_map(|id| {
            Some(JournalRecord {
                record: journal.record(id)?.clone(),
                status: journal.status(id)?,
                proof: proofs.remove(id),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |r: &UsageRecord| (r.attempt, r.start, r.provider.clone());
        key(&a.record).cmp(&key(&b.record))
    });
    out
}

/// Signatures of the settled records' transactions: what to fetch.
pub fn signatures(records: &[JournalRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| matches!(r.status, RecordStatus::Settled(_)))
        .filter_map(|r| r.proof.as_ref()?.signature.clone())
        .collect()
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| unix.to_string(), |t| t.to_string())
}

/// Judges a settled record against its transaction: sets the row's verdict, slot, root
/// and detail.
fn judge_settled(r: &JournalRecord, txs: &BTreeMap<String, Lookup>, row: &mut RecordRow) {
    let Some((proof, sig)) = r.proof.as_ref().and_then(|p| Some((p, p.signature.as_ref()?))) else {
        row.verdict = Verdict::NoProof;
        return;
    };
    let tx = match txs.get(sig) {
        Some(Lookup::Finalized(tx)) => tx,
        Some(Lookup::NotFinalized) => {
            row.verdict = Verdict::NotFinalized;
            return;
        }
        None | Some(Lookup::Missing) => {
            row.verdict = Verdict::NotFound;
            return;
        }
    };
    row.verdict = match judge(tx, &r.record, &proof.proof) {
        ChainVerdict::Verified { slot, root } => {
            (row.slot, row.root) = (Some(slot), Some(root.to_hex()));
            Verdict::Verified
        }
        ChainVerdict::NotFound => Verdict::NotFound,
        ChainVerdict::Failed(e) => {
            row.detail = Some(e);
            Verdict::Failed
        }
        ChainVerdict::NoMemo => Verdict::NoMemo,
        ChainVerdict::ProofMismatch { root } => {
            row.root = Some(root.to_hex());
            row.detail = Some(if root == proof.root {
                format!("the record differs from what batch {} anchored", proof.batch)
            } else {
                format!(
                    "the memo's root differs from the journal's root of batch {}",
                    proof.batch
                )
            });
            Verdict::ProofMismatch
        }
    };
}

/// The report: `records` judged against the fetched transactions `txs` (by signature).
/// `settled_total` is what the journal counts as settled for the job, including records
/// pruned since.
pub fn report(
    job: &str,
    uid: &str,
    records: &[JournalRecord],
    txs: &BTreeMap<String, Lookup>,
    settled_total: u64,
) -> VerifyReport {
    let mut summary = Summary::default();
    let mut settled_here = 0;
    let mut rows = Vec::with_capacity(records.len());
    for r in records {
        let (verdict, batch) = match r.status {
            RecordStatus::Pending => (Verdict::Pending, None),
            RecordStatus::InBatch(b) => (Verdict::InFlight, Some(b)),
            RecordStatus::Settled(b) => (Verdict::NoProof, Some(b)),
        };
        let mut row = RecordRow {
            id: r.record.id.to_hex(),
            attempt: r.record.attempt,
            provider: r.record.provider.clone(),
            start: rfc3339(r.record.start),
            end: rfc3339(r.record.end),
            gpu_seconds: r.record.gpu_seconds,
            amount: format_decimal(r.record.amount),
            batch,
            signature: batch.and(r.proof.as_ref()).and_then(|p| p.signature.clone()),
            verdict,
            slot: None,
            root: None,
            detail: None,
        };
        if matches!(r.status, RecordStatus::Settled(_)) {
            settled_here += 1;
            judge_settled(r, txs, &mut row);
        }
        summary.records += 1;
        match row.verdict {
            Verdict::Verified => summary.verified += 1,
            Verdict::Pending => summary.pending += 1,
            Verdict::InFlight | Verdict::NotFinalized => summary.in_flight += 1,
            v if v.is_failure() => summary.failed += 1,
            _ => {}
        }
        rows.push(row);
    }
    summary.settled = settled_here;
    summary.pruned = settled_total.saturating_sub(settled_here);
    VerifyReport {
        job: job.to_owned(),
        uid: uid.to_owned(),
        records: rows,
        summary,
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
