//! I/O: apply an attempt's member objects by server-side apply with one field manager.
//! Names are deterministic, so a retry after a crash converges instead of duplicating.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::MemberObjects;
use super::names;

/// An object as an apply body: its JSON with `apiVersion` and `kind`.
pub fn manifest<K>(obj: &K) -> Result<serde_json::Value, serde_json::Error>
where
    K: Resource + Serialize,
    K::DynamicType: Default,
{
    let mut value = serde_json::to_value(obj)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&Default::default()).into());
        map.insert("kind".into(), K::kind(&Default::default()).into());
    }
    Ok(value)
}

async fn apply<K>(api: Api<K>, obj: &K) -> Result<(), kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
    K::DynamicType: Default,
{
    let value = manifest(obj).map_err(kube::Error::SerdeError)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await?;
    Ok(())
}

/// The job (`gpufed.io/job-uid`) whose tenant namespace `existing` is, when that is not
/// `uid`: two jobs' names can give the same tenant namespace (its name is cut to 63
/// characters and carries a hash of 32 bits), and applying one job's objects into the
/// other's — by a forced apply that takes over its labels — would mix two tenants' pods
/// and have the first job's deletion remove the second's. A namespace without the label
/// names no job (one written before it was set).
pub fn taken_by<'a>(existing: Option<&'a Namespace>, uid: &str) -> Option<&'a str> {
    let owner = existing?.labels().get(names::LABEL_JOB_UID)?;
    (owner != uid).then_some(owner.as_str())
}

/// How [`taken_error`]'s message begins.
pub const TAKEN: &str = "nothing applied: the tenant namespace";

/// The answer to a dispatch into a namespace [`taken_by`] another job: a 403 that does not
/// pass ([`crate::error::is_forbidden`]), so the attempt ends after the forbidden grace
/// period and placement keeps the job off this provider for a while, as for a member that
/// forbids the attempt's objects.
pub fn taken_error(namespace: &str, owner: &str) -> kube::Error {
    let message = format!(
        "{TAKEN} {namespace} exists and belongs to another job ({}={owner}; two jobs' \
         names give the same tenant namespace)",
        names::LABEL_JOB_UID
    );
    kube::Error::Api(
        kube::core::Status::failure(&message, "Forbidden")
            .with_code(403)
            .boxed(),
    )
}

/// The tenant namespace `name` as it is, if it exists: read by a patch that changes
/// nothing, since the member role lets the hub (and the agent) create, patch and delete
/// namespaces, not read them.
pub async fn read_namespace(client: &Client, name: &str) -> Result<Option<Namespace>, kube::Error> {
    let api = Api::<Namespace>::all(client.clone());
    let unchanged = Patch::Merge(serde_json::json!({}));
    match api.patch(name, &PatchParams::default(), &unchanged).await {
        Ok(ns) => Ok(Some(ns)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies everything; pods last, so the namespace, its policy and quota exist first.
/// Nothing is applied into a namespace another job holds (`taken_by`).
pub async fn dispatch(client: &Client, objects: &MemberObjects) -> Result<(), kube::Error> {
    let ns = objects.namespace.name_any();
    let uid = objects
        .namespace
        .labels()
        .get(names::LABEL_JOB_UID)
        .cloned()
        .unwrap_or_default();
    if let Some(owner) = taken_by(read_namespace(client, &ns).await?.as_ref(), &uid) {
        return Err(taken_error(&ns, owner));
    }
    apply(Api::<Namespace>::all(client.clone()), &objects.namespace).await?;
    futures::try_join!(
        apply(
            Api::<NetworkPolicy>::namespaced(client.clone(), &ns),
            &objects.network_policy
        ),
        apply(
            Api::<ResourceQuota>::namespaced(client.clone(), &ns),
            &objects.quota
        ),
        async {
            match &objects.service {
                Some(svc) => apply(Api::<Service>::namespaced(client.clone(), &ns), svc).await,
                None => Ok(()),
            }
        },
        async {
            match &objects.credentials {
                Some(secret) => apply(Api::<Secret>::namespaced(client.clone(), &ns), secret).await,
                None => Ok(()),
            }
        },
    )?;
    if let Some(svc) = &objects.exposure {
        apply(Api::<Service>::namespaced(client.clone(), &ns), svc).await?;
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let created = futures::future::try_join_all(objects.pods.iter().map(|pod| {
        let pods = pods.clone();
        async move {
            // Applied without a read first (the usual case: it does not exist yet). Pod
            // specs are immutable, so an apply that changes an existing pod of the same
            // attempt (an operator upgrade built it differently) is refused as invalid:
            // then that existing pod is left alone.
            match apply(pods.clone(), pod).await {
                Err(kube::Error::Api(s))
                    if s.code == 422 && pods.get_opt(&pod.name_any()).await?.is_some() =>
                {
                    Ok(())
                }
                other => other,
            }
        }
    }))
    .await;
    if let Err(kube::Error::Api(s)) = &created
        && s.code == 403
        && s.message.contains("exceeded quota")
    {
        // A create interrupted after quota admission (a crashed operator) leaves the
        // quota charged for a pod that never existed until the quota controller's next
        // full resync (minutes). Our own pods are the only ones in this namespace, so
        // recreate the quota: its usage is recomputed from the pods that really exist.
        release_fenced_pods(client, &ns).await?;
        let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &ns);
        quotas
            .delete(&objects.quota.name_any(), &Default::default())
            .await?;
        tracing::warn!(namespace = %ns, "tenant quota was charged for pods that do not exist: recreated");
    }
    created?;
    Ok(())
}

/// Removes from the API the pods in `ns` that were already deleted (an ended attempt's,
/// fenced) but sit on a node that is gone, NotReady or unreachable: their kubelet will not
/// confirm the deletion, and the quota counts them until their grace period has passed
/// twice and the quota is recomputed — a failover to another node of the same provider
/// waited minutes for that. A kubelet that comes back stops containers whose pod is gone
/// (what `kubectl delete --force` and the pod garbage collector rely on). Pods on Ready
/// nodes are left to their kubelet, which still holds their GPUs.
async fn release_fenced_pods(client: &Client, ns: &str) -> Result<(), kube::Error> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let nodes = Api::<Node>::all(client.clone());
    for pod in pods.list(&ListParams::default()).await?.items {
        if pod.metadata.deletion_timestamp.is_none() {
            continue;
        }
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
            let ready = nodes
                .get_opt(node)
                .await?
                .as_ref()
                .and_then(super::observe::ready_node)
                .is_some_and(|r| !r.unreachable);
            if ready {
                continue;
            }
        }
        let force = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod.name_any(), &force).await {
            Ok(_) => {
                tracing::info!(namespace = %ns, pod = %pod.name_any(), "fenced pod on a lost node removed")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
