//! How much settled history the journal keeps.
//!
//! Settled batches stay in the journal so `kubectl gpufed bill --verify` can check their
//! records against the chain, but the journal is stored in the hub's API server (a header
//! object of at most 1 MiB that lists every batch's record ids, plus record chunks that
//! every save hashes), so it cannot keep them all: a busy hub would fill the header
//! within days and every later save — metering included — would fail. Once the history
//! passes a [`Retention`], the oldest final batches are pruned down to half of it (half,
//! so the record chunks, which shift when their oldest records go, are rewritten once per
//! half a retention rather than at every settled batch). What settled stays counted per
//! job ([`crate::position::SettledTotals`]), and a pruned record re-metered is still a
//! no-op (the attempt's watermark).
//!
//! Jobs that are gone leave their metering positions, watermarks and settled totals
//! behind; [`Journal::forget_jobs`] drops those of jobs the caller knows are deleted,
//! once none of their records is left.

use std::collections::BTreeSet;

use crate::journal::{ArchivedBatch, Journal, attempt_key};
use crate::machine::TxPhase;

/// The most settled history kept: final batches, and records in settled batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Final (settled or failed) batches.
    pub batches: usize,
    /// Records of settled batches.
    pub records: usize,
}

impl Default for Retention {
    /// 128 batches and 2048 records: at most about 75 KiB of batches and 135 KiB of record
    /// ids in the header, beside up to four live batches (the operator plans at most 2048
    /// records a batch: 550 KiB of ids) and the positions and totals of live jobs, within
    /// the API server's 1 MiB.
    fn default() -> Self {
        Self {
            batches: 128,
            records: 2048,
        }
    }
}

impl Journal {
    /// Removes settled batches and their records (returned for archiving, e.g. proofs into
    /// the ComputeJob status) and failed batches; re-appending a pruned record stays a
    /// no-op thanks to the per-attempt watermark.
    pub fn prune_settled(&mut self) -> Vec<ArchivedBatch> {
        let done: Vec<u64> = self
            .data
            .batches
            .values()
            .filter(|b| b.tx.is_terminal())
            .map(|b| b.id)
            .collect();
        self.prune_batches(&done)
    }

    /// Removes the final batches `ids` (others are left alone) as [`Self::prune_settled`]
    /// does.
    pub(crate) fn prune_batches(&mut self, ids: &[u64]) -> Vec<ArchivedBatch> {
        let mut out = Vec::new();
        for &id in ids {
            if !self.data.batches.get(&id).is_some_and(|b| b.tx.is_terminal()) {
                continue;
            }
            let proofs = self.batch_proofs(id).unwrap_or_default();
            let Some(b) = self.data.batches.remove(&id) else {
                continue;
            };
            if matches!(b.tx.phase, TxPhase::Failed { .. }) {
                continue;
            }
            let mut records = Vec::with_capacity(proofs.len());
            for (rid, proof) in proofs {
                self.assigned.remove(&rid);
                if let Some(e) = self.data.records.remove(&rid) {
                    self.order.remove(&e.seq);
                    let w = self.data.watermarks.entry(attempt_key(&e.record)).or_default();
                    *w = (*w).max(e.record.end);
                    records.push((e.record, proof));
                }
            }
            out.push(ArchivedBatch { batch: b, records });
        }
        out
    }

    /// Final batches kept, and the records of the settled ones.
    pub fn history(&self) -> (usize, usize) {
        self.data
            .batches
            .values()
            .filter(|b| b.tx.is_terminal())
            .fold((0, 0), |(batches, records), b| {
                let settled = matches!(b.tx.phase, TxPhase::Done { .. });
                (batches + 1, records + if settled { b.records.len() } else { 0 })
            })
    }

    /// When the history exceeds `keep`, prunes the oldest final batches until it is within
    /// half of it; returns what was pruned (nothing while within `keep`).
    pub fn prune_beyond(&mut self, keep: &Retention) -> Vec<ArchivedBatch> {
        let (mut batches, mut records) = self.history();
        if batches <= keep.batches && records <= keep.records {
            return Vec::new();
        }
        let mut prune = Vec::new();
        for b in self.data.batches.values().filter(|b| b.tx.is_terminal()) {
            if batches <= keep.batches / 2 && records <= keep.records / 2 {
                break;
            }
            batches -= 1;
            if matches!(b.tx.phase, TxPhase::Done { .. }) {
                records -= b.records.len();
            }
            prune.push(b.id);
        }
        self.prune_batches(&prune)
    }

    /// Forgets the metering positions, watermarks and settled totals of the jobs in
    /// `deleted` that no journaled record belongs to any more; returns how many jobs.
    /// The caller must know them deleted (a job metered again after this would be
    /// metered from the start of its attempt).
    pub fn forget_jobs<'a>(&mut self, deleted: impl IntoIterator<Item = &'a str>) -> usize {
        let mut deleted = deleted.into_iter().peekable();
        // Called every settlement round, almost always with nothing deleted: no scan then.
        if deleted.peek().is_none() {
            return 0;
        }
        let with_records: BTreeSet<&str> = self
            .data
            .records
            .values()
            .map(|e| e.record.job.uid.as_str())
            .collect();
        let known = self.known_jobs();
        let forget: Vec<String> = deleted
            .filter(|uid| known.contains(uid) && !with_records.contains(uid))
            .map(str::to_owned)
            .collect();
        for uid in &forget {
            self.forget_job(uid);
        }
        forget.len()
    }

    /// Uids of the jobs the journal keeps anything of: metering positions or settled
    /// totals (what [`Self::forget_jobs`] can drop).
    pub fn known_jobs(&self) -> BTreeSet<&str> {
        let mut out = self.metered_jobs();
        out.extend(self.data.settled.keys().map(String::as_str));
        out
    }
}
