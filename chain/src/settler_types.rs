//! The settler's parameters, its crash points and what a round reports.

use std::collections::BTreeMap;

use gpufed_settlement::{MachineConfig, PlanConfig, Shortfall};

use crate::accounts::SettlementAccounts;

/// Points where tests inject a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Before fetching a blockhash and signing.
    BeforeSign,
    /// Signed, intent not yet persisted.
    AfterSignBeforePersist,
    /// Intent persisted, not yet sent.
    AfterPersistBeforeSend,
    /// Sent, acknowledgement not yet recorded.
    AfterSend,
    /// A signature status read, not yet recorded.
    BeforeRecordStatus,
}

/// Settlement parameters.
#[derive(Debug, Clone, Default)]
pub struct SettlerConfig {
    /// Batch planning.
    pub plan: PlanConfig,
    /// Transaction machine.
    pub machine: MachineConfig,
    /// Accounts.
    pub accounts: SettlementAccounts,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Batches planned this round.
    pub planned: Vec<u64>,
    /// Batches that settled (final, succeeded) this round, with their signatures.
    pub settled: Vec<(u64, String)>,
    /// Batches whose transaction failed on chain this round (records re-batched).
    pub failed: Vec<u64>,
    /// RPC errors seen (each only delays its batch).
    pub rpc_errors: usize,
    /// Tenants whose escrow cannot cover their share, or that have no escrow.
    pub shortfalls: Vec<Shortfall>,
    /// Providers with records waiting whose payout account cannot receive (no wallet: the
    /// provider deleted or its wallet invalid; or its token account missing, of another
    /// mint or owner, frozen): their records are not batched until it can.
    pub unpaid: Vec<String>,
    /// Why, for each provider in `unpaid`.
    pub unpaid_reasons: BTreeMap<String, String>,
    /// Batches taken back before they were ever signed, because they pay or charge an
    /// account that cannot take part (and why); their other records are re-planned.
    pub withdrawn: Vec<(u64, String)>,
    /// Batches that could not be signed this round, and why; each backs off and is tried
    /// again (also counted in `rpc_errors`).
    pub sign_errors: Vec<(u64, String)>,
    /// Records not yet settled after the round.
    pub backlog: usize,
    /// Why the round did nothing but count the backlog: the RPC node keeps no transaction
    /// history, or has not said yet whether it does ([`crate::history`]).
    pub paused: Option<String>,
}
