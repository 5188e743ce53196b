//! Preparing a pull-mode provider's hub namespace ([`agent_namespace`]) for its agent.

use gpufed_api::GpuProvider;
use gpufed_api::pull::{
    self, AGENT_CLUSTER_ROLE, AGENT_CONFIGMAP, AGENT_SERVICE_ACCOUNT, BOOTSTRAP_CLUSTER_ROLE,
    REPORT_CONFIGMAP, agent_namespace,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::{AgentConfig, AgentPace};
use crate::error::{Error, Result};

/// Prepares a pull-mode provider's hub namespace: the namespace (owned by the
/// GpuProvider, so deleting the provider deletes it), the agent's ServiceAccount, its
/// binding and the registration group's binding, the agent config, and an empty report
/// (the agent may update only that one ConfigMap, so it must exist).
pub async fn ensure(hub: &Client, provider: &GpuProvider, pace: AgentPace) -> Result<()> {
    let name = provider.name_any();
    let ns = agent_namespace(&name);
    let pp = PatchParams::apply(crate::FIELD_MANAGER).force();
    let apply = |api: Api<kube::api::DynamicObject>, name: String, body: serde_json::Value| {
        let pp = pp.clone();
        async move { api.patch(&name, &pp, &Patch::Apply(&body)).await.map(|_| ()) }
    };
    let owner = serde_json::json!([{
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider", "name": name,
        "uid": provider.uid().unwrap_or_default(),
    }]);
    let labels = serde_json::json!({"app.kubernetes.io/managed-by": crate::FIELD_MANAGER, "app.kubernetes.io/component": "gpufed-agent"});
    let dyn_api = |group: &str, version: &str, kind: &str, plural: &str, namespaced: bool| {
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
        if namespaced {
            Api::<kube::api::DynamicObject>::namespaced_with(hub.clone(), &ns, &ar)
        } else {
            Api::<kube::api::DynamicObject>::all_with(hub.clone(), &ar)
        }
    };
    let err = |e: kube::Error| Error::hub("agent namespace", e);
    apply(
        dyn_api("", "v1", "Namespace", "namespaces", false),
        ns.clone(),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels, "ownerReferences": owner,
                         "annotations": {pull::ANNOTATION_PROVIDER: name}}}),
    )
    .await
    .map_err(err)?;
    apply(
        dyn_api("", "v1", "ServiceAccount", "serviceaccounts", true),
        AGENT_SERVICE_ACCOUNT.to_owned(),
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": AGENT_SERVICE_ACCOUNT, "namespace": ns, "labels": labels}}),
    )
    .await
    .map_err(err)?;
    let bindings = [
        (
            AGENT_CLUSTER_ROLE,
            serde_json::json!({"kind": "ServiceAccount", "name": AGENT_SERVICE_ACCOUNT, "namespace": ns}),
        ),
        (
            BOOTSTRAP_CLUSTER_ROLE,
            serde_json::json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": pull::bootstrap_group(&name)}),
        ),
    ];
    for (role, subject) in bindings {
        apply(
            dyn_api(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
            ),
            role.to_owned(),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": role, "namespace": ns, "labels": labels},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [subject]}),
        )
        .await
        .map_err(err)?;
    }
    let config = AgentConfig {
        resource_name: provider.spec.resource_name.clone(),
        node_selector: provider.spec.node_selector.clone(),
        exposed_node_labels: provider.spec.exposed_node_labels.clone(),
        interval_seconds: pace.interval_seconds,
        challenge_poll_millis: pace.challenge_poll_millis,
    };
    apply(
        dyn_api("", "v1", "ConfigMap", "configmaps", true),
        AGENT_CONFIGMAP.to_owned(),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": AGENT_CONFIGMAP, "namespace": ns, "labels": labels},
            "data": config.to_data()}),
    )
    .await
    .map_err(err)?;
    // The report, created empty by an apply that sets no field: the operator owns none of
    // it, so the agent's writes are never undone, and a first apply is a PATCH of that
    // name, which RBAC can limit by name (a POST names no object: create of any
    // ConfigMap anywhere).
    apply(
        dyn_api("", "v1", "ConfigMap", "configmaps", true),
        REPORT_CONFIGMAP.to_owned(),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": REPORT_CONFIGMAP, "namespace": ns}}),
    )
    .await
    .map_err(err)
}
