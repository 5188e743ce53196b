//! Each job's `status.billing`: the journal's numbers for the job, written by server-side
//! apply of that one field under its own field manager, fenced by the job's
//! resourceVersion like every other status write.
//!
//! Why not [`crate::FIELD_MANAGER`]: server-side apply takes the fields a manager
//! applied as everything it owns, and drops those it no longer applies. The job
//! controller applies the whole status as `gpufed-operator`; an apply of `billing`
//! alone under that same name would drop its conditions, phase and placement, and the
//! job controller's next apply would in turn drop `billing` whenever its status was
//! read without it. Under [`BILLING_FIELD_MANAGER`] each writer owns what it writes, and
//! `managedFields` tell who wrote `billing`, as a merge patch (no manager) did not.

use std::sync::Arc;

use gpufed_api::ComputeJob;
use gpufed_api::job_status::Billing;
use gpufed_settlement::JobBilling;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, warn};

use super::meter::from_base_units;
use crate::context::Context;

/// Field manager of `status.billing` (see the module's documentation for why it is not
/// [`crate::FIELD_MANAGER`]).
pub const BILLING_FIELD_MANAGER: &str = "gpufed-operator-billing";

/// A job's billing status from the journal's numbers for it. `settledAmount` stops at
/// `u64::MAX` base units ([`gpufed_settlement::position::AMOUNT_CAP`]: the journal keeps
/// its totals as u64): a job that settled more shows the cap, and [`update_billing`] logs
/// a warning when it writes one.
pub fn billing(b: &JobBilling, decimals: u8) -> Billing {
    Billing {
        records: b.records,
        settled_records: b.settled.records,
        metered_gpu_seconds: b.gpu_seconds,
        settled_amount: from_base_units(b.settled.amount, decimals),
        signatures: b.settled.signatures.clone(),
    }
}

/// The apply body that sets `job`'s `status.billing` and nothing else, with the job's
/// resourceVersion as precondition: a write computed from a job that has changed since
/// fails (409) and is retried from fresh state, as the job controller's writes are.
pub fn billing_patch(job: &ComputeJob, billing: &Billing) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": ComputeJob::api_version(&()),
        "kind": ComputeJob::kind(&()),
        "metadata": {"resourceVersion": job.resource_version()},
        "status": {"billing": billing},
    })
}

/// Writes `status.billing` of jobs whose journaled or settled numbers moved.
pub(super) async fn update_billing(
    ctx: &Context,
    journal: &gpufed_settlement::Journal,
    jobs: &[Arc<ComputeJob>],
    decimals: u8,
) {
    for job in jobs {
        let Some(uid) = job.metadata.uid.as_deref() else {
            continue;
        };
        let b = journal.billing(uid);
        if b.records == 0 {
            continue;
        }
        let want = billing(&b, decimals);
        // The freshest copy: `jobs` was read before the settler's round (chain calls), and
        // a running job's status moves every few seconds, so its resourceVersion would
        // often be stale by now.
        let job = ctx
            .jobs
            .get(&ObjectRef::from_obj(job.as_ref()))
            .unwrap_or_else(|| job.clone());
        if job.status.as_ref().and_then(|s| s.billing.as_ref()) == Some(&want) {
            continue;
        }
        if b.capped() {
            warn!(job = %job.name_any(), settled_amount = %want.settled_amount,
                  "the job's billed amount reached the journal's u64 cap: status.billing.settledAmount shows at least it, not more (the transfers themselves are exact)");
        }
        let api: Api<ComputeJob> = Api::namespaced(ctx.hub.clone(), &job.namespace().unwrap_or_default());
        let result = api
            .patch_status(
                &job.name_any(),
                &PatchParams::apply(BILLING_FIELD_MANAGER).force(),
                &Patch::Apply(&billing_patch(&job, &want)),
            )
            .await;
        match result {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!(job = %job.name_any(), "job changed while its billing was written; next round retries")
            }
            Err(e) => {
                warn!(job = %job.name_any(), error = %e, "billing status not written; next round retries")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ComputeJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": "train", "namespace": "team", "uid": "u1", "resourceVersion": "42"},
            "spec": {"workers": 1, "gpusPerWorker": 1, "maxPricePerGpuHour": "2",
                     "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}},
            "status": {"phase": "Running", "conditions": [], "billing": {"records": 1, "settledRecords": 0,
                       "settledAmount": "0"}}
        }))
        .expect("job")
    }

    #[test]
    fn the_billing_apply_sets_billing_alone_fenced_by_the_resource_version() {
        let mut b = JobBilling {
            records: 3,
            gpu_seconds: 120,
            ..Default::default()
        };
        b.settled.records = 2;
        b.settled.amount = 1_500_000;
        let want = billing(&b, 6);
        assert_eq!(want.settled_amount, "1.5");
        let patch = billing_patch(&job(), &want);
        assert_eq!(patch["apiVersion"], "gpufed.io/v1alpha1");
        assert_eq!(patch["kind"], "ComputeJob");
        assert_eq!(patch["metadata"], serde_json::json!({"resourceVersion": "42"}));
        let status = patch["status"].as_object().expect("status");
        assert_eq!(
            status.keys().collect::<Vec<_>>(),
            ["billing"],
            "no other status field is claimed"
        );
        assert_eq!(status["billing"]["records"], 3);
        assert_eq!(status["billing"]["settledRecords"], 2);
        assert_eq!(status["billing"]["meteredGpuSeconds"], 120);
        assert_ne!(BILLING_FIELD_MANAGER, crate::FIELD_MANAGER);
    }
}
