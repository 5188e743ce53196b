//! Fleet-wide uniqueness: a GPU UUID belongs to one node of one provider, and so does a
//! board serial number where boards report one (data-center boards do). A serial seen on
//! two nodes is one physical card listed twice — typically sliced into virtual GPUs,
//! each with a UUID of its own, which UUIDs alone cannot catch. One node may report a
//! serial for several GPUs: boards with two or four GPUs carry one serial.
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

/// One claim: `provider` says node `node` holds GPU `uuid`, on the board `serial`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Node name.
    pub node: &'a str,
    /// GPU UUID (compared case-insensitively).
    pub uuid: &'a str,
    /// Board serial number, if reported (compared case-insensitively; placeholders such
    /// as `N/A` or all zeros are no serial, [`board_serial`]).
    pub serial: Option<&'a str>,
}

/// A reported board serial as compared, or `None` for none: empty, all zeros, or a
/// placeholder (`N/A`, `Not Available`, `Unknown`) as some boards and drivers report —
/// honest nodes sharing a placeholder must not be flagged.
pub fn board_serial(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_uppercase();
    let placeholder = s.chars().all(|c| c == '0' || c == '-' || c == ' ')
        || ["N/A", "[N/A]", "NA", "NOT AVAILABLE", "UNKNOWN", "NONE"].contains(&s.as_str());
    (!placeholder).then_some(s)
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

/// Board serials (as [`board_serial`] compares them) reported by more than one node →
/// every `provider/node` reporting them.
pub fn duplicate_serials<'a>(
    claims: impl IntoIterator<Item = Claim<'a>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_serial: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in claims {
        if let Some(serial) = c.serial.and_then(board_serial) {
            by_serial
                .entry(serial)
                .or_default()
                .insert(format!("{}/{}", c.provider, c.node));
        }
    }
    by_serial.retain(|_, who| who.len() > 1);
    by_serial
}

/// The other claimants of `uuid`, seen from `me` (`provider/node`), comma separated;
/// `None` when the UUID is unique.
pub fn others(dups: &BTreeMap<String, BTreeSet<String>>, uuid: &str, me: &str) -> Option<String> {
    others_of(dups, &uuid.trim().to_ascii_uppercase(), me)
}

fn others_of(dups: &BTreeMap<String, BTreeSet<String>>, key: &str, me: &str) -> Option<String> {
    let who = dups.get(key)?;
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
    /// GPUs the node sells (its kubelet's count): a node selling more GPUs than its report
    /// verified is no verified node, however many of those passed — one real card would
    /// otherwise stand for all of them.
    pub sold: u32,
    /// The model the node sells (its label; empty: not known): a node whose verified GPUs
    /// are of another model is no verified node — an RTX 4090 passing in its own band
    /// would otherwise vouch for "H100"s.
    pub sold_model: String,
    /// UUIDs of GPUs that passed only between rounds while the hub holds such passes on
    /// probation (docs/trust.md, "Probation"): they count neither as verified nor as
    /// failed, and their node serves no verified-only job yet.
    pub probation: BTreeSet<String>,
}

/// A provider's verification result across its nodes, uniqueness applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderVerdict {
    /// GPUs that passed and are unique.
    pub verified: u32,
    /// GPUs that did not (any reason).
    pub failed: u32,
    /// GPUs that passed and are unique, on probation until they pass a round.
    pub on_probation: u32,
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

/// Whether a GPU of `model` (as its report names it) is what a node labelled `sold`
/// sells. Compared on letters and digits alone (a label value replaces other characters
/// with `-`); a label of 63 characters may have been cut, so it need only be a prefix. A
/// node of several models (`mixed`) or of none known (`unknown`, empty) sells no one
/// model: nothing to compare.
fn sold_as(sold: &str, model: &str) -> bool {
    let id = |m: &str| -> String {
        m.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let (label, sold, model) = (sold, id(sold), id(model));
    sold.is_empty()
        || sold == "mixed"
        || sold == "unknown"
        || model == sold
        || (label.len() >= 63 && model.starts_with(&sold))
}

/// Judges the whole fleet: per-node verdicts, then UUID and board-serial uniqueness over
/// every claim (a duplicate turns even a passed GPU into a failure for every claimant).
pub fn judge(nodes: &[NodeVerdicts]) -> BTreeMap<String, ProviderVerdict> {
    let claims = || {
        nodes.iter().flat_map(|n| {
            n.verdicts.iter().map(|v| Claim {
                provider: &n.provider,
                node: &n.node,
                uuid: &v.uuid,
                serial: v.serial.as_deref(),
            })
        })
    };
    let dups = duplicates(claims());
    let dup_serials = duplicate_serials(claims());
    let mut out: BTreeMap<String, ProviderVerdict> = BTreeMap::new();
    for n in nodes {
        let me = format!("{}/{}", n.provider, n.node);
        let pv = out.entry(n.provider.clone()).or_default();
        let mut all_passed = !n.verdicts.is_empty();
        for v in &n.verdicts {
            let mut v = v.clone();
            if let Some(others) = others(&dups, &v.uuid, &me) {
                v.failure = Some(Failure::DuplicateUuid { others });
            } else if let Some(serial) = v.serial.as_deref().and_then(board_serial)
                && let Some(others) = others_of(&dup_serials, &serial, &me)
            {
                v.failure = Some(Failure::DuplicateSerial { serial, others });
            }
            if v.passed() && n.probation.contains(&v.uuid) {
                all_passed = false;
                pv.on_probation += 1;
            } else if v.passed() {
                pv.verified += 1;
                *pv.verified_by_model.entry(v.model.clone()).or_default() += 1;
            } else {
                all_passed = false;
                pv.failed += 1;
                pv.failures.push((n.node.clone(), v));
            }
        }
        let covered = u32::try_from(n.verdicts.len()).unwrap_or(u32::MAX) >= n.sold;
        let as_sold = n.verdicts.iter().all(|v| sold_as(&n.sold_model, &v.model));
        if all_passed && covered && as_sold {
            pv.verified_nodes.insert(n.node.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(provider: &'a str, node: &'a str, uuid: &'a str) -> Claim<'a> {
        Claim {
            provider,
            node,
            uuid,
            serial: None,
        }
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

#[cfg(test)]
mod serial_tests {
    use super::*;

    fn verdict(uuid: &str, serial: Option<&str>) -> GpuVerdict {
        GpuVerdict {
            uuid: uuid.into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            serial: serial.map(Into::into),
            failure: None,
        }
    }

    fn node(provider: &str, node: &str, gpus: &[(&str, Option<&str>)]) -> NodeVerdicts {
        NodeVerdicts {
            provider: provider.into(),
            node: node.into(),
            verdicts: gpus.iter().map(|(u, s)| verdict(u, *s)).collect(),
            sold: u32::try_from(gpus.len()).unwrap_or(u32::MAX),
            sold_model: "NVIDIA-H100-80GB-HBM3".into(),
            probation: BTreeSet::new(),
        }
    }

    #[test]
    fn a_node_selling_more_gpus_than_its_report_verified_is_no_verified_node() {
        // Its kubelet sells 8; its report lists the one real card, which passes.
        let mut one_of_eight = node("p", "n1", &[("GPU-1", None)]);
        one_of_eight.sold = 8;
        let v = judge(&[one_of_eight, node("p", "n2", &[("GPU-2", None), ("GPU-3", None)])]);
        let p = &v["p"];
        assert_eq!(p.verified, 3, "the GPUs that passed still count");
        assert_eq!(
            p.verified_nodes,
            BTreeSet::from(["n2".to_owned()]),
            "n1 would sell 8 verified GPUs for one"
        );
        // Sold as another model than the one that passed.
        let mut relabelled = node("q", "n3", &[("GPU-4", None)]);
        relabelled.sold_model = "NVIDIA-B200".into();
        let v = judge(&[relabelled]);
        assert_eq!(v["q"].verified, 1);
        assert!(
            v["q"].verified_nodes.is_empty(),
            "an H100 does not vouch for a B200"
        );
        // Labels as the device plugin writes them still match their model.
        assert!(sold_as("NVIDIA-H100-80GB-HBM3", "NVIDIA H100 80GB HBM3"));
        assert!(sold_as("NVIDIA-A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"));
        assert!(sold_as(
            "NVIDIA-GeForce-RTX-4090-D--rev-2",
            "NVIDIA GeForce RTX 4090 D (rev 2)"
        ));
        assert!(
            !sold_as("NVIDIA", "NVIDIA H100 80GB HBM3"),
            "a short label is no prefix"
        );
        let long = format!("NVIDIA-{}", "X".repeat(60));
        assert!(
            sold_as(&long[..63], &format!("NVIDIA {}", "X".repeat(60))),
            "a cut label"
        );
        assert!(
            sold_as("mixed", "NVIDIA H100 80GB HBM3"),
            "several models: no one to compare"
        );
        assert!(sold_as("unknown", "NVIDIA H100 80GB HBM3"));
        assert!(!sold_as("NVIDIA-H200", "NVIDIA H100 80GB HBM3"));
    }

    #[test]
    fn a_gpu_on_probation_counts_neither_way_and_still_meets_the_uniqueness_checks() {
        let mut joined = node("new", "n1", &[("GPU-1", None), ("GPU-2", None)]);
        joined.probation = BTreeSet::from(["GPU-2".to_owned()]);
        let mut copy = node("copy", "c1", &[("GPU-9", None)]);
        copy.probation = BTreeSet::from(["GPU-9".to_owned()]);
        let v = judge(&[joined, copy, node("old", "o1", &[("GPU-9", None)])]);
        let new = &v["new"];
        assert_eq!((new.verified, new.failed, new.on_probation), (1, 0, 1), "{new:?}");
        assert!(
            new.verified_nodes.is_empty(),
            "a node with a GPU on probation serves no verified-only job"
        );
        assert!(new.failures.is_empty());
        // A UUID claimed twice is a duplicate for both claimants, probation or not.
        assert_eq!((v["copy"].on_probation, v["copy"].failed), (0, 1));
        assert_eq!(v["old"].failed, 1);
    }

    #[test]
    fn one_board_on_two_nodes_flags_both_but_a_multi_gpu_board_on_one_node_does_not() {
        let v = judge(&[
            // Virtual GPUs of one card, each with its own UUID, on two providers' nodes.
            node(
                "honest",
                "n1",
                &[("GPU-1", Some("1650123456789")), ("GPU-2", Some("1650000000002"))],
            ),
            node("slicer", "v1", &[("GPU-vA", Some("1650123456789 "))]),
            // A dual-GPU board: one serial, two GPUs, one node.
            node(
                "dual",
                "n1",
                &[("GPU-k1", Some("0324411")), ("GPU-k2", Some("0324411"))],
            ),
            // Placeholders are no serial.
            node(
                "consumer",
                "a",
                &[("GPU-c1", Some("N/A")), ("GPU-c2", Some("0000000000000"))],
            ),
            node("consumer", "b", &[("GPU-c3", Some("N/A")), ("GPU-c4", None)]),
        ]);
        let failures = |p: &str| -> Vec<(String, String)> {
            v[p].failures
                .iter()
                .map(|(n, g)| {
                    (
                        format!("{n}/{}", g.uuid),
                        g.failure.as_ref().map(ToString::to_string).unwrap_or_default(),
                    )
                })
                .collect()
        };
        assert_eq!(
            failures("honest"),
            [(
                "n1/GPU-1".to_owned(),
                "board serial 1650123456789 also reported by slicer/v1".to_owned()
            )]
        );
        assert_eq!(v["honest"].verified, 1);
        assert_eq!(
            failures("slicer"),
            [(
                "v1/GPU-vA".to_owned(),
                "board serial 1650123456789 also reported by honest/n1".to_owned()
            )]
        );
        assert!(failures("dual").is_empty());
        assert_eq!(v["dual"].verified, 2);
        assert!(failures("consumer").is_empty(), "{:?}", failures("consumer"));
        assert_eq!(
            v["slicer"].evidence_kinds(),
            BTreeSet::from([crate::verify::EVIDENCE_DUPLICATE_GPU])
        );
    }

    #[test]
    fn a_duplicate_uuid_is_named_before_a_duplicate_serial() {
        let v = judge(&[
            node("a", "n1", &[("GPU-x", Some("S1"))]),
            node("b", "n2", &[("GPU-x", Some("S1"))]),
        ]);
        let reason = |p: &str| v[p].failures[0].1.failure.as_ref().map(Failure::reason);
        assert_eq!(
            (reason("a"), reason("b")),
            (Some("DuplicateUuid"), Some("DuplicateUuid"))
        );
    }

    #[test]
    fn placeholders_are_no_serial() {
        for s in [
            "",
            "  ",
            "N/A",
            "[N/A]",
            "not available",
            "Unknown",
            "0000",
            "00-00",
        ] {
            assert_eq!(board_serial(s), None, "{s:?}");
        }
        assert_eq!(board_serial(" 1650123456789 ").as_deref(), Some("1650123456789"));
        assert_eq!(board_serial("pcb-0324411").as_deref(), Some("PCB-0324411"));
    }
}
