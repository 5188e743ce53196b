//! The durable journal: records by id, batches with their transaction state, and
//! per-attempt watermarks of pruned history. The operator persists it (see
//! [`crate::journal::Journal::to_chunks`]) and **must persist it after every mutating call
//! and before executing the actions that call returned**.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::batch::{self, Batch, PlanConfig};
use crate::hash::Hash32;
use crate::machine::{self, Action, MachineConfig, MachineError, Observation, TxPhase};
use crate::merkle::{MerkleProof, MerkleTree};
use crate::record::{RecordError, RecordId, UsageRecord};

/// Result of [`Journal::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// New record.
    Inserted,
    /// Same record already present (or already settled and pruned): no-op.
    Duplicate,
}

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    /// Not in any live batch.
    Pending,
    /// In a batch that is not final yet.
    InBatch(u64),
    /// In a batch that succeeded at the required commitment.
    Settled(u64),
}

/// Journal errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JournalError {
    /// The record is invalid.
    #[error("invalid record: {0}")]
    Invalid(#[from] RecordError),
    /// A different record with the same id exists.
    #[error("record {0} conflicts with the journaled record of the same id")]
    Conflict(RecordId),
    /// Unknown batch.
    #[error("unknown batch {0}")]
    UnknownBatch(u64),
    /// The machine refused the observation.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The batch was signed: only its signature's fate may take it back.
    #[error("batch {0} was signed and may still land; it is resolved by its signature, never taken back")]
    Signed(u64),
}

/// A journaled record and its append sequence number (FIFO order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Append order.
    pub seq: u64,
    /// The record.
    pub record: UsageRecord,
}

/// A settled batch removed by [`Journal::prune_settled`], with its records and proofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedBatch {
    /// The batch.
    pub batch: Batch,
    /// Its records with their proofs, in leaf order.
    pub records: Vec<(UsageRecord, MerkleProof)>,
}

/// Proof that a record is in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordProof {
    /// Batch id.
    pub batch: u64,
    /// Merkle root (also in the memo).
    pub root: Hash32,
    /// Memo text.
    pub memo: String,
    /// Live transaction signature, if signed.
    pub signature: Option<String>,
    /// Inclusion proof.
    pub proof: MerkleProof,
}

/// The journal. Serialize it whole, or in chunks with [`Journal::to_chunks`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "JournalData", into = "JournalData")]
pub struct Journal {
    pub(crate) data: JournalData,
    /// Record → live batch (not failed), rebuilt on load.
    pub(crate) assigned: BTreeMap<RecordId, u64>,
    /// Pending records only: append sequence → record id, rebuilt on load.
    pub(crate) order: BTreeMap<u64, RecordId>,
}

/// The persisted fields of a journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalData {
    /// Records by id.
    pub records: BTreeMap<RecordId, Entry>,
    /// Batches by id.
    pub batches: BTreeMap<u64, Batch>,
    /// Per (job uid, attempt, provider) key: end of the newest pruned settled record.
    pub watermarks: BTreeMap<Hash32, u64>,
    /// Per (job uid, attempt, provider) key: how far metering got (survives pruning).
    #[serde(default)]
    pub positions: BTreeMap<Hash32, crate::position::Position>,
    /// Per job uid: what has settled (survives pruning).
    #[serde(default)]
    pub settled: BTreeMap<String, crate::position::SettledTotals>,
    /// Next append sequence number.
    pub next_seq: u64,
    /// Next batch id.
    pub next_batch: u64,
}

impl From<JournalData> for Journal {
    fn from(data: JournalData) -> Self {
        let mut j = Journal {
            data,
            assigned: BTreeMap::new(),
            order: BTreeMap::new(),
        };
        j.reindex();
        j
    }
}

impl From<Journal> for JournalData {
    fn from(j: Journal) -> Self {
        j.data
    }
}

pub(crate) fn attempt_key(r: &UsageRecord) -> Hash32 {
    crate::position::attempt_key(&r.job.uid, r.attempt, &r.provider)
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn reindex(&mut self) {
        self.assigned.clear();
        for b in self.data.batches.values() {
            if !matches!(b.tx.phase, TxPhase::Failed { .. }) {
                for id in &b.records {
                    self.assigned.insert(*id, b.id);
                }
            }
        }
        self.order = self
            .data
            .records
            .values()
            .filter(|e| !self.assigned.contains_key(&e.record.id))
            .map(|e| (e.seq, e.record.id))
            .collect();
    }

    /// Appends a record. Same id + same content: no-op; same id + other content: error.
    pub fn append(&mut self, record: UsageRecord) -> Result<AppendOutcome, JournalError> {
        record.validate()?;
        if let Some(e) = self.data.records.get(&record.id) {
            return if e.record == record {
                Ok(AppendOutcome::Duplicate)
            } else {
                Err(JournalError::Conflict(record.id))
            };
        }
        if self
            .data
            .watermarks
            .get(&attempt_key(&record))
            .is_some_and(|&w| record.start < w)
        {
            return Ok(AppendOutcome::Duplicate);
        }
        let seq = self.data.next_seq;
        self.data.next_seq += 1;
        self.order.insert(seq, record.id);
        self.advance_position(attempt_key(&record), &record);
        self.data.records.insert(record.id, Entry { seq, record });
        Ok(AppendOutcome::Inserted)
    }

    /// A record by id.
    pub fn record(&self, id: &RecordId) -> Option<&UsageRecord> {
        self.data.records.get(id).map(|e| &e.record)
    }

    /// Status of a record (`None` if unknown or pruned).
    pub fn status(&self, id: &RecordId) -> Option<RecordStatus> {
        self.data.records.get(id)?;
        Some(
            match self.assigned.get(id).and_then(|b| self.data.batches.get(b)) {
                None => RecordStatus::Pending,
                Some(b) if matches!(b.tx.phase, TxPhase::Done { .. }) => RecordStatus::Settled(b.id),
                Some(b) => RecordStatus::InBatch(b.id),
            },
        )
    }

    /// Pending records in FIFO (append) order.
    pub fn pending(&self) -> Vec<&UsageRecord> {
        self.pending_iter().collect()
    }

    /// Pending records in FIFO (append) order, lazily.
    pub fn pending_iter(&self) -> impl Iterator<Item = &UsageRecord> {
        self.order
            .values()
            .filter(|id| !self.assigned.contains_key(*id))
            .filter_map(|id| self.record(id))
    }

    /// Pending records, in order, but those of providers in `unpaid`.
    pub(crate) fn payable<'a>(
        &'a self,
        unpaid: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = &'a UsageRecord> {
        self.pending_iter().filter(move |r| !unpaid.contains(&r.provider))
    }

    /// Records not settled yet (the `gpufed_settlement_backlog_records` gauge).
    pub fn backlog_records(&self) -> usize {
        self.data
            .records
            .keys()
            .filter(|id| !matches!(self.status(id), Some(RecordStatus::Settled(_))))
            .count()
    }

    /// A batch by id.
    pub fn batch(&self, id: u64) -> Option<&Batch> {
        self.data.batches.get(&id)
    }

    /// All batches, ascending id.
    pub fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.data.batches.values()
    }

    /// Batches that are neither done nor failed.
    pub fn in_flight(&self) -> impl Iterator<Item = &Batch> {
        self.data.batches.values().filter(|b| !b.tx.is_terminal())
    }

    /// The persisted data (read-only).
    pub fn data(&self) -> &JournalData {
        &self.data
    }

    /// Plans the next batch unless `max_in_flight_batches` are already in flight.
    /// Returns its id; the caller persists before acting on it.
    pub fn plan_batch(&mut self, cfg: &PlanConfig, held: &BTreeSet<String>, now_ms: u64) -> Option<u64> {
        self.plan_batch_paying(cfg, held, &BTreeSet::new(), now_ms)
    }

    /// [`Self::plan_batch`] with the records of providers in `unpaid` left out.
    pub(crate) fn plan_batch_paying(
        &mut self,
        cfg: &PlanConfig,
        held: &BTreeSet<String>,
        unpaid: &BTreeSet<String>,
        now_ms: u64,
    ) -> Option<u64> {
        if self.in_flight().count() >= cfg.max_in_flight_batches {
            return None;
        }
        let id = self.data.next_batch;
        let b = batch::plan(id, self.payable(unpaid), held, cfg, now_ms)?;
        for r in &b.records {
            self.assigned.insert(*r, id);
            if let Some(e) = self.data.records.get(r) {
                self.order.remove(&e.seq);
            }
        }
        self.data.next_batch += 1;
        self.data.batches.insert(id, b);
        Some(id)
    }

    /// Feeds one observation to a batch's machine. On success the batch's records become
    /// settled; on an on-chain failure they return to pending.
    pub fn step(
        &mut self,
        batch: u64,
        now_ms: u64,
        obs: Observation,
        cfg: &MachineConfig,
    ) -> Result<Vec<Action>, JournalError> {
        let b = self
            .data
            .batches
            .get_mut(&batch)
            .ok_or(JournalError::UnknownBatch(batch))?;
        let was_failed = matches!(b.tx.phase, TxPhase::Failed { .. });
        let was_done = matches!(b.tx.phase, TxPhase::Done { .. });
        let (tx, actions) = machine::step(&b.tx, now_ms, obs, cfg)?;
        b.tx = tx;
        if !was_done && matches!(b.tx.phase, TxPhase::Done { .. }) {
            self.credit_settled(batch);
            return Ok(actions);
        }
        let b = self
            .data
            .batches
            .get_mut(&batch)
            .ok_or(JournalError::UnknownBatch(batch))?;
        // Only on the transition into Failed: the records go back to pending.
        if !was_failed && matches!(b.tx.phase, TxPhase::Failed { .. }) {
            let records = b.records.clone();
            self.release(&records);
        }
        Ok(actions)
    }

    /// Records back to pending, in their append order.
    fn release(&mut self, records: &[RecordId]) {
        for id in records {
            self.assigned.remove(id);
            if let Some(e) = self.data.records.get(id) {
                self.order.insert(e.seq, *id);
            }
        }
    }

    /// Takes back batch `id`, its records pending again, only while it is `Pending`:
    /// never signed, or every earlier signature proven dead (an intent leaves `Pending`
    /// when persisted, before it is broadcast). Else [`JournalError::Signed`]: a batch in
    /// flight is resolved by its signature, never dropped (that could pay twice).
    pub fn withdraw_unsigned(&mut self, id: u64) -> Result<Batch, JournalError> {
        let b = self.data.batches.get(&id).ok_or(JournalError::UnknownBatch(id))?;
        if !matches!(b.tx.phase, TxPhase::Pending) {
            return Err(JournalError::Signed(id));
        }
        let b = self
            .data
            .batches
            .remove(&id)
            .ok_or(JournalError::UnknownBatch(id))?;
        self.release(&b.records);
        Ok(b)
    }

    /// Ticks every in-flight batch; returns the due actions with their batch ids.
    pub fn tick(&mut self, now_ms: u64, cfg: &MachineConfig) -> Vec<(u64, Action)> {
        self.step_all(now_ms, cfg, || Observation::Tick)
    }

    /// After a restart: every in-flight batch is resolved by its signature (or signed).
    pub fn restarted(&mut self, now_ms: u64, cfg: &MachineConfig) -> Vec<(u64, Action)> {
        self.step_all(now_ms, cfg, || Observation::Restarted)
    }

    fn step_all(
        &mut self,
        now: u64,
        cfg: &MachineConfig,
        obs: impl Fn() -> Observation,
    ) -> Vec<(u64, Action)> {
        let ids: Vec<u64> = self.in_flight().map(|b| b.id).collect();
        let mut out = Vec::new();
        for id in ids {
            // Tick and Restarted are never refused.
            if let Ok(actions) = self.step(id, now, obs(), cfg) {
                out.extend(actions.into_iter().map(|a| (id, a)));
            }
        }
        out
    }

    pub(crate) fn tree(&self, b: &Batch) -> Option<MerkleTree> {
        let recs: Option<Vec<&UsageRecord>> = b.records.iter().map(|id| self.record(id)).collect();
        MerkleTree::from_records(recs?)
    }

    /// The inclusion proof of a record in its live batch.
    pub fn proof(&self, id: &RecordId) -> Option<RecordProof> {
        let b = self.data.batches.get(self.assigned.get(id)?)?;
        let index = b.records.binary_search(id).ok()?;
        Some(RecordProof {
            batch: b.id,
            root: b.root,
            memo: b.memo.clone(),
            signature: b.tx.signature().map(str::to_string),
            proof: self.tree(b)?.proof(index)?,
        })
    }

    /// All proofs of a batch, in leaf order.
    pub fn batch_proofs(&self, batch: u64) -> Option<Vec<(RecordId, MerkleProof)>> {
        let b = self.data.batches.get(&batch)?;
        let tree = self.tree(b)?;
        b.records
            .iter()
            .enumerate()
            .map(|(i, id)| Some((*id, tree.proof(i)?)))
            .collect()
    }
}
