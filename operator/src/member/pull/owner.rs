//! Assignments by their job. Two jobs' names can give the same tenant namespace (its name
//! is cut and carries a hash of 32 bits, [`crate::job::names`]), and so the same
//! Assignment names (`<tenant-ns>-a<attempt>`): the hub never overwrites, nor withdraws,
//! an Assignment whose `spec.jobUid` names another job. Such a dispatch ends as push mode's
//! into a namespace another job holds ([`crate::job::dispatch::taken_by`]): forbidden.

use gpufed_api::assignment::Assignment;
use gpufed_api::pull::{self, LABEL_TENANT_NAMESPACE};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Preconditions};

use super::PullLink;
use crate::error::{Error, Result};
use crate::job::names;

/// Pure: the job (`spec.jobUid`) whose Assignment `existing` is, when that is not `uid`.
pub fn taken_by<'a>(existing: Option<&'a Assignment>, uid: &str) -> Option<&'a str> {
    let owner = existing?.spec.job_uid.as_str();
    (owner != uid).then_some(owner)
}

/// How [`taken_error`]'s message begins.
pub const TAKEN: &str = "nothing assigned: Assignment";

/// The answer to a dispatch whose Assignment name another job's Assignment holds
/// ([`taken_by`]): [`Error::Forbidden`], so the attempt ends after the forbidden grace
/// period (`DispatchForbidden`) and placement keeps the job off this provider for a while,
/// as push mode does for a tenant namespace another job holds.
pub fn taken_error(provider: &str, name: &str, tenant: &str, owner: &str) -> Error {
    Error::Forbidden {
        provider: provider.to_owned(),
        message: format!(
            "{TAKEN} {name} exists and belongs to another job ({}={owner}; two jobs' names \
             give the same tenant namespace {tenant})",
            names::LABEL_JOB_UID
        ),
    }
}

/// Pure: what deletes exactly `a` and nothing made anew under its name since it was read.
fn only(a: &Assignment) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: a.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Pure: the label selector of job `uid`'s Assignments of tenant namespace `namespace`
/// (the hub labels every Assignment with both). Withdrawn by it, as the hub's role lets
/// the operator delete Assignments by collection but not list them (they carry
/// checkpoint-credential copies).
pub fn own_selector(namespace: &str, uid: &str) -> String {
    format!(
        "{LABEL_TENANT_NAMESPACE}={namespace},{}={uid}",
        names::LABEL_JOB_UID
    )
}

impl PullLink {
    /// Refuses the Assignment `name` of job `uid` if another job's holds that name
    /// ([`taken_by`]): nothing is written then.
    pub(super) async fn refuse_taken(&self, name: &str, tenant: &str, uid: &str) -> Result<()> {
        let existing = self
            .assignments()
            .get_opt(name)
            .await
            .map_err(|e| self.hub_err("Assignment", e))?;
        match taken_by(existing.as_ref(), uid) {
            Some(owner) => Err(taken_error(&self.provider, name, tenant, owner)),
            None => Ok(()),
        }
    }

    /// Deletes `a` as it was read; gone meanwhile, or another one by that name now (the
    /// precondition failed): nothing to do.
    async fn delete_only(&self, a: &Assignment) -> Result<()> {
        match self.assignments().delete(&a.name_any(), &only(a)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(self.hub_err("Assignment", e)),
        }
    }

    /// Withdraws job `uid`'s Assignment of `attempt`; the agent removes its pods. Another
    /// job's Assignment of that name ([`taken_by`]) stays. Idempotent.
    pub async fn remove_own_attempt(&self, namespace: &str, uid: &str, attempt: u32) -> Result<()> {
        let name = pull::assignment_name(namespace, attempt);
        let found = self
            .assignments()
            .get_opt(&name)
            .await
            .map_err(|e| self.hub_err("Assignment", e))?;
        match found {
            Some(a) if taken_by(Some(&a), uid).is_none() => self.delete_only(&a).await,
            Some(a) => {
                tracing::warn!(assignment = %name, owner = %a.spec.job_uid, "Assignment belongs to another job: left alone");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Withdraws every Assignment of job `uid` in the tenant namespace ([`own_selector`]);
    /// the agent removes it once no Assignment of its job names it. Another job's
    /// Assignments of that tenant namespace stay. Idempotent.
    pub async fn remove_own_namespace(&self, namespace: &str, uid: &str) -> Result<()> {
        let lp = ListParams::default().labels(&own_selector(namespace, uid));
        self.assignments()
            .delete_collection(&DeleteParams::default(), &lp)
            .await
            .map_err(|e| self.hub_err("Assignment", e))?;
        Ok(())
    }

    /// Withdraws the Assignment of `attempt`, whichever job's it is (tools; the job
    /// controller withdraws only its own: [`Self::remove_own_attempt`]).
    pub async fn remove_attempt(&self, namespace: &str, attempt: u32) -> Result<()> {
        let name = pull::assignment_name(namespace, attempt);
        match self.assignments().delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.hub_err("Assignment", e)),
        }
    }

    /// Withdraws every Assignment of the tenant namespace, whichever jobs' they are (tools;
    /// the job controller withdraws only its own: [`Self::remove_own_namespace`]).
    pub async fn remove_namespace(&self, namespace: &str) -> Result<()> {
        let lp = ListParams::default().labels(&format!("{LABEL_TENANT_NAMESPACE}={namespace}"));
        self.assignments()
            .delete_collection(&DeleteParams::default(), &lp)
            .await
            .map_err(|e| self.hub_err("Assignment", e))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "owner_tests.rs"]
mod tests;
