//! Batch planning: group pending records into one Solana transaction's worth.
//!
//! Pending records are scanned once in FIFO (append) order. A record whose (tenant,
//! provider) pair is already in the batch joins it; a record of a new pair joins when one
//! more transfer (and the pair's new escrow/payout accounts) still fits the transaction
//! size model ([`TxSizeModel`]), otherwise its pair is skipped for this batch (a later pair
//! that reuses accounts already present may still fit). A record that would take the
//! batch's total past u64 waits for a later batch. The scan stops at the record cap. The record count is bounded by
//! [`PlanConfig::max_records_per_batch`] (hard cap [`MAX_RECORDS_PER_BATCH`]), not by the
//! transaction: records are anchored by the Merkle root in the memo.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::hash::Hash32;
use crate::machine::TxState;
use crate::memo::Memo;
use crate::merkle::MerkleTree;
use crate::record::{RecordId, UsageRecord};
use crate::txsize::TxSizeModel;

/// Hard cap of records per batch: keeps a persisted batch (record ids as hex) ≤ ~600 KiB.
pub const MAX_RECORDS_PER_BATCH: usize = 8192;
/// Longest batch memo (u64 id, 64 hex root, u64 count).
pub const MAX_BATCH_MEMO_LEN: usize = 116;

/// Planner parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlanConfig {
    /// Most records per batch (clamped to [`MAX_RECORDS_PER_BATCH`]).
    pub max_records_per_batch: usize,
    /// Most batches in flight (planned but not final) at once.
    pub max_in_flight_batches: usize,
    /// Transaction size model.
    pub tx: TxSizeModel,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            max_records_per_batch: 4096,
            max_in_flight_batches: 4,
            tx: TxSizeModel::default(),
        }
    }
}

/// One token transfer: tenant escrow → provider payout, in base units.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Transfer {
    /// Paying tenant (its escrow account).
    pub tenant: String,
    /// Paid provider (its payout account).
    pub provider: String,
    /// Amount, base units (> 0).
    pub amount: u64,
}

/// A planned batch and its transaction state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// Batch id (journal sequence).
    pub id: u64,
    /// Record ids, ascending (the Merkle leaf order).
    pub records: Vec<RecordId>,
    /// Transfers, sorted by (tenant, provider); zero amounts omitted.
    pub transfers: Vec<Transfer>,
    /// Merkle root over the records.
    pub root: Hash32,
    /// Memo text.
    pub memo: String,
    /// Sum of the transfers.
    pub total_amount: u64,
    /// Estimated wire size of the transaction, bytes.
    pub estimated_tx_bytes: usize,
    /// When planned, ms.
    pub created_at_ms: u64,
    /// Exactly-once transaction state.
    pub tx: TxState,
}

impl Batch {
    /// Each tenant's total in this batch.
    pub fn tenant_totals(&self) -> BTreeMap<&str, u64> {
        let mut m: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &self.transfers {
            let e = m.entry(t.tenant.as_str()).or_default();
            *e = e.saturating_add(t.amount);
        }
        m
    }
}

/// Plans one batch from pending records given in FIFO order; `None` if nothing fits.
/// Records of tenants in `held` are left out (e.g. their escrow cannot cover them).
pub fn plan<'a>(
    id: u64,
    pending: impl IntoIterator<Item = &'a UsageRecord>,
    held: &BTreeSet<String>,
    cfg: &PlanConfig,
    now_ms: u64,
) -> Option<Batch> {
    let cap = cfg.max_records_per_batch.clamp(1, MAX_RECORDS_PER_BATCH);
    let mut selected: Vec<&UsageRecord> = Vec::new();
    let mut tenants: BTreeSet<&str> = BTreeSet::new();
    let mut providers: BTreeSet<&str> = BTreeSet::new();
    // Accepted pairs and their running amount; pairs refused for size are remembered.
    let mut transfers: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut refused: BTreeSet<(&str, &str)> = BTreeSet::new();
    // The batch's total, and with it each transfer, must fit u64. A record that would
    // overflow it waits for a later batch, where it comes before every record appended
    // after it and a record's own amount always fits: however large the amounts, every
    // plan takes at least one record, and each record is paid in turn.
    let mut total: u64 = 0;
    for r in pending {
        if selected.len() == cap {
            break;
        }
        if held.contains(&r.tenant) {
            continue;
        }
        let key = (r.tenant.as_str(), r.provider.as_str());
        if refused.contains(&key) {
            continue;
        }
        let Some(next_total) = total.checked_add(r.amount) else {
            continue;
        };
        if !transfers.contains_key(&key) {
            // A new pair reserves one transfer (and its new accounts) at first sight.
            let dynamic = tenants.len()
                + providers.len()
                + usize::from(!tenants.contains(key.0))
                + usize::from(!providers.contains(key.1));
            if !cfg.tx.fits(dynamic, transfers.len() + 1, MAX_BATCH_MEMO_LEN) {
                refused.insert(key);
                continue;
            }
            tenants.insert(key.0);
            providers.insert(key.1);
            transfers.insert(key, 0);
        }
        let Some(sum) = transfers.get_mut(&key) else {
            continue;
        };
        // A pair's sum is part of the total, which fits.
        *sum = sum.saturating_add(r.amount);
        total = next_total;
        selected.push(r);
    }
    if selected.is_empty() {
        return None;
    }
    selected.sort_by_key(|r| r.id);
    let tree = MerkleTree::from_records(selected.iter().copied())?;
    let memo = Memo::Batch {
        id,
        root: tree.root(),
        count: selected.len() as u64,
    }
    .to_string();
    // A pair whose records come to nothing moves no tokens (its records are still
    // anchored by the memo's root): no transfer, so no escrow or payout account needed.
    let transfers: Vec<Transfer> = transfers
        .into_iter()
        .filter(|&(_, amount)| amount > 0)
        .map(|((t, p), amount)| Transfer {
            tenant: t.to_string(),
            provider: p.to_string(),
            amount,
        })
        .collect();
    Some(Batch {
        id,
        records: selected.iter().map(|r| r.id).collect(),
        estimated_tx_bytes: cfg
            .tx
            .size(tenants.len() + providers.len(), transfers.len(), memo.len()),
        transfers,
        root: tree.root(),
        memo,
        total_amount: total,
        created_at_ms: now_ms,
        tx: TxState::new(id),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::amount::AttemptMeter;
    use crate::journal::Journal;
    use crate::record::JobRef;

    /// A record of nearly u64::MAX base units: 3599 GPU-seconds at u64::MAX per GPU-hour.
    fn huge(tenant: &str, provider: &str, start: u64) -> UsageRecord {
        let job = JobRef {
            namespace: tenant.into(),
            name: "j".into(),
            uid: format!("{tenant}-{provider}"),
        };
        let mut m = AttemptMeter::new(job, 0, provider.into(), tenant.into(), u64::MAX).at(0, start);
        m.record(start, start + 3599, 1).unwrap()
    }

    #[test]
    fn a_batch_total_beyond_u64_splits_instead_of_stopping_all_batching() {
        let mut j = Journal::new();
        // Two pairs (and a second record of the first pair): any two overflow u64 together.
        let rs = [huge("a", "p", 0), huge("b", "q", 0), huge("a", "p", 3599)];
        assert!(rs[0].amount.checked_add(rs[1].amount).is_none());
        for r in &rs {
            j.append(r.clone()).unwrap();
        }
        let cfg = PlanConfig {
            max_in_flight_batches: 8,
            ..Default::default()
        };
        let mut planned = Vec::new();
        while let Some(id) = j.plan_batch(&cfg, &BTreeSet::new(), 0) {
            let b = j.batch(id).unwrap();
            assert_eq!(b.total_amount, b.transfers.iter().map(|t| t.amount).sum::<u64>());
            planned.push(b.records.clone());
            assert!(planned.len() <= 3, "each record planned once");
        }
        // One record per batch, in append order: every record is planned.
        let want: Vec<Vec<RecordId>> = rs.iter().map(|r| vec![r.id]).collect();
        assert_eq!(planned, want);
        assert!(j.pending().is_empty());
    }

    #[test]
    fn small_records_still_share_a_batch_with_a_huge_one() {
        let mut j = Journal::new();
        let big = huge("a", "p", 0);
        j.append(big.clone()).unwrap();
        let job = JobRef {
            namespace: "c".into(),
            name: "j".into(),
            uid: "c".into(),
        };
        let mut m = AttemptMeter::new(job, 0, "p".into(), "c".into(), 3600);
        let small = m.record(0, 10, 1).unwrap();
        j.append(small.clone()).unwrap();
        let late = huge("b", "q", 0);
        j.append(late.clone()).unwrap();
        let id = j.plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0).unwrap();
        let b = j.batch(id).unwrap();
        assert_eq!(b.total_amount, big.amount + small.amount);
        assert!(!b.records.contains(&late.id), "waits for the next batch");
        let next = j.plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0).unwrap();
        assert_eq!(j.batch(next).unwrap().records, vec![late.id]);
    }
}
