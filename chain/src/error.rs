//! Errors of the Solana edge.

use thiserror::Error;

/// What went wrong talking to Solana or building a transaction.
#[derive(Debug, Error)]
pub enum ChainError {
    /// A key, keypair or address is malformed (the message names it).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A transaction needs a signature we do not hold.
    #[error("missing signer {0}")]
    MissingSigner(String),
    /// A transaction exceeds a protocol limit.
    #[error("transaction too large: {0}")]
    TooLarge(String),
    /// The RPC endpoint could not be reached or timed out (retryable).
    #[error("rpc transport error calling {method}: {message}")]
    Transport {
        /// JSON-RPC method.
        method: &'static str,
        /// What happened.
        message: String,
    },
    /// The RPC node answered with a JSON-RPC error.
    #[error("rpc error {code} from {method}: {message}")]
    Rpc {
        /// JSON-RPC method.
        method: &'static str,
        /// Error code.
        code: i64,
        /// Message.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("unexpected answer to {method}: {message}")]
    Decode {
        /// JSON-RPC method.
        method: &'static str,
        /// What was wrong.
        message: String,
    },
    /// Settlement configuration is incomplete (e.g. a tenant without an escrow account).
    #[error("settlement configuration: {0}")]
    Config(String),
    /// The journal store failed.
    #[error("journal store: {0}")]
    Store(String),
    /// The pure journal refused an operation.
    #[error(transparent)]
    Journal(#[from] gpufed_settlement::JournalError),
    /// A fault injected by a test (crash simulation).
    #[error("injected crash at {0:?}")]
    InjectedCrash(crate::settler::FaultPoint),
}

impl ChainError {
    /// Whether retrying later can help (transport problems and node-side errors).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Rpc { .. })
    }

    /// The node simulated the transaction and refused to send it (JSON-RPC -32002; only
    /// sends with preflight: set-up transactions such as a payout account's creation,
    /// not settlement batches). Retrying the same thing fails the same way until what the
    /// message names is fixed (e.g. the authority's SOL for rent).
    pub fn refused_in_preflight(&self) -> bool {
        matches!(self, Self::Rpc { code: -32002, .. })
    }
}
