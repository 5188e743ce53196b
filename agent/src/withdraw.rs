//! What the hub withdrew, removed from the member: tenant namespaces no Assignment of
//! their job names any more, and the pods (with their checkpoint credentials) of attempts
//! none names. Two jobs' names can give the same tenant namespace, so what goes is judged
//! by its job (`gpufed.io/job-uid`), never by a name alone: nothing of a job still
//! assigned is deleted because another job's Assignment of that namespace was withdrawn.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_api::Assignment;
use gpufed_operator::job::build::credentials::{MEMBER_SECRET, attempt_of};
use gpufed_operator::job::names;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client, ResourceExt};

/// What the hub no longer assigns ([`withdrawn`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Withdrawn {
    /// Tenant namespaces to delete.
    pub namespaces: Vec<String>,
    /// Pods (namespace, name) to delete.
    pub pods: Vec<(String, String)>,
    /// (namespace, job uid) → the latest attempt of that job whose pods go: its
    /// checkpoint credentials go with them ([`credentials_withdrawn`]).
    pub credentials: BTreeMap<(String, String), u32>,
}

/// Pure: what the hub no longer assigns, from the Assignments' (tenant namespace, job
/// uid, attempt), the member's tenant namespaces (name, job uid label) and its pods
/// (namespace, name, job uid, attempt):
/// - a tenant namespace goes when no Assignment of its own job names it and it holds no
///   pod of an attempt still assigned (one another job's Assignment names is not that
///   job's: the member's dispatch refuses to fill it, [`gpufed_operator::job::dispatch::taken_by`]);
/// - in a namespace that stays and is assigned, a pod goes when its job's attempt is no
///   longer assigned (an older attempt), with its credentials.
pub fn withdrawn(
    assigned: &[(String, String, u32)],
    namespaces: &[(String, String)],
    pods: &[(String, String, String, String)],
) -> Withdrawn {
    let wanted_ns: BTreeSet<&str> = assigned.iter().map(|(ns, _, _)| ns.as_str()).collect();
    let owned: BTreeSet<(&str, &str)> = assigned
        .iter()
        .map(|(ns, uid, _)| (ns.as_str(), uid.as_str()))
        .collect();
    let wanted: BTreeSet<(&str, String)> = assigned
        .iter()
        .map(|(_, uid, attempt)| (uid.as_str(), attempt.to_string()))
        .collect();
    let live = |(_, _, uid, attempt): &(String, String, String, String)| {
        wanted.contains(&(uid.as_str(), attempt.clone()))
    };
    let holds_live: BTreeSet<&str> = pods.iter().filter(|p| live(p)).map(|p| p.0.as_str()).collect();
    let gone_ns: Vec<String> = namespaces
        .iter()
        .filter(|(n, _)| n.starts_with(names::TENANT_PREFIX))
        .filter(|(n, owner)| !owned.contains(&(n.as_str(), owner.as_str())))
        .filter(|(n, _)| !holds_live.contains(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    let mut out = Withdrawn::default();
    for p in pods {
        let (ns, name, uid, attempt) = p;
        if !wanted_ns.contains(ns.as_str()) || gone_ns.contains(ns) || live(p) {
            continue;
        }
        out.pods.push((ns.clone(), name.clone()));
        if let Ok(attempt) = attempt.parse::<u32>() {
            let latest = out
                .credentials
                .entry((ns.clone(), uid.clone()))
                .or_insert(attempt);
            *latest = (*latest).max(attempt);
        }
    }
    out.namespaces = gone_ns;
    out
}

/// Pure: whether `copy`, the checkpoint credentials in a tenant namespace, are those of an
/// attempt of job `uid` up to `attempt` (withdrawn): another job's, or a later attempt's,
/// stay.
pub fn credentials_withdrawn(copy: &Secret, uid: &str, attempt: u32) -> bool {
    let of_job = copy.labels().get(names::LABEL_JOB_UID).map(String::as_str) == Some(uid);
    of_job && attempt_of(copy).is_some_and(|a| a <= attempt)
}

/// Deletes exactly `object_uid` (none: whatever is there), gone or replaced: fine.
fn only(object_uid: Option<String>, resource_version: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: object_uid,
            resource_version,
        }),
        ..DeleteParams::default()
    }
}

fn gone_or_replaced(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        other => other,
    }
}

/// Removes job `uid`'s checkpoint credentials in `ns` if an attempt up to `attempt` wrote
/// them ([`credentials_withdrawn`]); deleted only as read.
async fn remove_credentials(member: &Client, ns: &str, uid: &str, attempt: u32) -> Result<(), kube::Error> {
    let api = Api::<Secret>::namespaced(member.clone(), ns);
    let Some(copy) = api.get_opt(MEMBER_SECRET).await? else {
        return Ok(());
    };
    if !credentials_withdrawn(&copy, uid, attempt) {
        return Ok(());
    }
    let dp = only(copy.uid(), copy.resource_version());
    gone_or_replaced(api.delete(MEMBER_SECRET, &dp).await.map(|_| ()))
}

/// Removes what the hub withdrew. Runs only after the hub's list succeeded this round.
pub(crate) async fn remove_withdrawn(member: &Client, list: &[Assignment]) -> anyhow::Result<()> {
    let assigned: Vec<(String, String, u32)> = list
        .iter()
        .map(|a| {
            (
                a.spec.tenant_namespace.clone(),
                a.spec.job_uid.clone(),
                a.spec.attempt,
            )
        })
        .collect();
    let managed = ListParams::default().labels(&format!(
        "app.kubernetes.io/managed-by=gpufed,{}",
        names::LABEL_JOB_UID
    ));
    let listed: Vec<Namespace> = Api::<Namespace>::all(member.clone())
        .list(&managed)
        .await?
        .items
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .collect();
    let namespaces: Vec<(String, String)> = listed
        .iter()
        .map(|n| {
            let owner = n.labels().get(names::LABEL_JOB_UID).cloned();
            (n.name_any(), owner.unwrap_or_default())
        })
        .collect();
    let pods: Vec<(String, String, String, String)> = Api::<Pod>::all(member.clone())
        .list(&managed)
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let l = p.labels();
            (
                p.namespace().unwrap_or_default(),
                p.name_any(),
                l.get(names::LABEL_JOB_UID).cloned().unwrap_or_default(),
                l.get(names::LABEL_ATTEMPT).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let gone = withdrawn(&assigned, &namespaces, &pods);
    for ns in gone.namespaces {
        tracing::info!(namespace = %ns, "assignment withdrawn: removing its tenant namespace");
        // The namespace as listed, not one made anew by that name since.
        let object_uid = listed.iter().find(|n| n.name_any() == ns).and_then(|n| n.uid());
        let deleted = Api::<Namespace>::all(member.clone())
            .delete(&ns, &only(object_uid, None))
            .await;
        gone_or_replaced(deleted.map(|_| ()))?;
    }
    for (ns, name) in gone.pods {
        tracing::info!(namespace = %ns, pod = %name, "attempt withdrawn: removing its pod");
        let deleted = Api::<Pod>::namespaced(member.clone(), &ns)
            .delete(&name, &DeleteParams::default())
            .await;
        match deleted {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Its checkpoint credentials go with a withdrawn attempt (a later attempt's, and
    // another job's, stay). Not fatal to the round: an older provider chart may not let
    // the agent read it.
    for ((ns, uid), attempt) in gone.credentials {
        if let Err(e) = remove_credentials(member, &ns, &uid, attempt).await {
            tracing::warn!(namespace = %ns, attempt, error = %e, "checkpoint credentials of a withdrawn attempt not removed");
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "withdraw_tests.rs"]
mod tests;
