//! I/O of the revision history ([`super::history`] is the pure part).

use gpufed_api::{ComputeJob, ComputeService};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::{build, history};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::job::events;

/// The revision history: observe (the revisions cache) → plan (pure, [`history::plan`])
/// → write; the current template's revision number. A new revision and an earlier
/// template current again are told as Events on the service.
pub(super) async fn keep(
    ctx: &Context,
    svc: &ComputeService,
    existing: &[&ControllerRevision],
    hash: &str,
    replicas: &[ComputeJob],
) -> Result<i64> {
    let mut told = Vec::new();
    let result = write(ctx, svc, existing, hash, replicas, &mut told).await;
    ctx.reporter.publish(kube::Resource::object_ref(svc, &()), told);
    result
}

async fn write(
    ctx: &Context,
    svc: &ComputeService,
    existing: &[&ControllerRevision],
    hash: &str,
    replicas: &[ComputeJob],
    told: &mut Vec<events::Note>,
) -> Result<i64> {
    let in_use = replicas
        .iter()
        .filter_map(|j| j.labels().get(build::LABEL_REVISION).cloned())
        .collect();
    let plan = history::plan(svc, existing, hash, &in_use);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.hub.clone(), &svc.namespace().unwrap_or_default());
    if let Some(rev) = &plan.create {
        match api.create(&PostParams::default(), rev).await {
            Ok(_) => {
                tracing::info!(revision = plan.number, hash, "revision recorded");
                let msg = format!("template {hash} recorded as revision {}", plan.number);
                told.push(events::note(false, "RevisionRecorded", "Record", msg));
            }
            // Ours, not yet in the cache (the next round sees it); or one of a deleted
            // service of the same name, which the garbage collector removes first.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::hub("ControllerRevision", e)),
        }
    }
    if let Some(name) = &plan.renumber {
        let read = existing.iter().find(|r| r.name_any() == *name);
        let patch = history::renumber_patch(
            svc,
            plan.number,
            read.and_then(|r| r.resource_version()).as_deref(),
        );
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Renumbered already (by the round before, which the cache has not seen yet):
            // the next round sees it, and nothing is announced twice.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(plan.number),
            Err(e) => return Err(Error::hub("ControllerRevision", e)),
        }
        tracing::info!(
            revision = plan.number,
            hash,
            "an earlier template is current again"
        );
        let was = read.map_or(0, |r| r.revision);
        let msg = format!(
            "rolled back: template {hash} of revision {was} is current again, as revision {}",
            plan.number
        );
        told.push(events::note(false, "RolledBack", "Rollback", msg));
    }
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(revision = %name, "old revision deleted (revisionHistoryLimit)"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::hub("ControllerRevision", e)),
        }
    }
    Ok(plan.number)
}
