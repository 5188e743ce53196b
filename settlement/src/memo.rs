//! The versioned memo text carried by the SPL Memo instruction of each transaction.
//!
//! * batch: `gpufed:v1:<batch id>:<merkle root hex>:<record count>`
//! * slash: `gpufed:v1:slash:<evidence kind>:<evidence sha-256 hex>:<stake tag>`
//! * release: `gpufed:v1:release:<stake tag>`
//!
//! The stake tag ([`stake_tag`]) names the Stake an effect is for, so that the effects of
//! two Stakes never make the same transaction: without it, two Stakes of one staker with
//! the same amount (or one provider's two Stakes slashed for the same evidence) signed
//! with the same blockhash have one signature, and one transfer would be counted as two.
//! A slash memo without a tag (written before tags) still parses.
//!
//! Both stay below [`MAX_MEMO_BYTES`] (the longest batch memo is 116 bytes).

use std::fmt;

use crate::hash::Hash32;

/// Prefix (and version) of every memo.
pub const MEMO_PREFIX: &str = "gpufed:v1:";
/// Longest memo this crate emits or accepts.
pub const MAX_MEMO_BYTES: usize = 160;
/// Longest evidence kind (`[a-z0-9-]`).
pub const MAX_EVIDENCE_KIND_LEN: usize = 32;

/// Length of a [`stake_tag`].
pub const STAKE_TAG_LEN: usize = 16;

/// The tag of a Stake in its effects' memos: the first 16 hex digits of the SHA-256 of its
/// deposit signature (a deposit bonds one Stake only).
pub fn stake_tag(deposit_signature: &str) -> String {
    crate::hash::sha256(deposit_signature.as_bytes()).to_string()[..STAKE_TAG_LEN].to_owned()
}

fn valid_tag(tag: &str) -> bool {
    tag.len() == STAKE_TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A parsed memo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memo {
    /// Anchors a settlement batch.
    Batch {
        /// Batch id (journal sequence number).
        id: u64,
        /// Merkle root of the batch's records.
        root: Hash32,
        /// Number of records.
        count: u64,
    },
    /// Carries the evidence of a slash.
    Slash {
        /// Evidence kind, `[a-z0-9-]{1,32}`.
        kind: String,
        /// SHA-256 of the evidence document.
        evidence: Hash32,
        /// The slashed Stake's [`stake_tag`] (none in memos written before tags).
        stake: Option<String>,
    },
    /// Returns a Stake's deposit.
    Release {
        /// The released Stake's [`stake_tag`].
        stake: String,
    },
}

/// True when `kind` is a valid evidence kind.
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_EVIDENCE_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl fmt::Display for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Memo::Batch { id, root, count } => write!(f, "{MEMO_PREFIX}{id}:{root}:{count}"),
            Memo::Slash {
                kind,
                evidence,
                stake: None,
            } => write!(f, "{MEMO_PREFIX}slash:{kind}:{evidence}"),
            Memo::Slash {
                kind,
                evidence,
                stake: Some(tag),
            } => write!(f, "{MEMO_PREFIX}slash:{kind}:{evidence}:{tag}"),
            Memo::Release { stake } => write!(f, "{MEMO_PREFIX}release:{stake}"),
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    // Canonical decimal only: no sign, no leading zeros (except "0").
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Memo {
    /// Parses a memo this crate wrote; `None` for anything else (including non-canonical
    /// spellings, so parse ∘ display is the identity).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_MEMO_BYTES {
            return None;
        }
        let rest = s.strip_prefix(MEMO_PREFIX)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let memo = match parts.as_slice() {
            ["slash", kind, ev] if valid_kind(kind) => Memo::Slash {
                kind: (*kind).to_string(),
                evidence: Hash32::from_hex(ev)?,
                stake: None,
            },
            ["slash", kind, ev, tag] if valid_kind(kind) && valid_tag(tag) => Memo::Slash {
                kind: (*kind).to_string(),
                evidence: Hash32::from_hex(ev)?,
                stake: Some((*tag).to_string()),
            },
            ["release", tag] if valid_tag(tag) => Memo::Release {
                stake: (*tag).to_string(),
            },
            [id, root, count] => Memo::Batch {
                id: parse_u64(id)?,
                root: Hash32::from_hex(root)?,
                count: parse_u64(count)?,
            },
            _ => return None,
        };
        (memo.to_string() == s).then_some(memo)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::hash::sha256;

    #[test]
    fn roundtrip_and_bounds() {
        let m = Memo::Batch {
            id: u64::MAX,
            root: sha256(b"x"),
            count: u64::MAX,
        };
        let s = m.to_string();
        assert_eq!(s.len(), 116);
        assert!(s.len() <= MAX_MEMO_BYTES);
        assert_eq!(Memo::parse(&s), Some(m));
        let sl = Memo::Slash {
            kind: "fake-gpu".into(),
            evidence: sha256(b"e"),
            stake: None,
        };
        assert_eq!(Memo::parse(&sl.to_string()), Some(sl));
        let tag = stake_tag(
            "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW",
        );
        assert_eq!(tag.len(), STAKE_TAG_LEN);
        let longest = Memo::Slash {
            kind: "a".repeat(MAX_EVIDENCE_KIND_LEN),
            evidence: sha256(b"e"),
            stake: Some(tag.clone()),
        };
        assert!(
            longest.to_string().len() <= MAX_MEMO_BYTES,
            "{}",
            longest.to_string().len()
        );
        assert_eq!(Memo::parse(&longest.to_string()), Some(longest));
        let rel = Memo::Release { stake: tag.clone() };
        assert_eq!(rel.to_string(), format!("gpufed:v1:release:{tag}"));
        assert_eq!(Memo::parse(&rel.to_string()), Some(rel));
        assert_eq!(Memo::parse("gpufed:v1:release:XYZ"), None);
        assert_ne!(stake_tag("a"), stake_tag("b"));
        assert_eq!(Memo::parse("gpufed:v2:1:00:1"), None);
        assert_eq!(Memo::parse(&format!("gpufed:v1:01:{}:1", sha256(b"x"))), None);
        assert_eq!(Memo::parse(&format!("gpufed:v1:1:{}:+1", sha256(b"x"))), None);
        assert_eq!(
            Memo::parse(&format!("gpufed:v1:slash:BAD:{}", sha256(b"x"))),
            None
        );
        assert_eq!(Memo::parse(&format!("gpufed:v1:1:{}", sha256(b"x"))), None);
        assert!(!valid_kind(&"a".repeat(33)));
    }
}
