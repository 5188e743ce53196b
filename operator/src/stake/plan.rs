//! The pure part of the Stake controller: the spec and annotations in base units, and
//! what they ask of the stake machine now. The status is in [`super::status`].

use std::collections::{BTreeMap, BTreeSet};

use gpufed_api::StakeSpec;
use gpufed_api::formats::parse_decimal;
use gpufed_api::stake::EvidenceKind;
use gpufed_settlement::Hash32;
use gpufed_settlement::stake::StakePhase;
use serde::Deserialize;

use super::store::StakeDoc;

/// Annotation that raises a slash: JSON `{"kind": "failed-challenge" | "duplicate-gpu" |
/// "abandoned-job", "evidenceHash": "<sha-256 hex>", "amount": "<decimal>"}`.
pub const SLASH_REQUEST_ANNOTATION: &str = "gpufed.io/slash-request";
/// Annotation that dismisses the pending slash before its dispute window closes: `"true"`,
/// or the evidence hash of the slash to dismiss.
pub const SLASH_DISMISS_ANNOTATION: &str = "gpufed.io/slash-dismiss";

/// The spec, checked and in base units of the stake mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecView {
    /// Staker wallet (canonical base58).
    pub staker: String,
    /// Stated amount, base units.
    pub amount: u64,
    /// Deposit signature.
    pub signature: String,
    /// The `GpuProvider` the collateral backs.
    pub provider: String,
}

/// A decimal token amount in base units of a mint with `decimals`; refuses digits the
/// mint cannot represent instead of rounding them away.
pub fn to_base_units(decimal: &str, decimals: u8) -> Result<u64, String> {
    let micros = u128::from(parse_decimal(decimal).map_err(|e| e.to_string())?);
    let d = u32::from(decimals);
    let v = if d >= 6 {
        10u128
            .checked_pow(d - 6)
            .and_then(|scale| micros.checked_mul(scale))
    } else {
        let scale = 10u128.pow(6 - d);
        (micros % scale == 0).then_some(micros / scale)
    };
    v.and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| format!("{decimal:?} is not representable with the stake mint's {decimals} decimals"))
}

/// Base units as a decimal for status (at most 6 fractional digits, as the CRD allows;
/// finer digits of mints with more decimals are cut, never rounded up).
pub fn display_amount(base: u64, decimals: u8) -> String {
    let d = u32::from(decimals);
    let micros = if d >= 6 {
        // Beyond 10^38 (a mint of more than 44 decimals) every u64 amount is 0 micros.
        10u128
            .checked_pow(d - 6)
            .map_or(0, |scale| u128::from(base) / scale)
    } else {
        u128::from(base) * 10u128.pow(6 - d)
    };
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    format!("{whole}.{}", format!("{frac:06}").trim_end_matches('0'))
}

/// Checks the spec against what the chain side needs.
pub fn spec_view(spec: &StakeSpec, decimals: u8) -> Result<SpecView, String> {
    let staker = gpufed_chain::Pubkey::parse(&spec.staker_wallet)
        .map_err(|e| format!("spec.stakerWallet: {e}"))?
        .to_string();
    if !gpufed_chain::deposit::is_signature(&spec.deposit_signature) {
        return Err("spec.depositSignature is not a transaction signature (base58 of 64 bytes)".into());
    }
    let amount = to_base_units(&spec.amount, decimals).map_err(|e| format!("spec.amount: {e}"))?;
    if amount == 0 {
        return Err("spec.amount must be greater than 0".into());
    }
    Ok(SpecView {
        staker,
        amount,
        signature: spec.deposit_signature.clone(),
        provider: spec.provider.clone(),
    })
}

/// The CRD's evidence kind for the machine's kind text.
pub fn evidence_kind(kind: &str) -> Option<EvidenceKind> {
    match kind {
        "failed-challenge" => Some(EvidenceKind::FailedChallenge),
        "duplicate-gpu" => Some(EvidenceKind::DuplicateGpu),
        "abandoned-job" => Some(EvidenceKind::AbandonedJob),
        _ => None,
    }
}

/// Whether evidence of `kind` raises a slash by itself. A duplicate GPU does not: the hub
/// cannot tell the original from the clone, and a cloner could have the honest owner of the
/// UUIDs it copied slashed (docs/trust.md, *Uniqueness*); an administrator can still raise
/// one with the slash-request annotation.
pub fn slashed_automatically(kind: &str) -> bool {
    matches!(
        evidence_kind(kind),
        Some(EvidenceKind::FailedChallenge | EvidenceKind::AbandonedJob)
    )
}

/// The evidence hashes (hex) dismissed on any of a provider's Stakes, by provider: an
/// overturned dispute is overturned for the provider, so none of its other Stakes is
/// slashed for that evidence either. `stakes` pairs each Stake's provider with its state.
pub fn dismissed_by_provider<'a>(
    stakes: impl IntoIterator<Item = (&'a str, &'a StakeDoc)>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (provider, doc) in stakes {
        out.entry(provider.to_owned())
            .or_default()
            .extend(doc.dismissed_slashes.iter().cloned());
    }
    out.retain(|_, d| !d.is_empty());
    out
}

/// The dismissal of this Stake's pending slash when its evidence was dismissed on another
/// Stake of the provider (`dismissed`, from [`dismissed_by_provider`]).
pub fn dismissed_elsewhere(doc: &StakeDoc, dismissed: &BTreeSet<String>) -> Option<Input> {
    let hex = doc.state.pending_slash.as_ref()?.evidence.to_hex();
    dismissed.contains(&hex).then_some(Input::Dismiss(hex))
}

/// A parsed slash request annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashRequest {
    /// Evidence kind (machine spelling).
    pub kind: String,
    /// Evidence hash.
    pub evidence: Hash32,
    /// Amount, base units.
    pub amount: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SlashRequestDoc {
    kind: String,
    evidence_hash: String,
    amount: String,
}

fn slash_request(text: &str, decimals: u8) -> Result<SlashRequest, String> {
    let doc: SlashRequestDoc = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if evidence_kind(&doc.kind).is_none() {
        return Err(format!(
            "kind {:?} is not failed-challenge, duplicate-gpu or abandoned-job",
            doc.kind
        ));
    }
    let evidence = Hash32::from_hex(&doc.evidence_hash)
        .ok_or_else(|| "evidenceHash is not a SHA-256 in hex (64 characters)".to_string())?;
    let amount = to_base_units(&doc.amount, decimals)?;
    if amount == 0 {
        return Err("amount must be greater than 0".into());
    }
    Ok(SlashRequest {
        kind: doc.kind,
        evidence,
        amount,
    })
}

/// Whether a slash can be raised on a Stake's state now (the machine's own test in
/// `gpufed_settlement::stake::step`), later, or never again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slashable {
    /// Bonded (or Unbonding, or Slashed with tokens left), nothing pending or releasing.
    Now,
    /// Not yet: why it waits (not bonded yet, a slash pending, a release in flight).
    Later(&'static str),
    /// Never: Rejected, Released, or nothing left to take.
    Never,
}

/// See [`Slashable`].
pub fn slashable(s: &gpufed_settlement::stake::StakeState) -> Slashable {
    match s.phase {
        StakePhase::Rejected { .. } | StakePhase::Released => Slashable::Never,
        StakePhase::Pending => Slashable::Later("until the stake is bonded"),
        StakePhase::Bonded | StakePhase::Unbonding { .. } | StakePhase::Slashed if s.bonded == 0 => {
            Slashable::Never
        }
        _ if s.pending_slash.is_some() => Slashable::Later("until the pending slash is done"),
        _ if s.release.is_some() => Slashable::Later("until the release in flight is done"),
        _ => Slashable::Now,
    }
}

/// What the spec and annotations ask of the machine this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `spec.unbond` on a bonded stake.
    Unbond,
    /// A slash request not acted on yet.
    Raise(SlashRequest),
    /// Dismiss the pending slash (evidence hex).
    Dismiss(String),
}

/// The inputs due now, and a note for status when an annotation is invalid or waits.
pub fn inputs(
    unbond: bool,
    annotations: &BTreeMap<String, String>,
    doc: &StakeDoc,
    decimals: u8,
) -> (Vec<Input>, Option<String>) {
    let s = &doc.state;
    let mut out = Vec::new();
    let mut note = None;
    let bonded_phase = matches!(s.phase, StakePhase::Bonded | StakePhase::Slashed);
    if unbond && bonded_phase && s.bonded > 0 && s.release.is_none() {
        out.push(Input::Unbond);
    }
    let pending = s.pending_slash.as_ref().map(|p| p.evidence.to_hex());
    if let Some(text) = annotations.get(SLASH_REQUEST_ANNOTATION) {
        match slash_request(text, decimals) {
            Err(e) => note = Some(format!("annotation {SLASH_REQUEST_ANNOTATION} ignored: {e}")),
            Ok(r) => {
                let hex = r.evidence.to_hex();
                let seen =
                    doc.handled_slash_requests.contains(&hex) || pending.as_deref() == Some(hex.as_str());
                match slashable(s) {
                    // Acted on once already.
                    _ if seen => {}
                    // Kept for later, not marked handled: a request made before the
                    // deposit bonded is raised once it has.
                    Slashable::Later(until) => note = Some(format!("the slash request {hex} waits {until}")),
                    // Never: the machine refuses it, and the refusal marks it handled.
                    Slashable::Now | Slashable::Never => out.push(Input::Raise(r)),
                }
            }
        }
    }
    if let (Some(text), Some(p)) = (annotations.get(SLASH_DISMISS_ANNOTATION), &pending) {
        let text = text.trim();
        if text.eq_ignore_ascii_case("true") {
            // "true" dismisses one slash per setting: left in place, it would dismiss every
            // slash raised from evidence after it, unseen.
            if doc.dismiss_true_spent {
                note = Some(format!(
                    "annotation {SLASH_DISMISS_ANNOTATION}=true already dismissed a slash; to dismiss \
                     this one, set it to its evidence hash {p} (or remove it and set it again)"
                ));
            } else {
                out.push(Input::Dismiss(p.clone()));
            }
        } else if Hash32::from_hex(text).is_some_and(|h| h.to_hex() == *p) {
            out.push(Input::Dismiss(p.clone()));
        }
    }
    (out, note)
}

/// Evidence recorded against the Stake's provider (docs/trust.md): its kind (machine
/// spelling) and the hash of the evidence document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRef {
    /// `failed-challenge`, `duplicate-gpu` or `abandoned-job`.
    pub kind: String,
    /// SHA-256 of the evidence document (what the slash memo carries).
    pub hash: Hash32,
    /// When the hub observed it (the document's `observedAt`, unix seconds).
    pub observed_at: Option<i64>,
}

/// The slash to raise for recorded evidence, if any: the first evidence not acted on yet,
/// once the Stake is bonded and has no slash pending; `slash_bps` of the bonded amount
/// (at least one base unit). Evidence waits (it is not marked handled) while the Stake
/// cannot be slashed, so a pending slash or an unbonded Stake delays it, never drops it.
///
/// Only evidence observed since the Stake was created counts against it: collateral put
/// up after a lie was not at stake when it was told. Without that, a provider slashed for
/// evidence would be slashed for it again on every new Stake, and a provider deleted and
/// created again under the same name would pay for the old one's evidence (evidence is
/// kept, and found by provider name). The time is the state's (`StakeDoc::since`: when the
/// object it was first created for was created), so a Stake deleted and re-created with
/// the same spec, which continues that state, still answers for evidence observed before
/// the new object; `created` (the object's creation, unix seconds) stands in for documents
/// written before that time was kept.
pub fn evidence_input(
    evidence: &[EvidenceRef],
    doc: &StakeDoc,
    slash_bps: u32,
    created: Option<i64>,
) -> Option<Input> {
    let stake_since = doc.since.or(created);
    let s = &doc.state;
    let open = matches!(
        s.phase,
        StakePhase::Bonded | StakePhase::Unbonding { .. } | StakePhase::Slashed
    );
    if slash_bps == 0 || !open || s.bonded == 0 || s.pending_slash.is_some() || s.release.is_some() {
        return None;
    }
    let e = evidence.iter().find(|e| {
        let hex = e.hash.to_hex();
        let before = matches!((e.observed_at, stake_since), (Some(at), Some(since)) if at < since);
        !before && !doc.handled_slash_requests.contains(&hex) && slashed_automatically(&e.kind)
    })?;
    let amount = (u128::from(s.bonded) * u128::from(slash_bps.min(10_000)) / 10_000).max(1);
    Some(Input::Raise(SlashRequest {
        kind: e.kind.clone(),
        evidence: e.hash,
        amount: u64::try_from(amount).unwrap_or(s.bonded),
    }))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "dismiss_tests.rs"]
mod dismiss_tests;
