//! Types shared by the three kinds: conditions, references, and the string formats
//! (wallets, signatures, prices, durations, memory quantities) the schema enforces.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Base58 Solana public key: 32 bytes encode to 32..=44 base58 characters.
pub const WALLET_PATTERN: &str = "^[1-9A-HJ-NP-Za-km-z]{32,44}$";
/// Base58 Solana transaction signature: 64 bytes encode to 64..=88 base58 characters.
pub const SIGNATURE_PATTERN: &str = "^[1-9A-HJ-NP-Za-km-z]{64,88}$";
/// A token amount or price as a decimal string with at most 6 fractional digits
/// (the token's base unit is 10^-6), e.g. `2.50`. Strings, not floats, so money is exact.
pub const DECIMAL_PATTERN: &str = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?$";
/// A decimal amount the operator sums into status (costs, settled amounts): as
/// [`DECIMAL_PATTERN`], but with up to 20 whole digits. A sum of costs is any `u64` of base
/// units (`formats::format_decimal(u64::MAX)` has 14 whole digits), so the 12 whole digits
/// of a spec's price would have the API server refuse every later status write of a job
/// whose cost grew past them; 20 digits hold any `u64` whatever its unit.
pub const STATUS_DECIMAL_PATTERN: &str = r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,6})?$";
/// An amount of the settlement mint in its own unit: a `u64` of base units written with
/// the mint's decimals (an 18-decimal mint's GPU-second is `0.000277777777777777`), so
/// up to 20 whole digits and as many fractional digits as a mint can have decimals that
/// a `u64` still shows (38: the operator's formatting stops there).
pub const MINT_AMOUNT_PATTERN: &str = r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,38})?$";
/// A Go-style duration made of hours, minutes and seconds, e.g. `36h`, `1h30m`, `90s`.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?$";
/// A memory quantity, binary (`80Gi`, `24576Mi`) or decimal as GPU vendors count
/// (`80G` = 80·10⁹ bytes). An "80 GB" H100 reports 81,559 MiB, less than `80Gi`.
pub const MEMORY_PATTERN: &str = r"^[1-9][0-9]{0,6}(Mi|Gi|Ti|M|G|T)$";
/// A DNS-1123 label: namespaces, object names of providers, regions.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A DNS-1123 subdomain (Secret names and other object names), at most 253 characters.
/// Fields that name a `GpuProvider` use it: a provider is named like any
/// object (`dc1.example.com`, up to 253 characters), not as a DNS label.
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A GPU model name as the device plugin labels it: NVML's product name with spaces
/// replaced by dashes, e.g. `NVIDIA-H100-80GB-HBM3`, `NVIDIA-GeForce-RTX-4090`.
pub const GPU_MODEL_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";
/// A CUDA compute capability `major.minor`, e.g. `9.0`.
pub const COMPUTE_CAPABILITY_PATTERN: &str = r"^[0-9]{1,2}\.[0-9]$";
/// A CamelCase condition reason, as `metav1.Condition` requires.
pub const REASON_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";

/// Whether a condition holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell (yet).
    #[default]
    Unknown,
}

/// One observation about an object, in the shape of `metav1.Condition`, so kstatus,
/// Flux and Argo CD read it. Conditions form a list keyed by `type`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in CamelCase, e.g. `Ready`, `Reconciling`, `Stalled`, `Placed`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316), pattern(REASON_PATTERN))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the last transition.
    #[schemars(length(min = 1, max = 1024), pattern(REASON_PATTERN))]
    pub reason: String,
    /// Human-readable detail; empty when there is nothing to add.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed (RFC 3339). Unchanged when only reason or message change.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// A reference to a key in a namespaced Secret (the referring object may be cluster-scoped).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_kubeconfig_key")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "kubeconfig".to_owned()
}
