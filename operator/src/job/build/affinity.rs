//! Pure: the worker template's affinity rules that decide where its workers may run —
//! checked with the template, honoured by placement ([`node_terms`],
//! [`workers_per_node`], [`workers_together`]) and kept in the pods [`pin`] binds to the
//! chosen node, so the member's scheduler holds the workers to them as well.
//!
//! - Required node affinity: the engine offers only nodes one of whose terms holds over
//!   the labels the hub sees; each term of the built pod gains the pin to the chosen
//!   node (terms are ORed, so the pin goes into every one). `matchFields` names nodes,
//!   which only placement chooses: refused.
//! - Topology spread constraints that must hold (`DoNotSchedule`): a node without the
//!   topology key is refused ([`placement_terms`]).
//! - Required pod anti-affinity between the job's own workers on
//!   `kubernetes.io/hostname`: one worker per node ([`workers_per_node`]); required pod
//!   affinity between them: all on one node ([`workers_together`], placed as one worker
//!   of all their GPUs and resources). Any other pod (anti-)affinity
//!   involves pods the hub does not see; a gang it keeps from starting ends at
//!   `spec.startTimeout`.

use std::collections::BTreeMap;

use gpufed_placement as pl;
use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The node label kube-scheduler's hostname topology and the pin use.
pub const HOSTNAME: &str = "kubernetes.io/hostname";

const REQUIRED: &str =
    "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";

/// The template's required node affinity as the engine's terms (none: any node), or
/// why it cannot be honoured, naming the field.
pub fn node_terms(t: &PodSpec) -> Result<Vec<pl::AffinityTerm>, String> {
    let Some(required) = t
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
    else {
        return Ok(Vec::new());
    };
    if required.node_selector_terms.is_empty() {
        return Err(format!(
            "{REQUIRED}.nodeSelectorTerms: at least one term is required"
        ));
    }
    let mut terms = Vec::with_capacity(required.node_selector_terms.len());
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        let at = format!("{REQUIRED}.nodeSelectorTerms[{i}]");
        if term.match_fields.as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(format!(
                "{at}.matchFields: not supported: gpufed chooses the node; select nodes by their labels"
            ));
        }
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        if exprs.is_empty() {
            return Err(format!(
                "{at}.matchExpressions: a term without requirements matches no node"
            ));
        }
        let reqs = exprs
            .iter()
            .enumerate()
            .map(|(j, r)| requirement(r).map_err(|e| format!("{at}.matchExpressions[{j}]{e}")))
            .collect::<Result<Vec<_>, _>>()?;
        terms.push(reqs);
    }
    Ok(terms)
}

/// What the engine must know of where the workers may run, by node labels: the required
/// node affinity's terms ([`node_terms`], none when invalid: such a job is not placed),
/// each also requiring the topology keys of the template's `DoNotSchedule` topology
/// spread constraints that every provider reports ([`crate::fleet::SELECTABLE_LABELS`]):
/// kube-scheduler refuses a node without the key. Their skew never blocks a worker: the
/// pin leaves it one eligible node, so the worker's own domain is the least loaded.
/// (`kubernetes.io/hostname` is on every node; other keys the hub may not see.)
pub fn placement_terms(t: &PodSpec) -> Vec<pl::AffinityTerm> {
    let mut terms = node_terms(t).unwrap_or_default();
    let keys: Vec<pl::LabelRequirement> = t
        .topology_spread_constraints
        .iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
        .filter(|c| crate::fleet::SELECTABLE_LABELS.contains(&c.topology_key.as_str()))
        .map(|c| pl::LabelRequirement {
            key: c.topology_key.clone(),
            op: pl::LabelOp::Exists,
        })
        .collect();
    if keys.is_empty() {
        return terms;
    }
    if terms.is_empty() {
        terms.push(Vec::new());
    }
    for term in &mut terms {
        for k in &keys {
            if !term.contains(k) {
                term.push(k.clone());
            }
        }
    }
    terms
}

/// One node selector requirement, as Kubernetes validates it; the error starts with the
/// field below the requirement.
fn requirement(r: &NodeSelectorRequirement) -> Result<pl::LabelRequirement, String> {
    if r.key.is_empty() || r.key.len() > 317 {
        return Err(".key: must be a label key".into());
    }
    let values = r.values.clone().unwrap_or_default();
    let one_integer = || match values.as_slice() {
        [v] => v
            .parse::<i64>()
            .map_err(|_| format!(".values: {} needs an integer, got {v:?}", r.operator)),
        _ => Err(format!(".values: {} needs exactly one value", r.operator)),
    };
    let op = match r.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => {
            return Err(format!(".values: {} needs at least one value", r.operator));
        }
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            return Err(format!(".values: {} takes no values", r.operator));
        }
        "Gt" => pl::LabelOp::Gt(one_integer()?),
        "Lt" => pl::LabelOp::Lt(one_integer()?),
        other => set_op(other, values).ok_or_else(|| {
            format!(".operator: {other:?} is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt")
        })?,
    };
    Ok(pl::LabelRequirement {
        key: r.key.clone(),
        op,
    })
}

/// Binds a worker pod to `node`: the pin joins every required term of the template (or
/// is the only one), so the node must be `node` and satisfy the template's affinity.
pub fn pin(spec: &mut PodSpec, node: &str) {
    let pin = NodeSelectorRequirement {
        key: HOSTNAME.into(),
        operator: "In".into(),
        values: Some(vec![node.to_owned()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Default::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(Default::default);
    let mut terms = node_affinity
        .required_during_scheduling_ignored_during_execution
        .take()
        .map(|r| r.node_selector_terms)
        .unwrap_or_default();
    if terms.is_empty() {
        terms.push(NodeSelectorTerm::default());
    }
    for t in &mut terms {
        t.match_expressions.get_or_insert_with(Vec::new).push(pin.clone());
    }
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: terms,
    });
}

/// At most this many of the job's `workers` on one node (0: no limit): 1 when a
/// required pod anti-affinity term on [`HOSTNAME`] covers the workers' own namespace and
/// selects every worker (`labels(rank)`: worker `rank`'s labels).
pub fn workers_per_node(t: &PodSpec, workers: u32, labels: impl Fn(u32) -> BTreeMap<String, String>) -> u16 {
    let terms = t
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref());
    let apart = among_workers(terms, workers, |s| {
        (0..workers).all(|rank| selects(s, &labels(rank)))
    });
    u16::from(apart)
}

/// Whether the job's `workers` must all share one node: a required pod affinity term on
/// [`HOSTNAME`] over the workers' own namespace selects one of them. Each worker must then
/// land where a selected worker already runs (kube-scheduler lets the first selected pod
/// go anywhere), and pods bound one after another end up on one node. Never together
/// while kept apart ([`workers_per_node`]): such a template can never start all its
/// workers, and is left to `spec.startTimeout`.
pub fn workers_together(t: &PodSpec, workers: u32, labels: impl Fn(u32) -> BTreeMap<String, String>) -> bool {
    let terms = t
        .affinity
        .as_ref()
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref());
    among_workers(terms, workers, |s| {
        (0..workers).any(|rank| selects(s, &labels(rank)))
    }) && workers_per_node(t, workers, labels) == 0
}

/// Whether one of the required pod (anti-)affinity `terms` of a gang of `workers` (two or
/// more) is on [`HOSTNAME`] over the workers' own namespace with a selector `covers` holds
/// for.
fn among_workers(
    terms: Option<&[PodAffinityTerm]>,
    workers: u32,
    covers: impl Fn(&LabelSelector) -> bool,
) -> bool {
    workers >= 2
        && terms.unwrap_or_default().iter().any(|term| {
            term.topology_key == HOSTNAME
                && own_namespace(term)
                && term.label_selector.as_ref().is_some_and(&covers)
        })
}

/// Whether a pod affinity term looks at the pods of the worker's own namespace: no
/// namespaces listed and no namespace selector (the pod's namespace), or the empty
/// namespace selector (every namespace). The tenant namespace is the job's alone.
fn own_namespace(term: &PodAffinityTerm) -> bool {
    term.namespaces.as_ref().is_none_or(Vec::is_empty)
        && term.namespace_selector.as_ref().is_none_or(|s| {
            s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
        })
}

/// Whether a pod label selector selects `labels` (the empty selector selects every pod;
/// an unknown operator nothing).
fn selects(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = s.match_labels.iter().flatten();
    let by_value = pairs.into_iter().all(|(k, v)| labels.get(k) == Some(v));
    by_value
        && s.match_expressions.iter().flatten().all(|e| {
            set_op(&e.operator, e.values.clone().unwrap_or_default()).is_some_and(|op| {
                pl::LabelRequirement {
                    key: e.key.clone(),
                    op,
                }
                .matches(labels)
            })
        })
}

/// A set-based operator (those node and pod label selectors share) with its values.
fn set_op(operator: &str, values: Vec<String>) -> Option<pl::LabelOp> {
    match operator {
        "In" => Some(pl::LabelOp::In(values)),
        "NotIn" => Some(pl::LabelOp::NotIn(values)),
        "Exists" => Some(pl::LabelOp::Exists),
        "DoesNotExist" => Some(pl::LabelOp::DoesNotExist),
        _ => None,
    }
}

#[cfg(test)]
#[path = "affinity_tests.rs"]
mod tests;
