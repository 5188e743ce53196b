//! What of the journal header moves out to its own ConfigMaps when it grows, and which
//! journal ConfigMaps nothing references any more (pure; used by [`super::store`]).
//!
//! The header keeps one metering position per live attempt and the settled totals
//! (with up to 16 signatures) per job: with hundreds of long-running jobs those alone
//! approach a ConfigMap's 1 MiB, next to the batches' record ids. Past
//! [`INLINE_STATE_BYTES`] they go to *state parts*, named by the hash of their content
//! like the record chunks, so the header write stays the one atomic commit point.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::Hash32;
use gpufed_settlement::chunks::JournalHeader;
use gpufed_settlement::position::{Position, SettledTotals};
use serde::{Deserialize, Serialize};

/// Positions and settled totals up to this size (JSON) stay in the header.
pub const INLINE_STATE_BYTES: usize = 128 * 1024;
/// A state part holds about this much JSON at most (one entry more at worst).
pub const PART_BYTES: usize = 256 * 1024;
/// A journal ConfigMap no header references is deleted once this old (seconds): a
/// deposed leader's save in progress may still write a header naming chunks it just
/// made, and those must not go before its write is refused or lands.
pub const ORPHAN_GRACE_SECS: i64 = 3600;

/// Some of the header's positions and settled totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatePart {
    /// Metering positions per attempt.
    #[serde(default)]
    pub positions: BTreeMap<Hash32, Position>,
    /// Settled totals per job uid.
    #[serde(default)]
    pub settled: BTreeMap<String, SettledTotals>,
}

impl StatePart {
    fn is_empty(&self) -> bool {
        self.positions.is_empty() && self.settled.is_empty()
    }
}

fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
}

/// Moves the header's positions and settled totals into parts of about [`PART_BYTES`]
/// when together they are larger than [`INLINE_STATE_BYTES`]; none otherwise. Entries
/// are taken in key order, so parts left unchanged keep their content (and name).
pub fn split(header: &mut JournalHeader) -> Vec<StatePart> {
    let inline = json_len(&header.positions).saturating_add(json_len(&header.settled));
    if inline <= INLINE_STATE_BYTES {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let mut part = StatePart::default();
    let mut size = 0usize;
    let cut = |part: &mut StatePart, size: &mut usize, parts: &mut Vec<StatePart>| {
        if *size >= PART_BYTES {
            parts.push(std::mem::take(part));
            *size = 0;
        }
    };
    for (k, p) in std::mem::take(&mut header.positions) {
        size = size.saturating_add(json_len(&p).saturating_add(70));
        part.positions.insert(k, p);
        cut(&mut part, &mut size, &mut parts);
    }
    for (k, t) in std::mem::take(&mut header.settled) {
        size = size.saturating_add(json_len(&t).saturating_add(k.len() + 4));
        part.settled.insert(k, t);
        cut(&mut part, &mut size, &mut parts);
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// Puts parts back into the header ([`split`] undone).
pub fn merge(header: &mut JournalHeader, parts: Vec<StatePart>) {
    for p in parts {
        header.positions.extend(p.positions);
        header.settled.extend(p.settled);
    }
}

/// The journal ConfigMaps (`name`, created at unix seconds) no header references and
/// older than [`ORPHAN_GRACE_SECS`] at `now`: chunks of a save whose header write failed,
/// and deletes that failed.
pub fn orphans(listed: &[(String, i64)], referenced: &BTreeSet<String>, now: i64) -> Vec<String> {
    listed
        .iter()
        .filter(|(name, created)| {
            !referenced.contains(name) && now.saturating_sub(*created) >= ORPHAN_GRACE_SECS
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(jobs: usize) -> JournalHeader {
        let mut h: JournalHeader = serde_json::from_value(serde_json::json!({
            "batches": {}, "watermarks": {}, "nextSeq": 0, "nextBatch": 0,
            "chunkCount": 0, "recordCount": 0
        }))
        .unwrap();
        for i in 0..jobs {
            let uid = format!("{i:08}-0000-0000-0000-000000000000");
            let key = gpufed_settlement::position::attempt_key(&uid, 1, "provider-a");
            h.positions.insert(
                key,
                Position {
                    job_uid: uid.clone(),
                    metered_until: 1_700_000_000,
                    cumulative_gpu_seconds: 86_400 * 8,
                    records: 288,
                    amount: 1_000_000_000,
                },
            );
            h.settled.insert(
                uid,
                SettledTotals {
                    records: 288,
                    amount: 1_000_000_000,
                    signatures: vec!["5".repeat(88); 16],
                },
            );
        }
        h
    }

    #[test]
    fn a_small_header_keeps_its_state_inline() {
        let mut h = header(10);
        let before = h.clone();
        assert!(split(&mut h).is_empty());
        assert_eq!(h, before);
    }

    #[test]
    fn thousands_of_jobs_leave_the_header_small_and_come_back_whole() {
        let mut h = header(3000);
        let whole = h.clone();
        assert!(
            json_len(&whole) > 1024 * 1024,
            "the case that broke: over a ConfigMap"
        );
        let parts = split(&mut h);
        assert!(h.positions.is_empty() && h.settled.is_empty());
        assert!(json_len(&h) < 4096, "the header is only the rest");
        for p in &parts {
            let len = json_len(p);
            assert!(len < PART_BYTES + 4096, "a part fits a ConfigMap: {len}");
        }
        // Deterministic: the same state makes the same parts (content names stay).
        assert_eq!(split(&mut whole.clone()), parts);
        merge(&mut h, parts);
        assert_eq!(h, whole);
    }

    #[test]
    fn only_old_unreferenced_journal_config_maps_are_orphans() {
        let referenced = BTreeSet::from(["c1".to_owned()]);
        let listed = [
            ("c1".to_owned(), 0),
            ("c2".to_owned(), 0),
            ("c3".to_owned(), 10_000 - 60),
        ];
        assert_eq!(orphans(&listed, &referenced, 10_000), ["c2"]);
    }
}
