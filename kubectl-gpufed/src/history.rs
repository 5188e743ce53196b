//! Pure: `rollout history` and `rollout undo` of a ComputeService, from the
//! ControllerRevisions the operator keeps (`gpufed_operator::service::history`), as
//! `kubectl rollout history|undo` for a Deployment.
//!
//! The current template is the one the service's spec asks for now (its hash, computed
//! as the operator computes it), whether or not the operator has recorded it yet; "the
//! previous revision" is the highest-numbered one of another template.

use gpufed_api::ComputeService;
use gpufed_operator::service::{build, history};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::output::{Table, age_of};

/// One revision as `rollout history` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its number (the order in which templates became current).
    pub revision: i64,
    /// The template hash (the replicas' `gpufed.io/service-revision` label).
    pub hash: String,
    /// The ControllerRevision.
    pub name: String,
    /// When it was recorded (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Its `kubernetes.io/change-cause` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_cause: Option<String>,
    /// The service's spec asks for this template now.
    pub current: bool,
    /// The template fields it holds.
    pub template: Map<String, Value>,
}

/// The template hash `svc`'s spec asks for now.
pub fn current_hash(svc: &ComputeService) -> String {
    build::revision(&build::replica_spec(svc))
}

/// `svc`'s revisions among `revisions`, oldest first.
pub fn entries(svc: &ComputeService, revisions: &[ControllerRevision]) -> Vec<Entry> {
    let current = current_hash(svc);
    let mut out: Vec<Entry> = history::of(svc, revisions)
        .into_iter()
        .map(|r| {
            let hash = history::hash_of(r).unwrap_or_default().to_owned();
            Entry {
                revision: r.revision,
                current: hash == current,
                hash,
                name: r.name_any(),
                created: r.creation_timestamp().map(|t| t.0.to_string()),
                change_cause: r.annotations().get(history::CHANGE_CAUSE).cloned(),
                template: history::stored_template(r).cloned().unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by_key(|e| e.revision);
    out
}

/// The table of `rollout history`.
pub fn render(service: &str, entries: &[Entry], now: i64) -> String {
    if entries.is_empty() {
        return format!(
            "computeservice.gpufed.io/{service}: no revisions recorded yet (the operator records one when it first reconciles the service)\n"
        );
    }
    let mut t = Table::new(&["REVISION", "TEMPLATE", "AGE", "CHANGE-CAUSE"]);
    for e in entries {
        let marker = if e.current { " (current)" } else { "" };
        t.push(vec![
            format!("{}{marker}", e.revision),
            e.hash.clone(),
            age_of(e.created.as_deref(), now),
            e.change_cause.clone().unwrap_or_else(|| "<none>".into()),
        ]);
    }
    format!("computeservice.gpufed.io/{service}\n{}", t.render())
}

/// Why `rollout history --revision` or `rollout undo` cannot pick a revision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No revision recorded for the service.
    #[error("no rollout history found for computeservice {0}")]
    NoHistory(String),
    /// `--revision`/`--to-revision` names none.
    #[error("unable to find specified revision {0} in history")]
    NotFound(i64),
    /// Every recorded revision is the current template.
    #[error("no revision of computeservice {0} other than the current template to roll back to")]
    NoPrevious(String),
    /// The revision's data holds no template (written by something else).
    #[error("revision {0} holds no template (data.spec)")]
    Empty(i64),
}

/// Revision `number` among `entries`.
pub fn pick<'a>(service: &str, entries: &'a [Entry], number: i64) -> Result<&'a Entry, PickError> {
    if entries.is_empty() {
        return Err(PickError::NoHistory(service.to_owned()));
    }
    entries
        .iter()
        .find(|e| e.revision == number)
        .ok_or(PickError::NotFound(number))
}

/// What `rollout undo` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// Send this JSON patch: the service goes back to revision `to`.
    Patch {
        /// The revision rolled back to.
        to: i64,
        /// The RFC 6902 patch ([`history::rollback_patch`]).
        patch: Value,
    },
    /// The service already asks for revision `to`'s template.
    AlreadyCurrent {
        /// The revision.
        to: i64,
    },
}

/// `rollout undo [--to-revision N]` of `svc`: the previous revision by default (the
/// highest-numbered one of another template than the current).
pub fn undo(svc: &ComputeService, entries: &[Entry], to: Option<i64>) -> Result<Undo, PickError> {
    let service = svc.name_any();
    let target = match to {
        Some(n) => pick(&service, entries, n)?,
        None if entries.is_empty() => return Err(PickError::NoHistory(service)),
        None => entries
            .iter()
            .rev()
            .find(|e| !e.current)
            .ok_or(PickError::NoPrevious(service))?,
    };
    if target.template.is_empty() {
        return Err(PickError::Empty(target.revision));
    }
    Ok(match history::rollback_patch(svc, &target.template) {
        Some(patch) => Undo::Patch {
            to: target.revision,
            patch,
        },
        None => Undo::AlreadyCurrent { to: target.revision },
    })
}

/// Whether `rollout undo`'s patch, refused with HTTP `code` and `message`, failed because
/// the service changed after it was read (`before`; `now`: read again), so planning it
/// again may succeed. A failed `test` of the resourceVersion is a 422 whose message is the
/// generic "the server rejected our request due to an error in our request" (the failed
/// path is only in the answer's `details.causes`); a template the schema refuses is a 422
/// too, but its message says so: `<Kind>.<group> "<name>" is invalid: <field>: …`. A
/// conflict is therefore a 409, or a 422 that is no such refusal while the service's
/// `resourceVersion` moved meanwhile (a status write moves it too: planning again then
/// costs one more read, and the tries are bounded), or a 422 naming the failed test, or one
/// while the spec changed (a new `metadata.generation`). Anything else is the answer to
/// report.
pub fn undo_conflict(
    code: Option<u16>,
    message: &str,
    before: &ComputeService,
    now: &ComputeService,
) -> bool {
    match code {
        Some(409) => true,
        Some(422) => {
            let moved = before.metadata.resource_version != now.metadata.resource_version;
            let refused = message.contains(" is invalid: ");
            before.metadata.generation != now.metadata.generation
                || (message.contains("test") && message.contains("/metadata/resourceVersion"))
                || (moved && !refused)
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
