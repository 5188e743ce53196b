//! I/O of the revision history ([`super::history`] is the pure part).

use gpufed_api::{ComputeJob, ComputeService};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::{build, history};
use crate::context::Context;
use crate::error::{Error, Result};

/// The revision history: observe (the revisions cache) → plan (pure, [`history::plan`])
/// → write; the current template's revision number.
pub(super) async fn keep(
    ctx: &Context,
    svc: &ComputeService,
    existing: &[&ControllerRevision],
    hash: &str,
    replicas: &[ComputeJob],
) -> Result<i64> {
    let in_use = replicas
        .iter()
        .filter_map(|j| j.labels().get(build::LABEL_REVISION).cloned())
        .collect();
    let plan = history::plan(svc, existing, hash, &in_use);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.hub.clone(), &svc.namespace().unwrap_or_default());
    if let Some(rev) = &plan.create {
        match api.create(&PostParams::default(), rev).await {
            Ok(_) => tracing::info!(revision = plan.number, hash, "revision recorded"),
            // Ours, not yet in the cache (the next round sees it); or one of a deleted
            // service of the same name, which the garbage collector removes first.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::hub("ControllerRevision", e)),
        }
    }
    if let Some(name) = &plan.renumber {
        let patch = history::renumber_patch(svc, plan.number);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::hub("ControllerRevision", e))?;
        tracing::info!(
            revision = plan.number,
            hash,
            "an earlier template is current again"
        );
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
