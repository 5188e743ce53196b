//! Whether the state persisted under a Stake's name, or a claimed deposit, may serve a
//! Stake object (pure).
//!
//! A deposit that has bonded once is spent for good: it was verified into the vault and is
//! (or was) released or slashed from there exactly once. The chain keeps showing the
//! deposit transaction finalized, so verifying it again for a Stake re-created under the
//! same name with another spec, or for another Stake naming the same signature, would bond
//! it again and the vault would pay it out a second time.

use gpufed_settlement::stake::{StakePhase, StakeState};
use sha2::{Digest, Sha256};

use super::plan::SpecView;
use super::store::{Claim, Holder, StakeDoc};

/// Whether the state's deposit has bonded (was verified into the vault) at some point:
/// every phase past Pending and Rejected starts from a verified deposit.
pub fn has_bonded(s: &StakeState) -> bool {
    !matches!(s.phase, StakePhase::Pending | StakePhase::Rejected { .. })
}

/// Whether a state holds nothing on chain and has nothing in flight.
pub fn empty(s: &StakeState) -> bool {
    match s.phase {
        StakePhase::Pending | StakePhase::Rejected { .. } | StakePhase::Released => true,
        _ => s.bonded == 0 && s.pending_slash.is_none() && s.release.is_none(),
    }
}

/// The seed of a fresh state's transaction jitter, from the Stake's uid.
pub fn seed(uid: &str) -> u64 {
    let d = Sha256::digest(uid.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// What becomes of the state persisted under a Stake's name ([`open`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Open {
    /// Go on with this state (now the object's).
    Continue(StakeDoc),
    /// Replace it with `doc`. `retire`: the signature and uid of the state replaced when
    /// its deposit has bonded and the claims do not say so yet: mark it spent first, or the
    /// only record that it bonded goes with the state.
    Fresh {
        /// The new state.
        doc: StakeDoc,
        /// (deposit signature, uid) of the replaced state to mark spent.
        retire: Option<(String, String)>,
    },
    /// The Stake is Stalled with (reason, message).
    Refuse(&'static str, String),
}

/// Decides what serves the Stake object `uid` (created at `created`, unix seconds) with
/// `spec`, given the state `found` under its name (`doc_name`: that state's ConfigMap).
pub fn open(
    found: Option<StakeDoc>,
    uid: &str,
    spec: &SpecView,
    created: Option<i64>,
    doc_name: &str,
) -> Open {
    let fresh = |retire| {
        let state = StakeState::new(
            spec.staker.clone(),
            spec.amount,
            spec.signature.clone(),
            seed(uid),
        );
        let mut doc = StakeDoc::new(uid, state);
        doc.since = created;
        doc.provider = Some(spec.provider.clone());
        Open::Fresh { doc, retire }
    };
    // The fields of the claim that differ from the state's (a document from before the
    // provider was kept takes the spec's: the first provider seen is the one recorded).
    let changed = |d: &StakeDoc| {
        let s = &d.state;
        [
            (s.stated_amount != spec.amount, "spec.amount"),
            (s.deposit_signature != spec.signature, "spec.depositSignature"),
            (s.staker != spec.staker, "spec.stakerWallet"),
            (
                d.provider.as_ref().is_some_and(|p| *p != spec.provider),
                "spec.provider",
            ),
        ]
        .into_iter()
        .filter_map(|(differs, field)| differs.then_some(field))
        .collect::<Vec<_>>()
    };
    let Some(mut d) = found else {
        return fresh(None);
    };
    let changed_fields = changed(&d);
    if d.uid == uid && !changed_fields.is_empty() {
        let provider = match &d.provider {
            Some(p) if *p != spec.provider => format!(" (its collateral stays with provider {p})"),
            _ => String::new(),
        };
        return Open::Refuse(
            "SpecChanged",
            format!(
                "{} changed after the stake was recorded{provider}; set it back, or create a new Stake \
                 to add collateral",
                changed_fields.join(", ")
            ),
        );
    }
    // The same object, or the same name again (deleted and re-created) with the same
    // claim: the state goes on, with the time its first object was created, so that
    // evidence waiting for it is not escaped by re-creating the Stake. (Documents from
    // before that time was kept start counting from this object.)
    if changed_fields.is_empty() {
        d.uid = uid.to_string();
        d.since = d.since.or(created);
        d.provider.get_or_insert_with(|| spec.provider.clone());
        return Open::Continue(d);
    }
    // A different claim starts afresh only where the old state holds nothing, and never
    // on the old state's deposit once that has bonded: the fresh state would verify it
    // again.
    if !empty(&d.state) {
        return Open::Refuse(
            "StateConflict",
            format!(
                "state {doc_name} belongs to an earlier Stake of this name that still holds {} base units; \
                 re-create it with the same spec",
                d.state.bonded
            ),
        );
    }
    if d.state.deposit_signature == spec.signature && has_bonded(&d.state) {
        return Open::Refuse(
            "DepositSpent",
            format!(
                "spec.depositSignature {} has bonded before, for an earlier Stake of this name (state \
                 {doc_name}), and bonds no Stake again; re-create the Stake with that spec to keep its \
                 state, or make a new deposit",
                spec.signature
            ),
        );
    }
    let retire = (has_bonded(&d.state) && !d.deposit_spent).then_some((d.state.deposit_signature, d.uid));
    fresh(retire)
}

/// Whether the claim `holder` holds on `signature` answers the Stake `stake` (uid `uid`)
/// without passing to it (`None`: it passes). `holder_doc`: the state under the holder's
/// name, when it was read.
pub fn claim_verdict(
    holder: &Holder,
    holder_doc: Option<&StakeDoc>,
    signature: &str,
    stake: &str,
    uid: &str,
) -> Option<Claim> {
    if holder.stake == stake && holder.uid == uid {
        return Some(Claim::Ours);
    }
    // Spent whatever the uid: the state may have gone on under a re-created object, or
    // (documents and claims from before the marker, or a crash between the state's write
    // and the marker's) the marker may not be written yet.
    let bonded_there =
        holder_doc.is_some_and(|d| d.state.deposit_signature == signature && has_bonded(&d.state));
    if holder.spent || bonded_there {
        return Some(Claim::Spent(holder.stake.clone()));
    }
    let live = holder.stake != stake
        && holder_doc
            .is_some_and(|d| d.uid == holder.uid && !matches!(d.state.phase, StakePhase::Rejected { .. }));
    live.then(|| Claim::HeldBy(holder.stake.clone()))
}

/// The provider a Stake object's state credits, and the bonded amount, for eligibility:
/// only a Bonded state that is this object's. The state of an earlier object of the name,
/// kept in the driver's cache while this one is Stalled (`StateConflict`), holds another
/// spec's collateral. The provider is the one the state recorded (`spec_provider`, the
/// object's `spec.provider`, only for a document that has none yet): a `spec.provider`
/// edited afterwards (Stalled `SpecChanged`) moves no collateral.
pub fn credits<'a>(doc: &'a StakeDoc, uid: &str, spec_provider: &'a str) -> Option<(&'a str, u64)> {
    (doc.uid == uid && doc.state.is_bonded())
        .then(|| (doc.provider.as_deref().unwrap_or(spec_provider), doc.state.bonded))
}

#[cfg(test)]
#[path = "reuse_tests.rs"]
mod tests;
