//! Fleet-wide uniqueness: a GPU UUID belongs to one node of one provider.
//!
//! Every claimant of a duplicated UUID is flagged, and none of those GPUs counts as
//! verified until only one claim remains: the hub cannot tell the original from the
//! clone (both may even pass the challenge with a real card of the same model), so it
//! trusts neither. Slashing on a duplicate is a policy choice (`duplicate-gpu` evidence
//! is recorded for every claimant); it is off by default because a cloner could use it
//! to grief an honest provider whose UUIDs it copied.

use std::collections::{BTreeMap, BTreeSet};

use crate::session::GpuVerdict;
use crate::verify::Failure;

/// One claim: `provider` says node `node` holds GPU `uuid`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Node name.
    pub node: &'a str,
    /// GPU UUID (compared case-insensitively).
    pub uuid: &'a str,
}

/// Duplicated UUIDs (normalized to upper case) → every `provider/node` claiming them.
pub fn duplicates<'a>(claims: impl IntoIterator<Item = Claim<'a>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_uuid: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in claims {
        by_uuid
            .entry(c.uuid.trim().to_ascii_uppercase())
            .or_default()
            .insert(format!("{}/{}", c.provider, c.node));
    }
    by_uuid.retain(|_, who| who.len() > 1);
    by_uuid
}

/// The other claimants of `uuid`, seen from `me` (`provider/node`), comma separated;
/// `None` when the UUID is unique.
pub fn others(dups: &BTreeMap<String, BTreeSet<String>>, uuid: &str, me: &str) -> Option<String> {
    let who = dups.get(&uuid.trim().to_ascii_uppercase())?;
    let rest: Vec<&str> = who.iter().map(String::as_str).filter(|w| *w != me).collect();
    Some(if rest.is_empty() {
        me.to_owned()
    } else {
        rest.join(",")
    })
}

/// One node's latest verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVerdicts {
    /// Provider name.
    pub provider: String,
    /// Node name.
    pub node: String,
    /// One verdict per GPU the node claims.
    pub verdicts: Vec<GpuVerdict>,
}

/// A provider's verification result across its nodes, uniqueness applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderVerdict {
    /// GPUs that passed and are unique.
    pub verified: u32,
    /// GPUs that did not (any reason).
    pub failed: u32,
    /// Verified GPUs by model.
    pub verified_by_model: BTreeMap<String, u32>,
    /// `(node, verdict)` of every GPU that did not verify.
    pub failures: Vec<(String, GpuVerdict)>,
    /// Nodes that claimed at least one GPU and whose every claimed GPU verified: the only
    /// nodes a job that wants verified GPUs may use.
    pub verified_nodes: BTreeSet<String>,
}

impl ProviderVerdict {
    /// Evidence kinds among the failures, each once.
    pub fn evidence_kinds(&self) -> BTreeSet<&'static str> {
        self.failures
            .iter()
            .filter_map(|(_, v)| v.failure.as_ref()?.evidence_kind())
            .collect()
    }
}

/// Judges the whole fleet: per-node verdicts, then UUID uniqueness over every claim
/// (a duplicate turns even a passed GPU into a failure for every claimant).
pub fn judge(nodes: &[NodeVerdicts]) -> BTreeMap<String, ProviderVerdict> {
    let dups = duplicates(nodes.iter().flat_map(|n| {
        n.verdicts.iter().map(|v| Claim {
            provider: &n.provider,
            node: &n.node,
            uuid: &v.uuid,
        })
    }));
    let mut out: BTreeMap<String, ProviderVerdict> = BTreeMap::new();
    for n in nodes {
        let me = format!("{}/{}", n.provider, n.node);
        let pv = out.entry(n.provider.clone()).or_default();
        let mut all_passed = !n.verdicts.is_empty();
        for v in &n.verdicts {
            let mut v = v.clone();
            if let Some(others) = others(&dups, &v.uuid, &me) {
                v.failure = Some(Failure::DuplicateUuid { others });
            }
            if v.passed() {
                pv.verified += 1;
                *pv.verified_by_model.entry(v.model.clone()).or_default() += 1;
            } else {
                all_passed = false;
                pv.failed += 1;
                pv.failures.push((n.node.clone(), v));
            }
        }
        if all_passed {
            pv.verified_nodes.insert(n.node.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(provider: &'a str, node: &'a str, uuid: &'a str) -> Claim<'a> {
        Claim { provider, node, uuid }
    }

    #[test]
    fn duplicates_across_and_within_providers() {
        let d = duplicates([
            c("p1", "n1", "GPU-a"),
            c("p2", "n9", "gpu-A"),
            c("p1", "n1", "GPU-b"),
            c("p3", "n1", "GPU-c"),
            c("p3", "n2", "GPU-c"),
            c("p4", "n1", "GPU-d"),
            c("p4", "n1", "GPU-d"),
        ]);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(others(&d, "GPU-a", "p1/n1").as_deref(), Some("p2/n9"));
        assert_eq!(others(&d, "GPU-c", "p3/n2").as_deref(), Some("p3/n1"));
        assert_eq!(others(&d, "GPU-b", "p1/n1"), None);
        assert_eq!(
            others(&d, "GPU-d", "p4/n1"),
            None,
            "one node repeating itself is one claim"
        );
    }
}
