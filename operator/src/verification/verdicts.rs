//! Verdicts kept in the hub, so that a new leader (or a restarted operator) resumes the
//! challenge rounds where the old one was (docs/trust.md, "A new leader resumes the
//! rounds").
//!
//! Without them a new leader knew no node: every provider showed `NotVerified` ("no
//! challenge answered yet") and lost its verified nodes for placement until its nodes
//! answered again, every node was challenged alone as it was seen (one heartbeat's
//! spread, the time-sharing gap that rounds close), and a node that had failed its round
//! was in good standing again: a fresh challenge at once, not at the next round.
//!
//! One ConfigMap per provider in the operator's namespace (more for a provider of more
//! than about 700 nodes: [`super::shards`]), owned by the GpuProvider, data
//! `<node>: <Record as JSON>` for each node with a verdict. A record restores only
//! while its verdict still counts, and only under the same bands: a verdict judged under
//! other bands (a Helm upgrade that tightened one, which also changes the leader) says
//! nothing under these, so those nodes are challenged at once.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_api::GpuProvider;
use gpufed_trust::Bands;
use gpufed_trust::rounds::Rounds;
use gpufed_trust::session::GpuVerdict;
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// ConfigMap name of a provider's kept verdicts.
pub fn configmap_name(provider: &str) -> String {
    super::shards::base("gpufed-verdicts-", provider)
}

/// One node's latest verdicts, as kept in the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// [`bands_fingerprint`] of the bands the verdicts were judged under.
    pub bands: String,
    /// When the challenge they answer was issued (its round's clock for a round's).
    pub issued_at_ms: u64,
    /// When they were judged.
    pub verdict_at_ms: u64,
    /// The challenge's nonce (evidence names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// One per GPU.
    pub verdicts: Vec<GpuVerdict>,
    /// UUIDs of the GPUs proven in a round (probation: docs/trust.md).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub proven: BTreeSet<String>,
}

/// A record back in the verifier: its verdicts count until `valid_until_ms`; the node is
/// next challenged at the round starting `next_due_ms`, or at once when that is 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// The record.
    pub record: Record,
    /// [`Rounds::valid_until`] of its challenge.
    pub valid_until_ms: u64,
    /// [`Rounds::next_due`] of its challenge, or 0 when that round has started already.
    pub next_due_ms: u64,
}

/// What became of a kept record (`gpufed_challenge_verdicts_restored_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Restored; the node waits for its next round.
    Restored,
    /// Restored, but its next round started before this leader took over: the node is
    /// challenged at once (its verdicts count meanwhile, until they lapse).
    Due,
    /// Its verdicts no longer count: dropped, the node is new to this leader.
    Expired,
    /// Judged under other bands: dropped.
    BandsChanged,
    /// Not a record (edited by hand, or from another version): dropped.
    Unreadable,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Restored => "restored",
            Self::Due => "due",
            Self::Expired => "expired",
            Self::BandsChanged => "bands_changed",
            Self::Unreadable => "unreadable",
        }
    }
}

/// A short fingerprint of `bands` (hex of the first 8 bytes of SHA-256 over their JSON):
/// what a kept verdict was judged under.
pub fn bands_fingerprint(bands: &Bands) -> String {
    let json = serde_json::to_vec(bands).unwrap_or_default();
    Sha256::digest(&json)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The record's text (the ConfigMap value).
pub fn to_text(record: &Record) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

/// Whether and how the kept record `text` resumes at `now_ms` under bands of fingerprint
/// `bands`, these rounds and this challenge timeout (pure).
pub fn resume(
    text: &str,
    bands: &str,
    rounds: &Rounds,
    timeout_ms: u64,
    now_ms: u64,
) -> (Outcome, Option<Resumed>) {
    let Ok(record) = serde_json::from_str::<Record>(text) else {
        return (Outcome::Unreadable, None);
    };
    if record.bands != bands {
        return (Outcome::BandsChanged, None);
    }
    let valid_until_ms = rounds.valid_until(record.issued_at_ms, timeout_ms);
    if now_ms > valid_until_ms || record.verdict_at_ms > now_ms {
        return (Outcome::Expired, None);
    }
    let due = rounds.next_due(record.issued_at_ms);
    // A round that began under the old leader may have been missed: rather than judge the
    // node on that round's clock (the hub's failover is not the node's delay), challenge
    // it now, on its own clock.
    let (outcome, next_due_ms) = if due <= now_ms {
        (Outcome::Due, 0)
    } else {
        (Outcome::Restored, due)
    };
    (
        outcome,
        Some(Resumed {
            record,
            valid_until_ms,
            next_due_ms,
        }),
    )
}

/// A provider's kept records (`node → text`); none when the ConfigMap does not exist.
pub async fn load(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
) -> Result<BTreeMap<String, String>, super::store::Error> {
    super::shards::read(hub, namespace, &configmap_name(&provider.name_any()), provider).await
}

/// Writes `records` as the provider's kept verdicts, in shards of at most `limit` bytes
/// ([`super::shards::LIMIT`] but in tests), while `holds` (the leader's term).
pub async fn save(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
    records: &BTreeMap<String, String>,
    limit: usize,
    holds: super::shards::Holds<'_>,
) -> Result<(), super::store::Error> {
    let base = configmap_name(&provider.name_any());
    super::shards::write(hub, namespace, &base, provider, records, limit, holds).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "verdicts_tests.rs"]
mod tests;
