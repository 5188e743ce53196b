//! The versioned memo text carried by the SPL Memo instruction of each transaction.
//!
//! * batch: `gpufed:v1:<batch id>:<merkle root hex>:<record count>`
//! * slash: `gpufed:v1:slash:<evidence kind>:<evidence sha-256 hex>`
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
            Memo::Slash { kind, evidence } => write!(f, "{MEMO_PREFIX}slash:{kind}:{evidence}"),
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
        };
        assert_eq!(Memo::parse(&sl.to_string()), Some(sl));
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
