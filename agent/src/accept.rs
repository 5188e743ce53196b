//! Pure: what the agent accepts from the hub. The hub is trusted to choose the work, not
//! to reach beyond it: an Assignment may only create its own tenant namespace, the
//! namespaced objects push mode creates there (policy, quota, Services, the attempt's
//! checkpoint credentials), and worker pods that carry the assignment's job and attempt,
//! pass the `restricted` pod-security profile and choose no scheduling priority.

use gpufed_api::Assignment;
use gpufed_operator::job::build::MemberObjects;
use gpufed_operator::job::build::credentials::MEMBER_SECRET;
use gpufed_operator::job::names;
use gpufed_operator::job::serving::SERVING_SERVICE;
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The prefix of the Pod Security admission's namespace labels.
const POD_SECURITY: &str = "pod-security.kubernetes.io/";

fn typed<K: DeserializeOwned>(v: &Value, api_version: &str, kind: &str, what: &str) -> Result<K, String> {
    if v["kind"] != kind || v["apiVersion"] != api_version {
        return Err(format!(
            "{what}: expected {api_version} {kind}, got {} {}",
            v["apiVersion"], v["kind"]
        ));
    }
    serde_json::from_value(v.clone()).map_err(|e| format!("{what}: {e}"))
}

fn in_namespace(v: &Value, tenant: &str, what: &str) -> Result<(), String> {
    match v["metadata"]["namespace"].as_str() {
        Some(ns) if ns == tenant => Ok(()),
        None => Ok(()),
        Some(other) => Err(format!(
            "{what}: namespace {other} is not the tenant namespace {tenant}"
        )),
    }
}

/// A Service of the assignment, if it only reaches the assignment's own pods: no
/// `externalIPs` (they can capture other tenants' traffic), no chosen node ports, no
/// `ExternalName`, a selector on this job's pods. The gang Service must be headless;
/// only the serving one (named [`SERVING_SERVICE`]) may be exposed outside the cluster.
fn checked_service(svc: Service, job_uid: &str, what: &str) -> Result<Service, String> {
    let spec = svc.spec.clone().unwrap_or_default();
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let serving = svc.metadata.name.as_deref() == Some(SERVING_SERVICE);
    let allowed: &[&str] = if serving {
        &["ClusterIP", "NodePort", "LoadBalancer"]
    } else {
        &["ClusterIP"]
    };
    if !allowed.contains(&type_) {
        return Err(format!("{what}.spec.type: {type_} is not accepted"));
    }
    if !serving && spec.cluster_ip.as_deref() != Some("None") {
        return Err(format!(
            "{what}.spec.clusterIP: the gang Service must be headless (None)"
        ));
    }
    if spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
        return Err(format!("{what}.spec.externalIPs: not accepted"));
    }
    if spec.ports.iter().flatten().any(|p| p.node_port.is_some()) {
        return Err(format!(
            "{what}.spec.ports: node ports are allocated by this cluster, not chosen by the hub"
        ));
    }
    let selected = spec.selector.as_ref().and_then(|s| s.get(names::LABEL_JOB_UID));
    if selected.map(String::as_str) != Some(job_uid) {
        return Err(format!(
            "{what}.spec.selector: must select this job's pods ({}={job_uid})",
            names::LABEL_JOB_UID
        ));
    }
    Ok(svc)
}

/// The member objects of an Assignment, or why it is refused (naming the field).
pub fn accept(a: &Assignment) -> Result<MemberObjects, String> {
    let spec = &a.spec;
    let tenant = spec.tenant_namespace.as_str();
    // Only a namespace of gpufed's own: the agent labels, fills and, once withdrawn,
    // deletes it, so any other name would hand the hub the member's own namespaces.
    if !tenant.starts_with(names::TENANT_PREFIX) {
        return Err(format!(
            "spec.tenantNamespace: {tenant} is no tenant namespace (they begin with {})",
            names::TENANT_PREFIX
        ));
    }
    let mut namespace: Namespace = typed(&spec.namespace, "v1", "Namespace", "spec.namespace")?;
    if namespace.metadata.name.as_deref() != Some(tenant) {
        return Err(format!(
            "spec.namespace.metadata.name must be spec.tenantNamespace ({tenant})"
        ));
    }
    let managed = namespace
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get("app.kubernetes.io/managed-by").map(String::as_str) == Some("gpufed"));
    if !managed {
        return Err("spec.namespace: must be labeled app.kubernetes.io/managed-by=gpufed".into());
    }
    // The namespace's job is who it belongs to in this cluster: the dispatch fills, and
    // the withdrawal removes, only a namespace of the Assignment's own job.
    let owner = namespace.labels().get(names::LABEL_JOB_UID);
    if owner != Some(&spec.job_uid) {
        return Err(format!(
            "spec.namespace: must be labeled {}={} (spec.jobUid)",
            names::LABEL_JOB_UID,
            spec.job_uid
        ));
    }
    namespace.metadata.namespace = None;
    // Pod security is this cluster's rule, not the hub's to relax: whatever the hub sent
    // (`privileged`, or a pinned old `*-version`), the namespace enforces `restricted`
    // at the latest version, where this cluster's API server has PodSecurity admission.
    let labels = namespace.metadata.labels.get_or_insert_with(Default::default);
    labels.retain(|k, _| !k.starts_with(POD_SECURITY));
    for mode in ["enforce", "warn", "audit"] {
        labels.insert(format!("{POD_SECURITY}{mode}"), "restricted".to_owned());
    }
    let (mut policy, mut quota, mut service, mut exposure, mut credentials) = (None, None, None, None, None);
    for (i, o) in spec.objects.iter().enumerate() {
        let what = format!("spec.objects[{i}]");
        in_namespace(o, tenant, &what)?;
        match o["kind"].as_str() {
            Some("NetworkPolicy") => {
                policy = Some(typed::<NetworkPolicy>(
                    o,
                    "networking.k8s.io/v1",
                    "NetworkPolicy",
                    &what,
                )?)
            }
            Some("ResourceQuota") => quota = Some(typed::<ResourceQuota>(o, "v1", "ResourceQuota", &what)?),
            Some("Service") => {
                let svc = typed::<Service>(o, "v1", "Service", &what)?;
                let svc = checked_service(svc, &spec.job_uid, &what)?;
                if svc.metadata.name.as_deref() == Some(SERVING_SERVICE) {
                    exposure = Some(svc);
                } else {
                    service = Some(svc);
                }
            }
            Some("Secret") => {
                let secret = typed::<Secret>(o, "v1", "Secret", &what)?;
                credentials = Some(checked_credentials(secret, a, &what)?);
            }
            other => {
                return Err(format!(
                    "{what}: kind {other:?} is not accepted (NetworkPolicy, ResourceQuota, Service, Secret)"
                ));
            }
        }
    }
    let (Some(mut network_policy), Some(mut quota)) = (policy, quota) else {
        return Err("spec.objects: needs a NetworkPolicy and a ResourceQuota".into());
    };
    network_policy.metadata.namespace = Some(tenant.to_owned());
    quota.metadata.namespace = Some(tenant.to_owned());
    for svc in service.iter_mut().chain(exposure.iter_mut()) {
        svc.metadata.namespace = Some(tenant.to_owned());
    }
    if let Some(secret) = credentials.as_mut() {
        secret.metadata.namespace = Some(tenant.to_owned());
    }
    let mut pods = Vec::with_capacity(spec.pods.len());
    for (i, p) in spec.pods.iter().enumerate() {
        let what = format!("spec.pods[{i}]");
        in_namespace(p, tenant, &what)?;
        let mut pod: Pod = typed(p, "v1", "Pod", &what)?;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.get(names::LABEL_JOB_UID) != Some(&spec.job_uid)
            || labels.get(names::LABEL_ATTEMPT) != Some(&spec.attempt.to_string())
        {
            return Err(format!(
                "{what}: labels must name job {} attempt {}",
                spec.job_uid, spec.attempt
            ));
        }
        let worker: gpufed_api::job::WorkerPodSpec =
            serde_json::from_value(p["spec"].clone()).map_err(|e| format!("{what}.spec: {e}"))?;
        let mut violations = gpufed_api::pod_security::check(&worker);
        violations.extend(gpufed_api::pod_security::reserved_env(&worker));
        if let Some(e) = violations.first() {
            return Err(format!(
                "{what}: violates the restricted pod-security profile: {e}"
            ));
        }
        // The hub never sets a pod's priority: one that is set (a tenant's template the
        // hub let through) could preempt this cluster's own pods and other tenants'.
        if let Some(field) = pod.spec.as_ref().and_then(priority_field) {
            return Err(format!(
                "{what}.spec.{field}: not accepted: a worker gets this cluster's default \
                 priority, so that it cannot preempt the provider's pods or other tenants'"
            ));
        }
        if let Some(e) = pod.spec.as_ref().and_then(reach_field) {
            return Err(format!("{what}.spec.{e}"));
        }
        pod.metadata.namespace = Some(tenant.to_owned());
        pods.push(pod);
    }
    Ok(MemberObjects {
        namespace,
        network_policy,
        quota,
        service,
        exposure,
        credentials,
        pods,
    })
}

/// The first scheduling-priority field `pod` sets: kube-scheduler preempts lower-priority
/// pods on any node for a pod of higher priority, and `system-node-critical` may be named
/// outside `kube-system` unless this cluster limits it by a ResourceQuota. Any
/// `priority`, 0 too, and any `preemptionPolicy`, `Never` too: the hub sets none, and
/// the cluster's admission fills them from its default class.
fn priority_field(pod: &k8s_openapi::api::core::v1::PodSpec) -> Option<&'static str> {
    if pod.priority_class_name.as_deref().is_some_and(|v| !v.is_empty()) {
        Some("priorityClassName")
    } else if pod.priority.is_some() {
        Some("priority")
    } else if pod.preemption_policy.is_some() {
        Some("preemptionPolicy")
    } else {
        None
    }
}

/// The first field of `pod` that would reach beyond what this cluster's scheduler and the
/// tenant namespace grant, with why: the hub sets none of them (it pins workers by node
/// affinity and turns the token off), so one that is set is a template the hub let through.
/// `nodeName` binds without the scheduler (taints and the cluster's own placement rules
/// are skipped); a mounted token or another service account is a credential for this
/// cluster.
fn reach_field(pod: &k8s_openapi::api::core::v1::PodSpec) -> Option<String> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    if set(&pod.node_name) {
        return Some("nodeName: not accepted: this cluster's scheduler chooses the node".into());
    }
    if pod.automount_service_account_token != Some(false) {
        return Some(
            "automountServiceAccountToken: must be false: a worker gets no credentials for this \
             cluster"
                .into(),
        );
    }
    for (field, value) in [
        ("serviceAccountName", &pod.service_account_name),
        ("serviceAccount", &pod.service_account),
    ] {
        if set(value) && value.as_deref() != Some("default") {
            return Some(format!(
                "{field}: must be default or unset: the tenant namespace has no other service \
                 account"
            ));
        }
    }
    None
}

/// Why the agent must not take `existing` for an assignment's tenant namespace, if it
/// must not: a namespace that is there already and not gpufed's (someone else's, with a
/// name that happens to begin like ours) is neither labelled, filled nor ever deleted.
pub fn foreign(existing: Option<&Namespace>) -> Option<String> {
    let ns = existing?;
    let ours = ns
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get("app.kubernetes.io/managed-by").map(String::as_str) == Some("gpufed"));
    (!ours).then(|| {
        format!(
            "namespace {} exists in this cluster and is not gpufed's (no app.kubernetes.io/managed-by=gpufed)",
            ns.name_any()
        )
    })
}

/// The only Secret an Assignment may bring: its attempt's checkpoint credentials — named
/// [`MEMBER_SECRET`], `Opaque` (never a token type the member would act on), and labelled
/// with the assignment's job and attempt (removed with that attempt). Its keys become
/// every worker's environment (`envFrom`), so none may be a variable the device plugin
/// sets ([`gpufed_api::pod_security::RESERVED_ENV`]): `NVIDIA_VISIBLE_DEVICES=all` would
/// show a worker every GPU of its node, other tenants' too. (A prefix that could spell one
/// with a key is refused with the pods, `reserved_env`.)
fn checked_credentials(secret: Secret, a: &Assignment, what: &str) -> Result<Secret, String> {
    if secret.metadata.name.as_deref() != Some(MEMBER_SECRET) {
        return Err(format!(
            "{what}.metadata.name: the only Secret accepted is {MEMBER_SECRET}"
        ));
    }
    if secret.type_.as_deref().is_some_and(|t| t != "Opaque") {
        return Err(format!("{what}.type: only Opaque is accepted"));
    }
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    if labels.get(names::LABEL_JOB_UID) != Some(&a.spec.job_uid)
        || labels.get(names::LABEL_ATTEMPT) != Some(&a.spec.attempt.to_string())
    {
        return Err(format!(
            "{what}: labels must name job {} attempt {}",
            a.spec.job_uid, a.spec.attempt
        ));
    }
    let keys = secret.data.iter().flat_map(|d| d.keys().map(|k| ("data", k)));
    let string_keys = secret
        .string_data
        .iter()
        .flat_map(|d| d.keys().map(|k| ("stringData", k)));
    if let Some((field, key)) = keys
        .chain(string_keys)
        .find(|(_, k)| gpufed_api::pod_security::RESERVED_ENV.contains(&k.as_str()))
    {
        return Err(format!(
            "{what}.{field}.{key}: set by the device plugin for the GPUs allocated, never by the credentials"
        ));
    }
    Ok(secret)
}

#[cfg(test)]
#[path = "accept_tests.rs"]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "accept_owner_tests.rs"]
mod owner_tests;
