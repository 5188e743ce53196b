//! A tenant's namespace name stays taken while it may still be billed.
//!
//! A tenant is its namespace's *name* (records and escrows are keyed by it). A namespace
//! deleted with usage still unsettled, then created again under the name by another team
//! with its own escrow annotation, would pay the old team's usage. So while a namespace
//! holds ComputeJobs, or the journal holds usage of it that is not settled (pending, or in
//! a batch in flight), it carries the finalizer [`FINALIZER`]: its deletion completes only
//! once its usage settled, and nobody can create it again before. The finalizer is added
//! while the namespace still has jobs — the API server refuses new finalizers on an
//! object being deleted, and a job's final usage is metered only after its deletion
//! started — and removed when neither is left.
//!
//! observe (the namespace cache, the job cache, the journal) → [`plan`] (pure) → apply
//! (merge patch of `metadata.finalizers`, fenced by the namespace's resourceVersion; a
//! conflict is retried next round).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

/// Finalizer on a tenant namespace while it may still be billed.
pub const FINALIZER: &str = "gpufed.io/unsettled-usage";

/// One namespace's finalizers to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Namespace name.
    pub namespace: String,
    /// resourceVersion the change was planned from (the write's precondition).
    pub resource_version: String,
    /// The namespace's whole new finalizer list.
    pub finalizers: Vec<String>,
    /// Whether this adds the guard (else it releases it).
    pub guard: bool,
}

/// The changes that make exactly the namespaces in `billable` carry [`FINALIZER`],
/// where the API server allows it: a namespace already being deleted cannot gain one.
pub fn plan<'a>(
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    billable: &BTreeSet<String>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for ns in namespaces {
        let name = ns.name_any();
        let finalizers = ns.finalizers();
        let has = finalizers.iter().any(|f| f == FINALIZER);
        let wanted = billable.contains(&name);
        let deleting = ns.metadata.deletion_timestamp.is_some();
        let Some(rv) = ns.resource_version() else {
            continue;
        };
        if wanted && !has && !deleting {
            let mut new = finalizers.to_vec();
            new.push(FINALIZER.to_owned());
            out.push(Change {
                namespace: name,
                resource_version: rv,
                finalizers: new,
                guard: true,
            });
        } else if !wanted && has {
            out.push(Change {
                namespace: name,
                resource_version: rv,
                finalizers: finalizers.iter().filter(|f| *f != FINALIZER).cloned().collect(),
                guard: false,
            });
        }
    }
    out
}

/// Writes `changes`; returns how many were written. A namespace that changed since it
/// was read (409) or is gone (404) is left to the next round, which reads it again.
pub async fn apply(hub: &Client, changes: &[Change]) -> usize {
    let api: Api<Namespace> = Api::all(hub.clone());
    let mut written = 0;
    for c in changes {
        // A merge patch replaces the list whole; the resourceVersion makes it apply only
        // to the list it was computed from, so no one else's finalizer is lost.
        let patch = json!({
            "metadata": {
                "resourceVersion": c.resource_version,
                "finalizers": c.finalizers,
            }
        });
        match api
            .patch(&c.namespace, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                written += 1;
                if c.guard {
                    info!(namespace = %c.namespace, "tenant namespace guarded while it may be billed");
                } else {
                    info!(namespace = %c.namespace, "tenant namespace released: nothing of it left to settle");
                }
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => {
                warn!(namespace = %c.namespace, error = %e, "cannot write the tenant namespace's finalizer")
            }
        }
    }
    written
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
