//! Pure: a `ComputeService`'s revision history, kept as `apps/v1` ControllerRevisions —
//! the objects a StatefulSet and a DaemonSet keep theirs in — so that `kubectl gpufed
//! rollout history` can list the templates a service ran and `rollout undo` can put one
//! back.
//!
//! One ControllerRevision per replica template, named `<service>-<hash>` (the hash is the
//! replicas' [`LABEL_REVISION`]), owned by the service (deleted with it), its `data` the
//! spec fields that make the template ([`TEMPLATE_FIELDS`]). Its `revision` numbers the
//! order in which templates became current: a new template gets the next number, and so
//! does an old one applied again (an undo) — as a StatefulSet renumbers — so the highest
//! number is always the current template. Old revisions beyond
//! `spec.revisionHistoryLimit` are deleted, oldest first, unless replicas still run them.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_api::ComputeService;
use gpufed_api::service::ComputeServiceSpec;
use gpufed_api::serving::LABEL_SERVICE;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::{Map, Value};

use super::build::{self, LABEL_REVISION};

/// The annotation a Deployment's rollout history shows (`kubectl annotate … change-cause`):
/// copied from the service to the revision when the revision becomes current.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// The spec fields (as written in YAML) that make a revision: everything
/// [`build::replica_spec`] reads. `replicas`, `rollout`, `disruptionBudget` and
/// `revisionHistoryLimit` scale or bound a rollout and are not part of one.
pub const TEMPLATE_FIELDS: [&str; 9] = [
    "template",
    "gpusPerReplica",
    "gpu",
    "maxPricePerGpuHour",
    "port",
    "readinessProbe",
    "placement",
    "spread",
    "priority",
];

/// The template fields of `spec`, as stored in a revision's `data.spec`.
pub fn template(spec: &ComputeServiceSpec) -> Map<String, Value> {
    let Ok(Value::Object(all)) = serde_json::to_value(spec) else {
        return Map::new();
    };
    all.into_iter()
        .filter(|(k, _)| TEMPLATE_FIELDS.contains(&k.as_str()))
        .collect()
}

/// The ControllerRevision name of `service`'s template `hash`.
pub fn name(service: &str, hash: &str) -> String {
    format!("{service}-{hash}")
}

/// The template hash a revision stands for (its [`LABEL_REVISION`]).
pub fn hash_of(rev: &ControllerRevision) -> Option<&str> {
    rev.labels().get(LABEL_REVISION).map(String::as_str)
}

/// The template fields a revision holds (`data.spec`), if it holds an object there.
pub fn stored_template(rev: &ControllerRevision) -> Option<&Map<String, Value>> {
    rev.data.as_ref()?.0.get("spec")?.as_object()
}

/// `svc`'s revisions among `all` (same namespace, its label and owner).
pub fn of<'a>(
    svc: &ComputeService,
    all: impl IntoIterator<Item = &'a ControllerRevision>,
) -> Vec<&'a ControllerRevision> {
    let (ns, name, uid) = (svc.namespace(), svc.name_any(), svc.uid());
    all.into_iter()
        .filter(|r| r.namespace() == ns && r.labels().get(LABEL_SERVICE) == Some(&name))
        .filter(|r| r.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect()
}

/// The revision `number` of `svc`'s current template `hash`.
pub fn build(svc: &ComputeService, hash: &str, number: i64) -> ControllerRevision {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_owned(), "gpufed".to_owned()),
        (LABEL_SERVICE.to_owned(), svc.name_any()),
        (LABEL_REVISION.to_owned(), hash.to_owned()),
    ]);
    let annotations: BTreeMap<String, String> = change_cause(svc)
        .map(|c| (CHANGE_CAUSE.to_owned(), c.to_owned()))
        .into_iter()
        .collect();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name(&svc.name_any(), hash)),
            namespace: svc.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![build::owner(svc)]),
            ..Default::default()
        },
        data: Some(RawExtension(serde_json::json!({ "spec": template(&svc.spec) }))),
        revision: number,
    }
}

fn change_cause(svc: &ComputeService) -> Option<&str> {
    svc.annotations().get(CHANGE_CAUSE).map(String::as_str)
}

/// `svc` with its template fields set from `template` (a revision's `data.spec`), or
/// `None` if the result is no valid spec.
pub fn with_template(svc: &ComputeService, template: &Map<String, Value>) -> Option<ComputeService> {
    let mut spec = serde_json::to_value(&svc.spec).ok()?;
    let fields = spec.as_object_mut()?;
    fields.retain(|k, _| !TEMPLATE_FIELDS.contains(&k.as_str()));
    fields.extend(template.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut out = svc.clone();
    out.spec = serde_json::from_value(spec).ok()?;
    Some(out)
}

/// While `spec.paused`: the template in effect — the latest revision's — as the replica
/// spec and hash new replicas get. `None` without a usable revision (a service created
/// paused starts its first template).
pub fn in_effect(svc: &ComputeService, existing: &[&ControllerRevision]) -> Option<super::plan::Paused> {
    let latest = existing.iter().max_by_key(|r| r.revision)?;
    let held = with_template(svc, stored_template(latest)?)?;
    Some(super::plan::Paused {
        spec: build::replica_spec(&held),
        rev: hash_of(latest)?.to_owned(),
    })
}

/// What keeping the history takes this round.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The current template's revision number (for `status.revision`).
    pub number: i64,
    /// A revision to create: the current template is new.
    pub create: Option<ControllerRevision>,
    /// An old revision whose template is current again (an undo): its name, to be given
    /// `number` (and the service's change-cause, if it has one).
    pub renumber: Option<String>,
    /// Old revisions beyond `spec.revisionHistoryLimit` that no replica runs.
    pub delete: Vec<String>,
}

/// Plans `svc`'s history: its current template is `hash`, `existing` are its revisions
/// (see [`of`]), and replicas still run the templates `in_use`.
pub fn plan(
    svc: &ComputeService,
    existing: &[&ControllerRevision],
    hash: &str,
    in_use: &BTreeSet<String>,
) -> History {
    let highest = existing.iter().map(|r| r.revision).max().unwrap_or(0);
    let current = existing.iter().find(|r| hash_of(r) == Some(hash));
    let (number, create, renumber) = match current {
        Some(r) if r.revision == highest => (highest, None, None),
        Some(r) => (highest + 1, None, Some(r.name_any())),
        None => (highest + 1, Some(build(svc, hash, highest + 1)), None),
    };
    let mut old: Vec<&&ControllerRevision> = existing
        .iter()
        .filter(|r| hash_of(r) != Some(hash))
        .filter(|r| !hash_of(r).is_some_and(|h| in_use.contains(h)))
        .collect();
    old.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let keep = svc.spec.revision_history_limit as usize;
    let delete = old.iter().skip(keep).map(|r| r.name_any()).collect();
    History {
        number,
        create,
        renumber,
        delete,
    }
}

/// The merge patch that makes `name` the current revision `number` (see
/// [`History::renumber`]), fenced by the `resource_version` the plan read: a plan made on
/// a cache that has not seen its own renumbering yet fails with a conflict instead of
/// renumbering (and announcing the rollback) twice.
pub fn renumber_patch(svc: &ComputeService, number: i64, resource_version: Option<&str>) -> Value {
    let mut metadata = Map::new();
    if let Some(rv) = resource_version {
        metadata.insert("resourceVersion".into(), rv.into());
    }
    if let Some(c) = change_cause(svc) {
        metadata.insert("annotations".into(), serde_json::json!({ CHANGE_CAUSE: c }));
    }
    if metadata.is_empty() {
        serde_json::json!({ "revision": number })
    } else {
        serde_json::json!({ "revision": number, "metadata": metadata })
    }
}

/// The JSON patch (RFC 6902) that puts the template `target` (a revision's `data.spec`)
/// back on `svc`: each template field replaced whole (a merge patch would keep keys the
/// old template lacks), one the old template did not set removed; guarded by the
/// service's `resourceVersion`, so a change made meanwhile is never overwritten. `None`
/// when the service already runs that template.
pub fn rollback_patch(svc: &ComputeService, target: &Map<String, Value>) -> Option<Value> {
    let now = template(&svc.spec);
    if &now == target {
        return None;
    }
    let mut ops = vec![serde_json::json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": svc.resource_version(),
    })];
    for field in TEMPLATE_FIELDS {
        let path = format!("/spec/{field}");
        match (now.get(field), target.get(field)) {
            (Some(a), Some(b)) if a == b => {}
            (_, Some(b)) => ops.push(serde_json::json!({"op": "add", "path": path, "value": b})),
            (Some(_), None) => ops.push(serde_json::json!({"op": "remove", "path": path})),
            (None, None) => {}
        }
    }
    Some(Value::Array(ops))
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
