//! A provider's tenant policy: which hub namespaces it takes new work from.
//!
//! The selector mirrors Kubernetes' `LabelSelector` (matchLabels, matchExpressions with
//! In / NotIn / Exists / DoesNotExist), with the same semantics, as our own type so its
//! operator is an enum in the schema and its rule can be checked offline.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::DNS_LABEL_PATTERN;

/// Which tenants — the hub namespaces whose ComputeJobs and ComputeServices run here — a
/// provider takes new work from. A namespace is admitted when it is listed in
/// `namespaces` (or the list is empty), its labels match `namespaceSelector` (when set),
/// and it is not in `excludedNamespaces`. Work already running stays unless
/// `evictRunning` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Tenants {
    /// Only these namespaces (empty: any namespace the other fields admit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))
    )]
    pub namespaces: Vec<String>,
    /// Only namespaces whose labels match, e.g. those the hub's admins marked as vetted
    /// (`gpufed.io/kyc: verified`). An empty selector matches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    /// Never these namespaces, whatever the other fields say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))
    )]
    pub excluded_namespaces: Vec<String>,
    /// Also evict the running work of namespaces the policy does not admit (after a
    /// change of the policy or of a namespace's labels), as a drain evicts: the attempts
    /// end `Preempted` and are queued again elsewhere without using up an attempt, a
    /// ComputeService's ready replicas only as its disruption budget allows. By default
    /// the policy governs new placements only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evict_running: bool,
}

/// A label query over namespaces, as Kubernetes' `LabelSelector`: every `matchLabels`
/// pair and every expression must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels the namespace must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements on the namespace's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement on a label.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the label relates to `values`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (at least one); empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// A label requirement's operator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    /// The label is set to one of the values.
    In,
    /// The label is unset, or set to none of the values.
    NotIn,
    /// The label is set (any value).
    Exists,
    /// The label is unset.
    DoesNotExist,
}

impl SelectorRequirement {
    /// Whether the requirement's values agree with its operator.
    pub fn is_well_formed(&self) -> bool {
        matches!(self.operator, SelectorOperator::In | SelectorOperator::NotIn) == !self.values.is_empty()
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl NamespaceSelector {
    /// Whether `labels` satisfy the selector. A malformed requirement matches nothing
    /// (the spec check reports it).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self
                .match_expressions
                .iter()
                .all(|e| e.is_well_formed() && e.matches(labels))
    }
}

impl Tenants {
    /// Whether the policy restricts anything (an empty policy admits everyone).
    pub fn restricts(&self) -> bool {
        !self.namespaces.is_empty()
            || self.namespace_selector.is_some()
            || !self.excluded_namespaces.is_empty()
    }

    /// Whether work from `namespace` is admitted, given its labels (`None`: not known,
    /// which a selector never admits — the policy fails closed).
    pub fn admits(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        let selected = match (&self.namespace_selector, labels) {
            (None, _) => true,
            (Some(s), Some(labels)) => s.matches(labels),
            (Some(_), None) => false,
        };
        self.admits_by_name(namespace) && selected
    }

    /// Whether the name lists alone admit `namespace` (listed, or no list; not excluded).
    pub fn admits_by_name(&self, namespace: &str) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && !self.excluded_namespaces.iter().any(|n| n == namespace)
    }
}

impl std::fmt::Display for NamespaceSelector {
    /// kubectl's selector syntax: `a=b,c in (x,y),d notin (z),e,!f`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for e in &self.match_expressions {
            let values = e.values.join(",");
            parts.push(match e.operator {
                SelectorOperator::In => format!("{} in ({values})", e.key),
                SelectorOperator::NotIn => format!("{} notin ({values})", e.key),
                SelectorOperator::Exists => e.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", e.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

impl Tenants {
    /// One line for a table: `any`, or the lists and the selector, e.g.
    /// `team-a,team-b; gpufed.io/kyc=verified; not sandbox`.
    pub fn summary(&self) -> String {
        if !self.restricts() {
            return "any".into();
        }
        let names = |list: &[String]| match list.len() {
            0..=3 => list.join(","),
            n => format!("{} and {} more", list[..2].join(","), n - 2),
        };
        let mut parts = Vec::new();
        if !self.namespaces.is_empty() {
            parts.push(names(&self.namespaces));
        }
        if let Some(s) = &self.namespace_selector {
            let text = s.to_string();
            parts.push(if text.is_empty() {
                "any labels".into()
            } else {
                text
            });
        }
        if !self.excluded_namespaces.is_empty() {
            parts.push(format!("not {}", names(&self.excluded_namespaces)));
        }
        if self.evict_running {
            parts.push("evicts running work".into());
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::SelectorOperator::{DoesNotExist, Exists, In, NotIn};
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| (*v).into()).collect(),
        }
    }

    fn selector(exprs: Vec<SelectorRequirement>) -> Tenants {
        Tenants {
            namespace_selector: Some(NamespaceSelector {
                match_labels: labels(&[("tier", "paid")]),
                match_expressions: exprs,
            }),
            ..Tenants::default()
        }
    }

    #[test]
    fn an_empty_policy_admits_everyone_and_restricts_nothing() {
        let t = Tenants::default();
        assert!(!t.restricts());
        assert!(t.admits("anyone", None));
    }

    #[test]
    fn lists_admit_listed_namespaces_and_exclusions_win() {
        let t = Tenants {
            namespaces: vec!["a".into(), "b".into()],
            excluded_namespaces: vec!["b".into()],
            ..Tenants::default()
        };
        assert!(t.restricts());
        assert!(t.admits("a", None));
        assert!(!t.admits("b", None), "excluded although listed");
        assert!(!t.admits("c", None), "not listed");
        let only_excluded = Tenants {
            excluded_namespaces: vec!["x".into()],
            ..Tenants::default()
        };
        assert!(only_excluded.admits("a", None) && !only_excluded.admits("x", None));
    }

    #[test]
    fn the_selector_follows_label_selector_semantics() {
        let paid = labels(&[("tier", "paid"), ("kyc", "verified"), ("region", "eu")]);
        let cases = [
            (req("kyc", In, &["verified", "pending"]), true),
            (req("kyc", In, &["pending"]), false),
            (req("kyc", NotIn, &["pending"]), true),
            (req("absent", NotIn, &["x"]), true),
            (req("kyc", NotIn, &["verified"]), false),
            (req("region", Exists, &[]), true),
            (req("absent", Exists, &[]), false),
            (req("absent", DoesNotExist, &[]), true),
            (req("kyc", DoesNotExist, &[]), false),
        ];
        for (r, want) in cases {
            let t = selector(vec![r.clone()]);
            assert_eq!(t.admits("ns", Some(&paid)), want, "{r:?}");
        }
        // matchLabels must hold as well.
        let free = labels(&[("tier", "free"), ("kyc", "verified")]);
        assert!(!selector(vec![req("kyc", In, &["verified"])]).admits("ns", Some(&free)));
        // An empty selector matches every namespace with known labels.
        let empty = Tenants {
            namespace_selector: Some(NamespaceSelector::default()),
            ..Tenants::default()
        };
        assert!(empty.admits("ns", Some(&BTreeMap::new())));
    }

    #[test]
    fn unknown_labels_and_malformed_requirements_admit_nobody() {
        let t = selector(vec![]);
        assert!(!t.admits("ns", None), "labels not known: fail closed");
        let paid = labels(&[("tier", "paid"), ("kyc", "verified")]);
        for bad in [req("kyc", In, &[]), req("kyc", Exists, &["verified"])] {
            assert!(!bad.is_well_formed());
            assert!(!selector(vec![bad]).admits("ns", Some(&paid)));
        }
        assert!(req("kyc", NotIn, &["x"]).is_well_formed() && req("kyc", DoesNotExist, &[]).is_well_formed());
    }

    #[test]
    fn summaries_read_like_kubectl_selectors() {
        assert_eq!(Tenants::default().summary(), "any");
        let t = Tenants {
            namespaces: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            namespace_selector: Some(NamespaceSelector {
                match_labels: labels(&[("gpufed.io/kyc", "verified")]),
                match_expressions: vec![
                    req("tier", In, &["paid", "pro"]),
                    req("trial", NotIn, &["yes"]),
                    req("billing", Exists, &[]),
                    req("banned", DoesNotExist, &[]),
                ],
            }),
            excluded_namespaces: vec!["sandbox".into()],
            evict_running: true,
        };
        assert_eq!(
            t.summary(),
            "a,b and 2 more; gpufed.io/kyc=verified,tier in (paid,pro),trial notin (yes),billing,!banned; not sandbox; evicts running work"
        );
    }
}
