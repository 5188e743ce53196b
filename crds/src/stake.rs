//! `Stake`: a provider's collateral, bonded on chain.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, DECIMAL_PATTERN, DNS_SUBDOMAIN_PATTERN, SIGNATURE_PATTERN, STATUS_DECIMAL_PATTERN,
    WALLET_PATTERN,
};

/// Collateral a provider puts up. It bonds once its deposit is verified on chain and is
/// slashed on evidence of misbehaviour (failed challenges, duplicate GPUs, abandoned jobs).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "Stake",
    plural = "stakes",
    singular = "stake",
    shortname = "stk",
    category = "gpufed",
    status = "StakeStatus",
    doc = "Collateral bonded by a gpufed provider, verified on Solana.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Amount", type_ = "string", json_path = ".spec.amount"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Bonded", type_ = "string", json_path = ".status.bondedAmount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.provider == oldSelf.provider && self.amount == oldSelf.amount && self.depositSignature == oldSelf.depositSignature && self.stakerWallet == oldSelf.stakerWallet").message("spec.provider, spec.amount, spec.depositSignature and spec.stakerWallet are immutable; create a new Stake to add collateral").field_path(".depositSignature"))]
#[x_kube(validation = Rule::new("!oldSelf.unbond || self.unbond").message("spec.unbond cannot be undone once requested").field_path(".unbond"))]
#[x_kube(validation = Rule::new("double(self.amount) > 0.0").message("spec.amount must be greater than 0").field_path(".amount"))]
#[serde(rename_all = "camelCase")]
pub struct StakeSpec {
    /// The `GpuProvider` this collateral backs (its name: a DNS subdomain, e.g.
    /// `dc1.example.com`).
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub provider: String,
    /// Amount deposited, in the stake token (decimal).
    #[schemars(length(min = 1, max = 20), pattern(DECIMAL_PATTERN))]
    pub amount: String,
    /// Signature of the deposit transaction into the stake vault.
    #[schemars(pattern(SIGNATURE_PATTERN))]
    pub deposit_signature: String,
    /// Wallet (base58 public key) the deposit came from; unbonded tokens return there.
    #[schemars(pattern(WALLET_PATTERN))]
    pub staker_wallet: String,
    /// Request unbonding: the stake stops counting now and is returned after the
    /// unbonding period, minus any slash decided in the meantime. Cannot be undone.
    #[serde(default)]
    pub unbond: bool,
}

/// Lifecycle of a stake.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StakePhase {
    /// Deposit not verified yet.
    Pending,
    /// Deposit verified; the stake counts toward eligibility.
    Bonded,
    /// Unbonding requested; tokens return after `unbondingEndTime`.
    Unbonding,
    /// Tokens returned to the staker.
    Released,
    /// Fully slashed.
    Slashed,
    /// The deposit could not be verified (see conditions).
    Rejected,
}

/// What the operator verified and did with a stake.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StakeStatus {
    /// Display phase; automation reads `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StakePhase>,
    /// `Ready`, `DepositVerified`, `Reconciling`, `Stalled`.
    #[serde(default)]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Amount verified on chain and still bonded, after slashes (decimal). Up to 20 whole
    /// digits: a deposit bonds what it moved, which may exceed the stated amount (12 whole
    /// digits at most), and any `u64` of base units must be writable here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(STATUS_DECIMAL_PATTERN))]
    pub bonded_amount: Option<String>,
    /// When unbonding completes (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub unbonding_end_time: Option<String>,
    /// Signature of the transaction that returned the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SIGNATURE_PATTERN))]
    pub release_signature: Option<String>,
    /// Slashes, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub slashes: Vec<Slash>,
}

/// A slash, from evidence to execution.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Slash {
    /// Kind of evidence.
    pub evidence: EvidenceKind,
    /// SHA-256 (hex) of the evidence document; the on-chain memo carries it.
    #[schemars(pattern("^[0-9a-f]{64}$"))]
    pub evidence_hash: String,
    /// Amount to slash (decimal; at most the bonded amount, so as wide as it).
    #[schemars(pattern(STATUS_DECIMAL_PATTERN))]
    pub amount: String,
    /// When the dispute window closes (RFC 3339); the slash executes after it.
    #[schemars(extend("format" = "date-time"))]
    pub dispute_window_end_time: String,
    /// Signature of the slashing transaction once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SIGNATURE_PATTERN))]
    pub signature: Option<String>,
    /// Whether the slash has executed on chain.
    #[serde(default)]
    pub executed: bool,
}

/// Evidence that justifies a slash.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EvidenceKind {
    /// A GPU failed its compute challenge.
    FailedChallenge,
    /// A GPU UUID was also claimed by another provider.
    DuplicateGpu,
    /// The provider abandoned a running job.
    AbandonedJob,
}
