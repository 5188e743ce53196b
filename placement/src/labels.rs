//! Node affinity over the labels the hub sees: a pod template's required
//! `nodeAffinity` terms, matched as kube-scheduler matches them, so that placement
//! offers a job only the nodes its member's scheduler would bind it to.
//!
//! Kubernetes' rules: the terms are ORed, a term's requirements ANDed, and a term
//! without requirements matches no node. `In` and `Exists` need the label; `NotIn` and
//! `DoesNotExist` hold on a node without it; `Gt` and `Lt` need the label's value to be
//! an integer.

use std::collections::BTreeMap;
use std::fmt;

/// How a requirement tests one label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LabelOp {
    /// The label is set to one of the values.
    In(Vec<String>),
    /// The label is unset or set to none of the values.
    NotIn(Vec<String>),
    /// The label is set.
    Exists,
    /// The label is unset.
    DoesNotExist,
    /// The label's value is an integer greater than this.
    Gt(i64),
    /// The label's value is an integer less than this.
    Lt(i64),
}

/// One requirement of a node selector term.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// The test.
    pub op: LabelOp,
}

/// A node selector term: its requirements, all of which must hold.
pub type AffinityTerm = Vec<LabelRequirement>;

impl LabelRequirement {
    /// Whether a node with `labels` satisfies the requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let int = || value.and_then(|v| v.parse::<i64>().ok());
        match &self.op {
            LabelOp::In(values) => value.is_some_and(|v| values.contains(v)),
            LabelOp::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::Gt(n) => int().is_some_and(|v| v > *n),
            LabelOp::Lt(n) => int().is_some_and(|v| v < *n),
        }
    }
}

/// Whether a node with `labels` satisfies some term of `terms` (no terms: any node).
pub fn affinity_matches(terms: &[AffinityTerm], labels: &BTreeMap<String, String>) -> bool {
    terms.is_empty()
        || terms
            .iter()
            .any(|t| !t.is_empty() && t.iter().all(|r| r.matches(labels)))
}

impl fmt::Display for LabelRequirement {
    /// As `kubectl` writes a set-based selector: `k in (a,b)`, `k notin (a)`, `k`, `!k`,
    /// `k>4`, `k<4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        match &self.op {
            LabelOp::In(v) => write!(f, "{k} in ({})", v.join(",")),
            LabelOp::NotIn(v) => write!(f, "{k} notin ({})", v.join(",")),
            LabelOp::Exists => write!(f, "{k}"),
            LabelOp::DoesNotExist => write!(f, "!{k}"),
            LabelOp::Gt(n) => write!(f, "{k}>{n}"),
            LabelOp::Lt(n) => write!(f, "{k}<{n}"),
        }
    }
}

/// The terms as text: each term's requirements joined with `,`, terms with ` or `.
pub fn describe_affinity(terms: &[AffinityTerm]) -> String {
    let term = |t: &AffinityTerm| {
        let parts: Vec<String> = t.iter().map(ToString::to_string).collect();
        parts.join(",")
    };
    let parts: Vec<String> = terms.iter().map(term).collect();
    parts.join(" or ")
}

/// A node selector (`key=value` pairs) and node affinity terms together, as text:
/// `disk=nvme,net in (a,b)`; several terms in parentheses after the pairs.
pub fn describe_selection<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
    terms: &[AffinityTerm],
) -> String {
    let pairs: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pairs = pairs.join(",");
    match (pairs.is_empty(), terms.len()) {
        (_, 0) => pairs,
        (true, _) => describe_affinity(terms),
        (false, 1) => format!("{pairs},{}", describe_affinity(terms)),
        (false, _) => format!("{pairs} and ({})", describe_affinity(terms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: LabelOp) -> LabelRequirement {
        LabelRequirement { key: key.into(), op }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn each_operator_follows_kubernetes() {
        let ib = labels(&[("net", "infiniband"), ("gen", "4")]);
        let bare = labels(&[]);
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases = [
            (req("net", LabelOp::In(s(&["infiniband", "roce"]))), true, false),
            (req("net", LabelOp::NotIn(s(&["infiniband"]))), false, true),
            (req("net", LabelOp::NotIn(s(&["roce"]))), true, true),
            (req("net", LabelOp::Exists), true, false),
            (req("net", LabelOp::DoesNotExist), false, true),
            (req("gen", LabelOp::Gt(3)), true, false),
            (req("gen", LabelOp::Gt(4)), false, false),
            (req("gen", LabelOp::Lt(5)), true, false),
            // A value that is not an integer satisfies neither Gt nor Lt.
            (req("net", LabelOp::Lt(5)), false, false),
        ];
        for (r, on_ib, on_bare) in cases {
            assert_eq!((r.matches(&ib), r.matches(&bare)), (on_ib, on_bare), "{r}");
        }
    }

    #[test]
    fn terms_are_ored_requirements_anded_and_an_empty_term_matches_nothing() {
        let node = labels(&[("net", "roce"), ("zone", "a")]);
        let is = |k: &str, v: &str| req(k, LabelOp::In(vec![v.into()]));
        assert!(affinity_matches(&[], &node), "no terms: any node");
        assert!(
            !affinity_matches(&[vec![]], &node),
            "an empty term matches nothing"
        );
        assert!(affinity_matches(
            &[vec![is("net", "roce"), is("zone", "a")]],
            &node
        ));
        assert!(!affinity_matches(
            &[vec![is("net", "roce"), is("zone", "b")]],
            &node
        ));
        assert!(affinity_matches(
            &[vec![is("net", "infiniband")], vec![is("zone", "a")]],
            &node
        ));
    }

    #[test]
    fn terms_read_as_kubectl_writes_selectors() {
        let terms = vec![
            vec![
                req("net", LabelOp::In(vec!["infiniband".into(), "roce".into()])),
                req("gen", LabelOp::Gt(3)),
            ],
            vec![req("spot", LabelOp::DoesNotExist), req("zone", LabelOp::Exists)],
        ];
        assert_eq!(
            describe_affinity(&terms),
            "net in (infiniband,roce),gen>3 or !spot,zone"
        );
        let (k, v) = ("disk".to_owned(), "nvme".to_owned());
        assert_eq!(
            describe_selection([(&k, &v)], &terms),
            "disk=nvme and (net in (infiniband,roce),gen>3 or !spot,zone)"
        );
        assert_eq!(
            describe_selection([(&k, &v)], &terms[1..]),
            "disk=nvme,!spot,zone"
        );
        assert_eq!(describe_selection([(&k, &v)], &[]), "disk=nvme");
    }
}
