//! Chunked persistence: the journal as one header object plus record chunks, each
//! bounded, so no stored object nears the API server's ~1.5 MiB limit.
//!
//! Records are ordered by append sequence and split every `max_records` entries; as
//! records are only appended (and removed by pruning), every chunk but the last stays
//! unchanged until the next prune, so the operator rewrites only the header and the tail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::batch::Batch;
use crate::hash::Hash32;
use crate::journal::{Entry, Journal, JournalData};

/// Records per chunk by default: ≤ 1000 × [`crate::record::MAX_RECORD_JSON_BYTES`] ≈ 1.25 MiB worst case,
/// ~0.4 MiB typical.
pub const DEFAULT_CHUNK_RECORDS: usize = 1000;

/// Everything but the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalHeader {
    /// Batches (at most `max_in_flight_batches` live plus unpruned final ones).
    pub batches: BTreeMap<u64, Batch>,
    /// Pruning watermarks.
    pub watermarks: BTreeMap<Hash32, u64>,
    /// Metering positions per attempt.
    #[serde(default)]
    pub positions: BTreeMap<Hash32, crate::position::Position>,
    /// Settled totals per job uid.
    #[serde(default)]
    pub settled: BTreeMap<String, crate::position::SettledTotals>,
    /// Next append sequence number.
    pub next_seq: u64,
    /// Next batch id.
    pub next_batch: u64,
    /// Number of record chunks.
    pub chunk_count: usize,
    /// Total records across chunks (checked on load).
    pub record_count: usize,
}

/// A slice of records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChunk {
    /// Position of the chunk.
    pub index: usize,
    /// Entries in sequence order.
    pub entries: Vec<Entry>,
}

/// Loading chunks failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    /// Missing, extra or misnumbered chunks, or a record count mismatch.
    #[error("journal chunks inconsistent: expected {expected} records in {chunks} chunks, got {got}")]
    Inconsistent {
        /// Records announced by the header.
        expected: usize,
        /// Chunks announced by the header.
        chunks: usize,
        /// Records found.
        got: usize,
    },
    /// A batch refers to a record no chunk holds.
    #[error("batch {0} refers to a missing record")]
    MissingRecord(u64),
}

impl Journal {
    /// Splits the journal into a header and chunks of at most `max_records` records.
    pub fn to_chunks(&self, max_records: usize) -> (JournalHeader, Vec<RecordChunk>) {
        let mut entries: Vec<&Entry> = self.data.records.values().collect();
        entries.sort_by_key(|e| e.seq);
        let chunks: Vec<RecordChunk> = entries
            .chunks(max_records.max(1))
            .enumerate()
            .map(|(index, c)| RecordChunk {
                index,
                entries: c.iter().map(|e| (*e).clone()).collect(),
            })
            .collect();
        let header = JournalHeader {
            batches: self.data.batches.clone(),
            watermarks: self.data.watermarks.clone(),
            positions: self.data.positions.clone(),
            settled: self.data.settled.clone(),
            next_seq: self.data.next_seq,
            next_batch: self.data.next_batch,
            chunk_count: chunks.len(),
            record_count: entries.len(),
        };
        (header, chunks)
    }

    /// Reassembles a journal; refuses missing chunks or dangling batch records.
    pub fn from_chunks(header: JournalHeader, mut chunks: Vec<RecordChunk>) -> Result<Journal, ChunkError> {
        chunks.sort_by_key(|c| c.index);
        let got: usize = chunks.iter().map(|c| c.entries.len()).sum();
        let numbered = chunks.iter().enumerate().all(|(i, c)| c.index == i);
        if chunks.len() != header.chunk_count || got != header.record_count || !numbered {
            return Err(ChunkError::Inconsistent {
                expected: header.record_count,
                chunks: header.chunk_count,
                got,
            });
        }
        let records = chunks
            .into_iter()
            .flat_map(|c| c.entries)
            .map(|e| (e.record.id, e))
            .collect();
        let data = JournalData {
            records,
            batches: header.batches,
            watermarks: header.watermarks,
            positions: header.positions,
            settled: header.settled,
            next_seq: header.next_seq,
            next_batch: header.next_batch,
        };
        if let Some(b) = data
            .batches
            .values()
            .find(|b| b.records.iter().any(|r| !data.records.contains_key(r)))
        {
            return Err(ChunkError::MissingRecord(b.id));
        }
        Ok(Journal::from(data))
    }
}
