//! I/O: what a job's live attempt looks like in its member cluster.

use std::collections::BTreeSet;

use gpufed_trust::allocations::{self, Allocations};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{GetParams, ListParams};
use kube::{Api, Client};

use super::names;
use super::plan::{PodPhase, PodView};

/// What the job controller reads of a Ready (or unreachable) node under an attempt's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadyNode {
    /// Its `Ready` condition is `Unknown`: the member's node controller lost contact with
    /// its kubelet. Its pods may still run; the job controller waits the provider's grace
    /// period before it counts them lost (see `Placement::node_unreachable_since`).
    pub unreachable: bool,
    /// Its `ExternalIP`, if it has one (a served port is reached there rather than at the
    /// internal `hostIP`).
    pub external_ip: Option<String>,
    /// Which GPUs each of its pods holds, as its device plugin publishes them (empty when
    /// it publishes none, or nothing readable: see [`gpufed_trust::allocations`]).
    pub allocations: Allocations,
}

/// The nodes under an attempt's pods that are Ready or unreachable, by name; a node not
/// here is gone or reported NotReady by its kubelet (lost).
pub type ReadyNodes = std::collections::BTreeMap<String, ReadyNode>;

/// The pods of attempt `attempt` of job `uid` in `namespace`, and which of the nodes
/// under them are Ready (only those nodes are read, not the whole fleet).
pub async fn attempt_pods_and_ready_nodes(
    client: &Client,
    namespace: &str,
    uid: &str,
    attempt: u32,
) -> Result<(Vec<Pod>, ReadyNodes), kube::Error> {
    let selector = format!(
        "{}={uid},{}={attempt}",
        names::LABEL_JOB_UID,
        names::LABEL_ATTEMPT
    );
    // From the watch cache (resourceVersion 0): milliseconds stale at worst, which a
    // level-triggered reconcile tolerates (a pod not seen yet is applied again, a no-op),
    // and no quorum read of etcd per job and round.
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector).match_any())
        .await?;
    let bound: BTreeSet<String> = pods
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    let nodes = Api::<Node>::all(client.clone());
    let mut ready_nodes = ReadyNodes::new();
    for name in bound {
        let node = match nodes.get_with(&name, &GetParams::any()).await {
            Ok(n) => Some(n),
            Err(kube::Error::Api(s)) if s.is_not_found() => None,
            Err(e) => return Err(e),
        };
        if let Some(ready) = node.as_ref().and_then(ready_node) {
            ready_nodes.insert(name, ready);
        }
    }
    Ok((pods.items, ready_nodes))
}

/// What is read of `node` if it is Ready or unreachable (`Ready` condition `Unknown`);
/// `None` for any other (NotReady, or no `Ready` condition). Its allocations come from a
/// member cluster: an unreadable annotation is logged and read as none.
pub fn ready_node(node: &Node) -> Option<ReadyNode> {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let unreachable = match ready {
        Some("True") => false,
        Some("Unknown") => true,
        _ => return None,
    };
    let external_ip = status
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .find(|a| a.type_ == "ExternalIP")
        .map(|a| a.address.clone());
    let allocations = match node.annotations().get(allocations::ANNOTATION) {
        None => Allocations::new(),
        Some(text) => allocations::parse(text).unwrap_or_else(|e| {
            tracing::warn!(node = %node.name_any(), error = %e, "ignoring the node's GPU allocations");
            Allocations::new()
        }),
    };
    Some(ReadyNode {
        unreachable,
        external_ip,
        allocations,
    })
}

/// The views of an attempt's pods, and the nodes under them that are not Ready.
pub async fn attempt_pods(
    client: &Client,
    namespace: &str,
    uid: &str,
    attempt: u32,
) -> Result<(Vec<PodView>, Vec<String>), kube::Error> {
    let (pods, ready_nodes) = attempt_pods_and_ready_nodes(client, namespace, uid, attempt).await?;
    Ok(views(&pods, &ready_nodes))
}

/// Views of `pods`, and the nodes under them that are not Ready (not among
/// `ready_nodes`, or unreachable): no new work goes there.
pub fn views(pods: &[Pod], ready_nodes: &ReadyNodes) -> (Vec<PodView>, Vec<String>) {
    let lost: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .filter(|n| ready_nodes.get(n).is_none_or(|r| r.unreachable))
        .collect();
    let views = pods.iter().filter_map(|p| pod_view(p, ready_nodes)).collect();
    (views, lost.into_iter().collect())
}

/// A worker pod's view, from its labels and status.
pub fn pod_view(pod: &Pod, ready_nodes: &ReadyNodes) -> Option<PodView> {
    let rank = pod
        .metadata
        .labels
        .as_ref()?
        .get(names::LABEL_RANK)?
        .parse()
        .ok()?;
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Pending,
    };
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten();
    let finished = containers
        .clone()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max();
    let started = containers
        .filter_map(|c| {
            let state = c.state.as_ref()?;
            let running = state.running.as_ref().and_then(|r| r.started_at.as_ref());
            running.or_else(|| state.terminated.as_ref()?.started_at.as_ref())
        })
        .map(|t| t.0.as_second())
        .min();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let ready_node = node.as_ref().and_then(|n| ready_nodes.get(n));
    let external = ready_node.and_then(|n| n.external_ip.clone());
    let key = allocations::pod_key(
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    );
    let gpu_uuids = ready_node
        .and_then(|n| n.allocations.get(&key).cloned())
        .unwrap_or_default();
    let node_lost = node.as_ref().is_some_and(|n| !ready_nodes.contains_key(n));
    let node_unreachable = ready_node.is_some_and(|n| n.unreachable);
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(PodView {
        rank,
        phase,
        started,
        finished,
        node_lost,
        node_unreachable,
        ready,
        host_ip: external.or_else(|| status.and_then(|s| s.host_ip.clone())),
        gpu_uuids,
        waiting: (phase == PodPhase::Pending).then(|| waiting(pod)).flatten(),
    })
}

/// Most characters of a pod's waiting reason kept (the Assignment schema's bound).
const MAX_WAITING: usize = 320;

/// What a pod that does not run waits for: the scheduler's `PodScheduled=False` reason
/// and message, else its first waiting container's reason and message.
pub fn waiting(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| (c.reason.clone(), c.message.clone()));
    let container = || {
        let all = status
            .init_container_statuses
            .iter()
            .chain(&status.container_statuses);
        all.flatten()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref())
            .map(|w| (w.reason.clone(), w.message.clone()))
    };
    let (reason, message) = unscheduled.or_else(container)?;
    let text = match (reason, message) {
        (Some(r), Some(m)) if !m.is_empty() => format!("{r}: {m}"),
        (Some(r), _) => r,
        (None, Some(m)) => m,
        (None, None) => return None,
    };
    Some(text.chars().take(MAX_WAITING).collect())
}

/// Deletes the pods of an attempt (fencing a lost or stopped attempt). Idempotent.
pub async fn remove_attempt(
    client: &Client,
    namespace: &str,
    uid: &str,
    attempt: u32,
) -> Result<(), kube::Error> {
    let selector = format!(
        "{}={uid},{}={attempt}",
        names::LABEL_JOB_UID,
        names::LABEL_ATTEMPT
    );
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    match api
        .delete_collection(&Default::default(), &ListParams::default().labels(&selector))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes job `uid`'s tenant namespace (everything in it), unless it is another job's
/// ([`super::dispatch::taken_by`]: two jobs' names can give the same tenant namespace, and
/// the dispatch of the one that came second was refused, but its deletion would remove the
/// first one's work). The delete is conditioned on the namespace's own uid, so one created
/// anew since it was read is left alone too. Idempotent.
pub async fn remove_own_namespace(client: &Client, namespace: &str, uid: &str) -> Result<(), kube::Error> {
    let Some(existing) = super::dispatch::read_namespace(client, namespace).await? else {
        return Ok(());
    };
    if let Some(owner) = super::dispatch::taken_by(Some(&existing), uid) {
        tracing::warn!(%namespace, %owner, "tenant namespace belongs to another job: left alone");
        return Ok(());
    }
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let this_one = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(namespace, &this_one).await {
        Ok(_) => Ok(()),
        // Gone meanwhile, or another namespace by that name now (precondition failed).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// A serving replica's Service as the member allocated it (node port, load-balancer
/// ingress); `None` while it does not exist or is not job `uid`'s (two jobs' names can
/// give one tenant namespace: the other's address is never this job's endpoint).
pub async fn exposure(
    client: &Client,
    namespace: &str,
    uid: &str,
) -> Result<Option<gpufed_api::serving::Exposure>, kube::Error> {
    let api = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), namespace);
    Ok(api
        .get_opt(super::serving::SERVING_SERVICE)
        .await?
        .filter(|s| s.labels().get(names::LABEL_JOB_UID).map(String::as_str) == Some(uid))
        .map(|s| super::serving::exposure_of(&s)))
}
