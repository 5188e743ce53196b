//! Whether the RPC node keeps transaction history — which exactly-once depends on.
//!
//! Why: the settlement machine proves a transaction dead (and re-signs it) when, past its
//! blockhash's last valid height, `getSignatureStatuses` with `searchTransactionHistory`
//! still does not know its signature (docs/settlement.md, step 4). A node started without
//! `--enable-rpc-transaction-history` answers that search from its status cache only
//! (about 300 slots): a batch broadcast before an operator outage longer than that reads
//! unknown although it landed, and would be paid twice; a landed slash would be taken
//! twice. Such a node refuses the history methods with JSON-RPC error -32011 ("Transaction
//! history is not available from this node"), so the settler asks one of them —
//! `getSignaturesForAddress` of the authority, limit 1 — before it acts, and while the
//! answer is no, nothing is signed, broadcast or concluded: records keep being metered
//! into the journal and settle once the node (or `--solana-rpc`) has history.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::ChainError;
use crate::pubkey::Pubkey;
use crate::rpc::Rpc;

/// How long a "yes, history is kept" answer is trusted before the node is asked again
/// (`--solana-rpc` may lead to a pool of nodes, and a node may be restarted without it).
pub const RECHECK: Duration = Duration::from_secs(600);
/// Agave's `TransactionHistoryNotAvailable`.
const TRANSACTION_HISTORY_NOT_AVAILABLE: i64 = -32011;

/// Why settlement (or a stake effect) waits.
#[derive(Debug, thiserror::Error)]
pub enum Closed {
    /// The node keeps no transaction history.
    #[error(
        "the Solana RPC node at {url} keeps no transaction history ({message}): a transaction \
         it no longer knows could not be told from one that never landed, so nothing is \
         signed or settled until it does; start it with --enable-rpc-transaction-history, or \
         point --solana-rpc at a node that keeps history. Usage is still metered and journaled"
    )]
    NoHistory {
        /// The endpoint.
        url: String,
        /// The node's error message.
        message: String,
    },
    /// The node has not answered yet whether it keeps history.
    #[error("cannot ask the Solana RPC node whether it keeps transaction history yet: {0}")]
    Unknown(#[source] ChainError),
}

/// The answer of a node to the probe: `Ok(true)` history kept, `Ok(false)` not kept
/// (with its message), an error when it did not say.
pub fn classify(answer: Result<serde_json::Value, ChainError>) -> Result<Result<(), String>, ChainError> {
    match answer {
        Ok(_) => Ok(Ok(())),
        Err(ChainError::Rpc {
            code: TRANSACTION_HISTORY_NOT_AVAILABLE,
            message,
            ..
        }) => Ok(Err(message)),
        Err(e) => Err(e),
    }
}

/// Remembers the last answer, so the node is asked once per [`RECHECK`] while it says yes,
/// and every time while it says no or does not answer.
#[derive(Debug, Default)]
pub struct HistoryGate {
    kept_at: Option<Instant>,
}

impl HistoryGate {
    /// Whether the node behind `rpc` keeps history, asked with `getSignaturesForAddress`
    /// of `probe` (any account: the authority). A node that said yes before and fails to
    /// answer now stays trusted until [`RECHECK`] runs out (its other calls fail too, and
    /// back off); one never heard from is [`Closed::Unknown`].
    pub async fn check(&mut self, rpc: &Rpc, probe: &Pubkey) -> Result<(), Closed> {
        self.check_at(rpc, probe, Instant::now()).await
    }

    async fn check_at(&mut self, rpc: &Rpc, probe: &Pubkey, now: Instant) -> Result<(), Closed> {
        if self.fresh(now) {
            return Ok(());
        }
        let answer = rpc
            .call(
                "getSignaturesForAddress",
                json!([probe.to_string(), {"commitment": "finalized", "limit": 1}]),
            )
            .await;
        self.observe(classify(answer), &rpc.url(), now)
    }

    fn fresh(&self, now: Instant) -> bool {
        self.kept_at
            .is_some_and(|t| now.saturating_duration_since(t) < RECHECK)
    }

    /// Applies one answer (pure; `check` is this after the call).
    fn observe(
        &mut self,
        answer: Result<Result<(), String>, ChainError>,
        url: &str,
        now: Instant,
    ) -> Result<(), Closed> {
        match answer {
            Ok(Ok(())) => {
                self.kept_at = Some(now);
                Ok(())
            }
            Ok(Err(message)) => {
                self.kept_at = None;
                Err(Closed::NoHistory {
                    url: url.to_owned(),
                    message,
                })
            }
            Err(e) => Err(Closed::Unknown(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "history_tests.rs"]
mod tests;
