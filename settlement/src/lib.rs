//! gpufed pure settlement state machine: usage journal, batches, exactly-once bookkeeping.
//!
//! This crate is pure: no Kubernetes, no network, no async, no clock reads (time is an
//! input everywhere). The operator's I/O layer drives it:
//!
//! 1. metering builds [`UsageRecord`]s with an [`AttemptMeter`] and appends them to the
//!    [`Journal`] (deduplicated by deterministic [`RecordId`]) before acknowledging them;
//! 2. [`Journal::plan_batch`] groups pending records into a [`Batch`] that fits one Solana
//!    transaction ([`TxSizeModel`]), with a Merkle root ([`merkle`]) and a memo ([`Memo`]);
//! 3. [`Journal::step`] / [`Journal::tick`] run each batch's exactly-once transaction state
//!    machine ([`machine::step`]) and return [`Action`]s for the I/O layer to execute,
//!    **after** it has persisted the journal;
//! 4. the [`stake`] machine reuses the same transaction machine for deposit returns and
//!    slashes.
//!
//! See `docs/settlement.md` for the full protocol.
#![forbid(unsafe_code)]

pub mod amount;
pub mod backoff;
pub mod batch;
pub mod chunks;
pub mod escrow;
pub mod hash;
pub mod journal;
pub mod machine;
pub mod memo;
pub mod merkle;
pub mod position;
pub mod proofs;
pub mod record;
pub mod retention;
pub mod stake;
pub mod txsize;

pub use amount::{
    AttemptMeter, MAX_SPREAD_RECORDS, MeterError, amount_for, amount_for_delta, amount_for_u128,
    max_record_gpu_seconds,
};
pub use backoff::BackoffConfig;
pub use batch::{Batch, PlanConfig, Transfer};
pub use escrow::{Shortfall, shortfalls};
pub use hash::Hash32;
pub use journal::{AppendOutcome, Journal, JournalError, RecordStatus};
pub use machine::{Action, Commitment, MachineConfig, Observation, QueryId, TxPhase, TxState};
pub use memo::Memo;
pub use merkle::{MerkleProof, MerkleTree, verify_proof};
pub use position::{JobBilling, Position, SettledTotals};
pub use record::{JobRef, RecordError, RecordId, UsageRecord};
pub use retention::Retention;
pub use txsize::TxSizeModel;
