//! What the hub withdrew, removed from the member: tenant namespaces no Assignment names
//! any more, and the pods (with their checkpoint credentials) of attempts none names.

use std::collections::BTreeSet;

use gpufed_api::Assignment;
use gpufed_operator::job::names;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};

/// Pure: what the hub no longer assigns — tenant namespaces without any Assignment, and
/// pods of attempts without one (an older attempt in a namespace still assigned).
pub fn withdrawn(
    assigned: &[(String, String, u32)],
    namespaces: &[String],
    pods: &[(String, String, String, String)],
) -> (Vec<String>, Vec<(String, String)>) {
    let wanted_ns: BTreeSet<&str> = assigned.iter().map(|(ns, _, _)| ns.as_str()).collect();
    let wanted: BTreeSet<(&str, String)> = assigned
        .iter()
        .map(|(_, uid, attempt)| (uid.as_str(), attempt.to_string()))
        .collect();
    let gone_ns: Vec<String> = namespaces
        .iter()
        .filter(|n| n.starts_with(names::TENANT_PREFIX) && !wanted_ns.contains(n.as_str()))
        .cloned()
        .collect();
    let gone_pods = pods
        .iter()
        .filter(|(ns, _, _, _)| wanted_ns.contains(ns.as_str()))
        .filter(|(_, _, uid, attempt)| !wanted.contains(&(uid.as_str(), attempt.clone())))
        .map(|(ns, name, _, _)| (ns.clone(), name.clone()))
        .collect();
    (gone_ns, gone_pods)
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
    let namespaces: Vec<String> = Api::<Namespace>::all(member.clone())
        .list(&managed)
        .await?
        .items
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
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
    let (gone_ns, gone_pods) = withdrawn(&assigned, &namespaces, &pods);
    for ns in gone_ns {
        tracing::info!(namespace = %ns, "assignment withdrawn: removing its tenant namespace");
        match Api::<Namespace>::all(member.clone())
            .delete(&ns, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut withdrawn_attempts = std::collections::BTreeMap::<String, u32>::new();
    for (ns, name) in gone_pods {
        tracing::info!(namespace = %ns, pod = %name, "attempt withdrawn: removing its pod");
        match Api::<Pod>::namespaced(member.clone(), &ns)
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        let attempt = pods
            .iter()
            .find(|p| p.0 == ns && p.1 == name)
            .and_then(|p| p.3.parse::<u32>().ok());
        if let Some(attempt) = attempt {
            let latest = withdrawn_attempts.entry(ns).or_insert(attempt);
            *latest = (*latest).max(attempt);
        }
    }
    // Its checkpoint credentials go with a withdrawn attempt (a later attempt's stay).
    // Not fatal to the round: an older provider chart may not let the agent read it.
    for (ns, attempt) in withdrawn_attempts {
        if let Err(e) = gpufed_operator::job::credentials::remove_copy(member, &ns, attempt).await {
            tracing::warn!(namespace = %ns, attempt, error = %e, "checkpoint credentials of a withdrawn attempt not removed");
        }
    }
    Ok(())
}
