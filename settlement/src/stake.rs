//! The stake state machine (pure): deposit verification, bonding, unbonding, slashing.
//!
//! ```text
//! Pending ──deposit verified──▶ Bonded ──unbond──▶ Unbonding ──period over──▶ Released
//!    │                           │  ▲                   │ (release tx, exactly once)
//!    └─▶ Rejected(reason)        └──┴── slash (after the dispute window; slash tx with
//!                                        an evidence memo, exactly once) ──▶ Slashed
//! ```
//! The two on-chain effects (release to the staker, slash to the treasury) each run the
//! same [`crate::machine`] as settlement batches: intent before broadcast, resolution by
//! signature, re-sign only after a proven expiry.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hash::Hash32;
use crate::machine::{Action, Commitment, MachineError, Observation, TxState};

/// Stake parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StakeConfig {
    /// Mint of the stake token.
    pub stake_mint: String,
    /// Vault token account that holds stakes.
    pub vault: String,
    /// Unbonding period, ms.
    pub unbonding_period_ms: u64,
    /// Dispute window before a raised slash executes, ms.
    pub dispute_window_ms: u64,
    /// How long an unknown deposit signature is retried before rejection, ms.
    pub deposit_not_found_grace_ms: u64,
}

/// One token movement of the deposit transaction, as read from chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenMove {
    /// Mint.
    pub mint: String,
    /// Owner of the source token account (the wallet that signed).
    pub from_owner: String,
    /// Destination token account.
    pub to: String,
    /// Amount, base units.
    pub amount: u64,
}

/// The deposit transaction as found on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepositTx {
    /// Commitment reached.
    pub commitment: Commitment,
    /// Transaction error, if it failed.
    pub error: Option<String>,
    /// Token movements (parsed SPL Token transfers).
    pub moves: Vec<TokenMove>,
}

/// Why a deposit was rejected (each maps to a condition reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum RejectReason {
    /// The signature is unknown after the grace period.
    #[error("deposit transaction not found")]
    DepositNotFound,
    /// The transaction failed on chain.
    #[error("deposit transaction failed: {error}")]
    DepositFailed {
        /// The error.
        error: String,
    },
    /// Nothing of the stake mint went into the vault.
    #[error("deposit moved no stake tokens into the vault")]
    NotIntoVault,
    /// Stake tokens went into the vault, but not from the stated staker.
    #[error("deposit did not come from the stated staker")]
    WrongStaker,
    /// Less than stated.
    #[error("deposit of {found} is below the stated {stated}")]
    InsufficientAmount {
        /// Stated in the Stake spec.
        stated: u64,
        /// Found on chain.
        found: u64,
    },
}

impl RejectReason {
    /// CamelCase condition reason.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            Self::DepositNotFound => "DepositNotFound",
            Self::DepositFailed { .. } => "DepositFailed",
            Self::NotIntoVault => "DepositNotIntoVault",
            Self::WrongStaker => "DepositWrongStaker",
            Self::InsufficientAmount { .. } => "DepositInsufficient",
        }
    }
}

/// Stake phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum StakePhase {
    /// Waiting for deposit verification.
    Pending,
    /// Deposit refused.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
    /// Collateral counts for eligibility.
    Bonded,
    /// Waiting out the unbonding period.
    Unbonding {
        /// When the release may execute, ms.
        ends_at_ms: u64,
    },
    /// Returned to the staker.
    Released,
    /// Slashed (the remainder, if any, may still be unbonded).
    Slashed,
}

/// A slash raised with evidence, waiting out its dispute window or executing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingSlash {
    /// Evidence kind (`[a-z0-9-]{1,32}`).
    pub kind: String,
    /// SHA-256 of the evidence.
    pub evidence: Hash32,
    /// Amount to slash (≤ bonded).
    pub amount: u64,
    /// Executes after this time, ms.
    pub dispute_until_ms: u64,
    /// Its transaction.
    pub tx: TxState,
}

/// An executed slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutedSlash {
    /// Evidence kind.
    pub kind: String,
    /// Evidence hash.
    pub evidence: Hash32,
    /// Amount.
    pub amount: u64,
    /// Transaction signature.
    pub signature: String,
}

/// Persisted state of one Stake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StakeState {
    /// Stated staker wallet.
    pub staker: String,
    /// Stated amount.
    pub stated_amount: u64,
    /// Deposit signature.
    pub deposit_signature: String,
    /// Phase.
    pub phase: StakePhase,
    /// Verified amount still in the vault.
    pub bonded: u64,
    /// First time the deposit was reported unknown, ms.
    pub missing_since_ms: Option<u64>,
    /// Slash in progress.
    pub pending_slash: Option<PendingSlash>,
    /// Executed slashes.
    pub slashes: Vec<ExecutedSlash>,
    /// Release transaction, once started.
    pub release: Option<TxState>,
    /// Seed for the next transaction state (jitter).
    pub next_seed: u64,
}

impl StakeState {
    /// The transaction state of an effect, when it has one.
    pub fn effect_tx(&self, kind: EffectKind) -> Option<&TxState> {
        match kind {
            EffectKind::Slash => self.pending_slash.as_ref().map(|p| &p.tx),
            EffectKind::Release => self.release.as_ref(),
        }
    }
}

/// Which effect a transaction observation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EffectKind {
    /// The pending slash.
    Slash,
    /// The release.
    Release,
}

/// What the driver must build and sign for an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// vault → staker, with a memo naming the Stake.
    Release {
        /// Staker wallet.
        to_owner: String,
        /// Amount.
        amount: u64,
        /// Memo text.
        memo: String,
    },
    /// vault → treasury, with a memo carrying the evidence hash and naming the Stake.
    Slash {
        /// Amount.
        amount: u64,
        /// Memo text.
        memo: String,
    },
}

/// Inputs of the stake machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StakeEvent {
    /// Time passed.
    Tick,
    /// The driver restarted.
    Restarted,
    /// Answer to [`StakeAction::VerifyDeposit`]: `None` = unknown signature.
    Deposit(Option<DepositTx>),
    /// The owner asked to unbond.
    RequestUnbond,
    /// Evidence against the provider.
    RaiseSlash {
        /// Evidence kind.
        kind: String,
        /// Evidence hash.
        evidence: Hash32,
        /// Amount (clamped to the bonded amount).
        amount: u64,
    },
    /// The dispute succeeded (only before the window closes).
    DismissSlash,
    /// An observation for an effect's transaction.
    Tx(EffectKind, Observation),
}

/// Outputs of the stake machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StakeAction {
    /// Fetch the deposit transaction (finalized) and feed [`StakeEvent::Deposit`].
    VerifyDeposit {
        /// Signature.
        signature: String,
    },
    /// A transaction action for an effect.
    Tx {
        /// Which effect.
        kind: EffectKind,
        /// What to sign (for `SignAndPersistIntent`).
        effect: Effect,
        /// The action.
        action: Action,
    },
}

/// Refused stake events; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StakeError {
    /// Not allowed in this phase.
    #[error("{0} not allowed in phase {1}")]
    NotAllowed(&'static str, String),
    /// Invalid evidence kind.
    #[error("invalid evidence kind")]
    BadEvidenceKind,
    /// The transaction machine refused the observation.
    #[error(transparent)]
    Machine(#[from] MachineError),
}

mod logic;
pub use logic::{StakePolicy, duplicate_deposits, required_stake, step};
