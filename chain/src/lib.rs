//! gpufed's Solana edge.
//!
//! Everything Solana-specific that is not pure bookkeeping lives here: our own encoding of
//! the transaction wire format ([`tx`]), the instructions of the programs we use
//! ([`programs`]), a small JSON-RPC client ([`rpc`]), and the driver ([`settler`]) that
//! runs the pure journal of `gpufed-settlement` against a node, persisting through a
//! [`settler::JournalStore`]. No Kubernetes here: the operator supplies the store.
//!
//! We encode transactions ourselves instead of pulling the Solana SDK crates: the formats
//! are small, stable protocol facts, and the SDK's dependency tree would double the
//! workspace's cold build time.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod deposit;
pub mod error;
pub mod escrow;
#[cfg(test)]
mod fake_chain;
#[cfg(test)]
mod fake_rpc;
pub mod finality;
pub mod history;
pub mod payout;
pub mod programs;
pub mod pubkey;
pub mod rpc;
pub mod settler;
pub mod setup;
pub mod stake_tx;
pub mod store;
pub mod tx;
pub mod verify;

pub use accounts::SettlementAccounts;
pub use error::ChainError;
pub use pubkey::{Keypair, Pubkey};
pub use rpc::Rpc;
pub use settler::{FaultPoint, JournalStore, RoundReport, Settler, SettlerConfig};
