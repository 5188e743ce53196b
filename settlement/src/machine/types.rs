//! Data types of the transaction machine (all persisted ones are serde JSON).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::backoff::BackoffConfig;

/// Solana commitment levels, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Commitment {
    /// Seen by the RPC node's bank.
    Processed,
    /// Voted on by a supermajority.
    Confirmed,
    /// Rooted: cannot be rolled back.
    #[default]
    Finalized,
}

/// Machine parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineConfig {
    /// Commitment at which an effect counts as done (default finalized).
    pub commitment: Commitment,
    /// Delay between status polls (and re-broadcasts) while waiting, ms.
    pub poll_ms: u64,
    /// A query with no answer after this long is re-issued on the next tick, ms.
    pub query_timeout_ms: u64,
    /// Backoff after RPC errors.
    pub backoff: BackoffConfig,
    /// Expired signatures kept for audit (oldest dropped first).
    pub max_signature_history: usize,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            commitment: Commitment::Finalized,
            poll_ms: 2_000,
            query_timeout_ms: 30_000,
            backoff: BackoffConfig::default(),
            max_signature_history: 16,
        }
    }
}

/// Identifies one issued query; its observation must carry the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueryId(pub u64);

/// What a query asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QueryKind {
    /// Fetch a blockhash and sign.
    Sign,
    /// Send the signed transaction.
    Broadcast,
    /// getSignatureStatuses.
    Status,
    /// getBlockHeight (finalized).
    BlockHeight,
}

/// The outstanding query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Awaiting {
    /// Its id.
    pub id: QueryId,
    /// Its kind.
    pub kind: QueryKind,
    /// When it was issued, ms.
    pub issued_at_ms: u64,
}

/// A signed transaction as persisted before broadcasting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Base-58 signature (the transaction id).
    pub signature: String,
    /// Recent blockhash the transaction was signed with.
    pub blockhash: String,
    /// Last block height at which that blockhash is valid.
    pub last_valid_block_height: u64,
    /// The signed wire transaction, base64 (re-broadcast verbatim, never re-signed).
    pub transaction: String,
    /// The slot the blockhash was read at: the transaction cannot land before it, so a
    /// node answers "unknown" with proof only if its ledger reaches back that far (one
    /// started from a later snapshot, or keeping a limited ledger, knows nothing older).
    /// `None` in an intent persisted before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at_slot: Option<u64>,
}

/// Where an effect is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum TxPhase {
    /// Nothing signed (or the last signature expired unseen).
    Pending,
    /// Intent persisted; maybe broadcast.
    InFlight {
        /// The intent.
        intent: Intent,
        /// Whether a broadcast was acknowledged by the RPC node.
        broadcast: bool,
        /// Finalized block height observed past `last_valid_block_height`, if any.
        expired_at_height: Option<u64>,
        /// The finalized slot that height was read at: a node that answers "unknown" must
        /// have seen that far, or its answer proves nothing (an RPC pool's lagging node
        /// may not have replayed the block the transaction landed in). `None` in a state
        /// persisted before this was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expired_at_slot: Option<u64>,
    },
    /// Seen on chain below the required commitment.
    Landed {
        /// The intent.
        intent: Intent,
        /// Slot.
        slot: u64,
        /// Commitment reached so far.
        commitment: Commitment,
    },
    /// Succeeded at the required commitment.
    Done {
        /// Signature.
        signature: String,
        /// Slot.
        slot: u64,
    },
    /// Executed with an error at the required commitment (no effect, fee paid).
    Failed {
        /// Signature.
        signature: String,
        /// Slot.
        slot: u64,
        /// The transaction error.
        error: String,
    },
}

/// The persisted state of one on-chain effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxState {
    /// Phase.
    pub phase: TxPhase,
    /// Consecutive RPC failures.
    pub failures: u32,
    /// No action is issued before this time, ms.
    pub wake_at_ms: u64,
    /// The outstanding query.
    pub awaiting: Option<Awaiting>,
    /// Next query id.
    pub next_query: u64,
    /// Times the effect was re-signed after an expiry.
    pub resigns: u32,
    /// Signatures proven dead (expired unseen), newest last.
    pub expired_signatures: Vec<String>,
    /// Jitter seed for the backoff.
    pub seed: u64,
}

/// What the driver must do. Execute only after persisting the state returned with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch a recent blockhash (+ last valid block height), build and sign the
    /// transaction, then feed [`Observation::Signed`].
    SignAndPersistIntent {
        /// Query id.
        query: QueryId,
    },
    /// sendTransaction of the persisted wire transaction; feed [`Observation::Broadcasted`].
    Broadcast {
        /// Query id.
        query: QueryId,
        /// Signature.
        signature: String,
        /// Wire transaction, base64.
        transaction: String,
    },
    /// getSignatureStatuses with searchTransactionHistory; feed [`Observation::SignatureStatus`].
    QuerySignatureStatus {
        /// Query id.
        query: QueryId,
        /// Signature.
        signature: String,
        /// When set, an "unknown" from a node whose answer's context slot is below it is no
        /// answer: the driver feeds [`Observation::RpcError`] instead.
        min_context_slot: Option<u64>,
    },
    /// The **finalized** block height and the slot it was read at; feed
    /// [`Observation::BlockHeight`].
    QueryBlockHeight {
        /// Query id.
        query: QueryId,
    },
    /// The effect is final and succeeded (the journal has already applied it).
    MarkSettled {
        /// Signature.
        signature: String,
        /// Slot.
        slot: u64,
    },
    /// The effect's transaction failed at the required commitment.
    MarkFailed {
        /// Signature.
        signature: String,
        /// Error.
        error: String,
    },
}

/// A signature status as reported by the RPC node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigStatus {
    /// Slot.
    pub slot: u64,
    /// Commitment reached.
    pub commitment: Commitment,
    /// Transaction error, if it failed.
    pub error: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Time passed; issue whatever is due.
    Tick,
    /// The driver restarted: forget outstanding queries and resolve now.
    Restarted,
    /// Signed (not yet persisted, not yet broadcast).
    Signed {
        /// Query id.
        query: QueryId,
        /// The signed intent.
        intent: Intent,
    },
    /// sendTransaction returned a signature.
    Broadcasted {
        /// Query id.
        query: QueryId,
    },
    /// Signature status; `None` = unknown to the node.
    SignatureStatus {
        /// Query id.
        query: QueryId,
        /// Status.
        status: Option<SigStatus>,
    },
    /// Finalized block height.
    BlockHeight {
        /// Query id.
        query: QueryId,
        /// Height.
        height: u64,
        /// The finalized slot it was read at.
        slot: u64,
    },
    /// The query failed (error or timeout).
    RpcError {
        /// Query id.
        query: QueryId,
        /// Message (for logs; never contains key material).
        message: String,
    },
}

/// Refused inputs; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MachineError {
    /// An observation for a query that is not the outstanding one (stale or duplicated).
    #[error("observation for query {0:?} does not answer the outstanding query")]
    UnexpectedObservation(QueryId),
    /// A signed intent reuses an expired signature or is empty.
    #[error("invalid intent: {0}")]
    InvalidIntent(&'static str),
}

impl TxState {
    /// The slot the in-flight transaction's blockhash was read at, when known.
    pub fn signed_at_slot(&self) -> Option<u64> {
        match &self.phase {
            TxPhase::InFlight { intent, .. } => intent.signed_at_slot,
            _ => None,
        }
    }

    /// A fresh effect in `Pending`, due at once.
    pub fn new(seed: u64) -> Self {
        Self {
            phase: TxPhase::Pending,
            failures: 0,
            wake_at_ms: 0,
            awaiting: None,
            next_query: 0,
            resigns: 0,
            expired_signatures: Vec::new(),
            seed,
        }
    }

    /// True once Done or Failed.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, TxPhase::Done { .. } | TxPhase::Failed { .. })
    }

    /// The current (live) signature, if any.
    pub fn signature(&self) -> Option<&str> {
        match &self.phase {
            TxPhase::Pending => None,
            TxPhase::InFlight { intent, .. } | TxPhase::Landed { intent, .. } => Some(&intent.signature),
            TxPhase::Done { signature, .. } | TxPhase::Failed { signature, .. } => Some(signature),
        }
    }
}
