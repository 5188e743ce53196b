//! Pure: the pod fields gpufed itself sets on every worker. A template may leave them
//! unset or give gpufed's own value; any other value is refused, naming the field, so
//! that nothing the tenant wrote is silently replaced.

use gpufed_api::job::TemplateMetadata;
use k8s_openapi::api::core::v1::PodSpec;

use crate::job::names;

const AT: &str = "spec.template.spec";

/// Labels gpufed sets on every worker pod, from the job and the attempt: the operator
/// finds its pods and their job by them.
const OWNED_LABELS: [&str; 5] = [
    names::LABEL_JOB_UID,
    names::LABEL_JOB_NAMESPACE,
    names::LABEL_JOB_NAME,
    names::LABEL_ATTEMPT,
    names::LABEL_RANK,
];

/// Why the template's metadata sets a label or annotation gpufed sets on every worker,
/// naming it; `Ok` when none (or `app.kubernetes.io/managed-by: gpufed`, gpufed's own).
pub fn check_metadata(meta: Option<&TemplateMetadata>) -> Result<(), String> {
    let Some(meta) = meta else { return Ok(()) };
    if let Some(key) = meta.labels.keys().find(|k| OWNED_LABELS.contains(&k.as_str())) {
        return Err(format!(
            "spec.template.metadata.labels.{key}: must be unset: gpufed sets it on every worker"
        ));
    }
    if meta
        .labels
        .get("app.kubernetes.io/managed-by")
        .is_some_and(|v| v != "gpufed")
    {
        return Err(
            "spec.template.metadata.labels.app.kubernetes.io/managed-by: must be gpufed or unset: \
                    gpufed manages the worker pods"
                .into(),
        );
    }
    if meta.annotations.contains_key(names::ANNOTATION_JOB_NAME) {
        return Err(format!(
            "spec.template.metadata.annotations.{}: must be unset: gpufed sets it on every worker",
            names::ANNOTATION_JOB_NAME
        ));
    }
    Ok(())
}

/// Why `t` sets a field the worker pods get from gpufed, naming it; `Ok` when none.
pub fn check(t: &PodSpec) -> Result<(), String> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    if set(&t.node_name) {
        // A bound pod skips the member's scheduler: it would land where the tenant says,
        // not where placement chose and metering looks.
        return Err(format!("{AT}.nodeName: not supported: gpufed chooses the node"));
    }
    if t.restart_policy.as_deref().is_some_and(|p| p != "Never") {
        return Err(format!(
            "{AT}.restartPolicy: must be Never or unset: a worker that fails ends its attempt, \
             which spec.failurePolicy retries elsewhere"
        ));
    }
    for (field, value) in [("hostname", &t.hostname), ("subdomain", &t.subdomain)] {
        if set(value) {
            return Err(format!(
                "{AT}.{field}: must be unset: gpufed names each worker for the gang's rendezvous \
                 (GPUFED_MASTER_ADDR)"
            ));
        }
    }
    if t.automount_service_account_token == Some(true) {
        return Err(format!(
            "{AT}.automountServiceAccountToken: must be false or unset: a worker gets no \
             credentials for the provider's cluster"
        ));
    }
    for (field, value) in [
        ("serviceAccountName", &t.service_account_name),
        ("serviceAccount", &t.service_account),
    ] {
        if set(value) && value.as_deref() != Some("default") {
            return Err(format!(
                "{AT}.{field}: must be default or unset: the job's namespace at its provider has \
                 no other service account"
            ));
        }
    }
    priority(t).map_err(|field| {
        format!(
            "{AT}.{field}: must be unset: a worker gets the member cluster's default priority, \
             so that it cannot preempt the provider's own pods or other tenants' workers; \
             gpufed orders jobs by spec.priority (spec.placement.preemptLowerPriority)"
        )
    })
}

/// The first scheduling-priority field `t` sets, if any: `priorityClassName`, `priority`
/// or `preemptionPolicy`. kube-scheduler preempts lower-priority pods for a pod of
/// higher priority on any node, so a tenant naming `system-node-critical` (allowed
/// outside `kube-system` unless the member limits it by a ResourceQuota) or a high class
/// the provider defined for its own work could evict the provider's pods and other
/// tenants' GPU workers. (The pull agent refuses the same fields, whatever the hub sent.)
fn priority(t: &PodSpec) -> Result<(), &'static str> {
    if t.priority_class_name.as_deref().is_some_and(|v| !v.is_empty()) {
        return Err("priorityClassName");
    }
    // Any value, 0 too: the Priority admission plugin takes it only when it matches the
    // class it resolves, and a worker names none.
    if t.priority.is_some() {
        return Err("priority");
    }
    if t.preemption_policy.is_some() {
        return Err("preemptionPolicy");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(extra: serde_json::Value) -> PodSpec {
        let mut spec = json!({"containers": [{"name": "main", "image": "x"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(spec).expect("pod spec")
    }

    #[test]
    fn gpufeds_own_values_or_none_pass() {
        for extra in [
            json!({}),
            json!({"restartPolicy": "Never", "automountServiceAccountToken": false,
                   "serviceAccountName": "default", "hostname": "", "nodeName": ""}),
        ] {
            assert_eq!(check(&pod(extra.clone())), Ok(()), "{extra}");
        }
    }

    #[test]
    fn labels_and_annotations_gpufed_sets_are_refused_naming_them() {
        let meta =
            |m: serde_json::Value| -> TemplateMetadata { serde_json::from_value(m).expect("metadata") };
        assert_eq!(check_metadata(None), Ok(()));
        let fine = meta(
            json!({"labels": {"app": "trainer", "app.kubernetes.io/managed-by": "gpufed"},
                               "annotations": {"gpufed.io/sim-run-seconds": "5"}}),
        );
        assert_eq!(check_metadata(Some(&fine)), Ok(()));
        for (m, field) in [
            (
                json!({"labels": {"gpufed.io/rank": "0"}}),
                "labels.gpufed.io/rank",
            ),
            (
                json!({"labels": {"gpufed.io/job-uid": "x"}}),
                "labels.gpufed.io/job-uid",
            ),
            (
                json!({"labels": {"app.kubernetes.io/managed-by": "Helm"}}),
                "labels.app.kubernetes.io/managed-by",
            ),
            (
                json!({"annotations": {"gpufed.io/job-name": "x"}}),
                "annotations.gpufed.io/job-name",
            ),
        ] {
            let err = check_metadata(Some(&meta(m.clone()))).expect_err("refused");
            assert!(
                err.starts_with(&format!("spec.template.metadata.{field}: ")),
                "{m}: {err}"
            );
        }
    }

    #[test]
    fn another_value_is_refused_naming_the_field() {
        for (extra, field) in [
            (json!({"nodeName": "n1"}), "nodeName"),
            (json!({"restartPolicy": "OnFailure"}), "restartPolicy"),
            (json!({"restartPolicy": "Always"}), "restartPolicy"),
            (json!({"hostname": "trainer"}), "hostname"),
            (json!({"subdomain": "gang"}), "subdomain"),
            (
                json!({"automountServiceAccountToken": true}),
                "automountServiceAccountToken",
            ),
            (json!({"serviceAccountName": "builder"}), "serviceAccountName"),
            (json!({"serviceAccount": "builder"}), "serviceAccount"),
            (
                json!({"priorityClassName": "system-node-critical"}),
                "priorityClassName",
            ),
            (json!({"priority": 2_000_001_000}), "priority"),
            (json!({"priority": 0}), "priority"),
            (
                json!({"preemptionPolicy": "PreemptLowerPriority"}),
                "preemptionPolicy",
            ),
            (json!({"preemptionPolicy": "Never"}), "preemptionPolicy"),
        ] {
            let err = check(&pod(extra.clone())).expect_err("refused");
            assert!(
                err.starts_with(&format!("spec.template.spec.{field}: ")),
                "{extra}: {err}"
            );
        }
    }

    /// A job's and a ComputeService's templates both reach the workers through
    /// [`crate::job::build::template_error`]: each refuses a priority, naming the field
    /// (the job's and the service's `InvalidTemplate` / `Stalled` message).
    #[test]
    fn a_job_or_service_template_choosing_its_pods_priority_is_refused() {
        for (field, value) in [
            ("priorityClassName", json!("system-node-critical")),
            ("priority", json!(1_000_000)),
            ("preemptionPolicy", json!("PreemptLowerPriority")),
        ] {
            let template = json!({"spec": {"containers": [{"name": "main", "image": "x"}], field: value}});
            let job: gpufed_api::ComputeJob = serde_json::from_value(json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": "train", "namespace": "team", "uid": "u-1"},
                "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                         "template": template.clone()}
            }))
            .expect("job");
            let err = crate::job::build::template_error(&job.spec).expect("refused");
            assert!(err.starts_with(&format!("{AT}.{field}: must be unset")), "{err}");

            let svc: gpufed_api::ComputeService = serde_json::from_value(json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
                "metadata": {"name": "llm", "namespace": "team", "uid": "s1", "generation": 1},
                "spec": {"replicas": 1, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                         "port": {"port": 8000}, "template": template}
            }))
            .expect("service");
            let spec = crate::service::build::replica_spec(&svc);
            let (_, msg) = crate::service::validate::check(&svc, &spec, None)
                .blocking
                .expect("refused");
            assert!(msg.starts_with(&format!("{AT}.{field}: must be unset")), "{msg}");
        }
    }
}
