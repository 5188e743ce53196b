//! Watches of a push-mode member: gpufed's pods and the nodes, kept in memory.
//!
//! The node watch also serves the reports-only probe of a challenge round and wakes the
//! provider as soon as a node publishes a new signed report ([`crate::member::wakes`]).
//!
//! Job reconciles read an attempt's pods and the nodes under them from here instead of a
//! LIST and a GET per node each time (in a burst of jobs those reads were a fifth of the
//! member's requests), and a change of one of our pods wakes its job at once instead of
//! at the next poll.
//!
//! A cache answers only while both watches are synced and healthy. A watch on a frozen
//! API server does not fail (the connection just goes quiet), so callers also stop
//! using the cache once this process's probe of the provider fails
//! ([`crate::member::Link::uncached`]); then reads go to the API server again and fail
//! or succeed as they did before the cache existed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use gpufed_api::ComputeJob;
use gpufed_trust::allocations;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::job::names;
use crate::job::observe::{ReadyNodes, ready_node};
use crate::member::wakes::{NodeChanges, ReportWakes};

/// Where a member pod's changes are sent: the job controller's trigger.
pub type JobTrigger = UnboundedSender<ObjectRef<ComputeJob>>;

/// One member's watched pods and nodes.
pub struct MemberCache {
    pods: Store<Pod>,
    nodes: Store<Node>,
    pods_ok: Arc<AtomicBool>,
    nodes_ok: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for MemberCache {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// What a member watch saw.
enum Change<'a, K> {
    Applied(&'a K),
    Deleted(&'a K),
    /// A (re)list completed: anything may have changed meanwhile.
    Listed,
}

/// Runs one reflector, keeping `ok` true only between a completed (re)list and the next
/// error, and calling `seen` for every change after a list and at the end of each list.
fn spawn_reflector<K, F>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    ok: Arc<AtomicBool>,
    seen: F,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: Fn(Change<'_, K>) + Send + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).modify(trim))
        .backoff(crate::backoff::WatchBackoff::default());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    ok.store(true, Ordering::SeqCst);
                    seen(Change::Listed);
                }
                // A watch that failed without a 410 resumes from its last version with no
                // re-list (no InitDone): its first event again proves it live and gapless.
                Ok(watcher::Event::Apply(o)) => {
                    ok.store(true, Ordering::SeqCst);
                    seen(Change::Applied(&o));
                }
                Ok(watcher::Event::Delete(o)) => {
                    ok.store(true, Ordering::SeqCst);
                    seen(Change::Deleted(&o));
                }
                Ok(_) => {}
                Err(e) => {
                    ok.store(false, Ordering::SeqCst);
                    tracing::debug!(error = %e, "member watch interrupted; re-listing");
                }
            }
        }
    });
    (store, task)
}

impl MemberCache {
    /// Starts watching gpufed's pods (by their job label) and all nodes of the member
    /// behind `client` (provider `provider`'s): changes of a pod are sent to `trigger` as
    /// its job, and changes of a node's signed report to `reports`.
    pub fn start(client: &Client, trigger: Option<JobTrigger>, provider: &str, reports: ReportWakes) -> Self {
        let (pods_ok, nodes_ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let pod_config = watcher::Config::default().labels(names::LABEL_JOB_UID);
        let node_trigger = trigger.clone();
        let (pods, pod_task) = spawn_reflector(
            Api::all(client.clone()),
            pod_config,
            trim_pod,
            pods_ok.clone(),
            move |change: Change<'_, Pod>| {
                if let (Change::Applied(p) | Change::Deleted(p), Some(t)) = (change, &trigger)
                    && let Some(job) = job_of(p)
                {
                    let _ = t.unbounded_send(job);
                }
            },
        );
        // A node's device plugin publishing new GPU allocations wakes the jobs whose pods
        // they name, so their placements learn their GPUs at once, not at the next poll;
        // a new signed report wakes the provider while it waits for a commitment.
        let changes: Mutex<NodeChanges> = Mutex::default();
        let pods_by_key = pods.clone();
        let provider = provider.to_owned();
        let (nodes, node_task) = spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            trim_node,
            nodes_ok.clone(),
            move |change: Change<'_, Node>| {
                let n = match change {
                    Change::Applied(n) => n,
                    Change::Deleted(n) => {
                        lock(&changes).deleted(&n.name_any());
                        return reports.report_changed(&provider);
                    }
                    Change::Listed => return reports.report_changed(&provider),
                };
                let changed = lock(&changes).seen(n);
                if changed.report {
                    reports.report_changed(&provider);
                }
                if let (true, Some(t)) = (changed.allocations, &node_trigger) {
                    let text = n
                        .annotations()
                        .get(allocations::ANNOTATION)
                        .map_or("", String::as_str);
                    for job in jobs_in_allocations(text, &pods_by_key) {
                        let _ = t.unbounded_send(job);
                    }
                }
            },
        );
        Self {
            pods,
            nodes,
            pods_ok,
            nodes_ok,
            tasks: vec![pod_task, node_task],
        }
    }

    /// `(node, report)` of every node matching `node_selector` that publishes a signed
    /// report: a reports-only probe served from the watch, no request to the member.
    pub fn node_reports(&self, node_selector: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.nodes
            .state()
            .iter()
            .filter(|n| {
                let labels = n.labels();
                node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .filter_map(|n| crate::provider::report_of(&n.metadata))
            .collect()
    }

    /// Whether both watches are listed and have not failed since.
    pub fn current(&self) -> bool {
        self.pods_ok.load(Ordering::SeqCst) && self.nodes_ok.load(Ordering::SeqCst)
    }

    /// The pods of attempt `attempt` of job `uid` in `namespace`, and the Ready nodes
    /// under them (the same answer as [`crate::job::observe::attempt_pods_and_ready_nodes`]).
    pub fn attempt_pods_and_ready_nodes(
        &self,
        namespace: &str,
        uid: &str,
        attempt: u32,
    ) -> (Vec<Pod>, ReadyNodes) {
        let attempt = attempt.to_string();
        let pods: Vec<Pod> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                // Run for every job's reconcile over all of the member's pods: the most
                // selective test first, and nothing allocated per pod.
                let l = p.labels();
                l.get(names::LABEL_JOB_UID).map(String::as_str) == Some(uid)
                    && l.get(names::LABEL_ATTEMPT) == Some(&attempt)
                    && p.metadata.namespace.as_deref() == Some(namespace)
            })
            .map(|p| (*p).clone())
            .collect();
        let mut ready = ReadyNodes::new();
        for node in pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.as_ref()) {
            let n = self.nodes.get(&ObjectRef::new(node));
            if let Some(r) = n.and_then(|n| ready_node(&n)) {
                ready.insert(node.clone(), r);
            }
        }
        (pods, ready)
    }
}

/// What the hub keeps of a watched node: its name, labels and annotations (the signed
/// report, the GPU allocations), and its conditions and addresses ([`ready_node`]). The
/// store holds every node of every push member, and the rest of a node object — managed
/// fields, spec, capacity, images, system info — is most of it and read by nobody here
/// (`benches/member_probe.rs` measures the difference).
pub fn trim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.spec = None;
    if let Some(s) = node.status.as_mut() {
        *s = NodeStatus {
            conditions: s.conditions.take(),
            addresses: s.addresses.take(),
            ..NodeStatus::default()
        };
    }
}

/// What the hub keeps of one of gpufed's member pods: all but its managed fields (job
/// reconciles read the pods whole).
pub fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The hub jobs of our pods named in a node's GPU-allocations annotation `text` (none for
/// an unreadable one).
fn jobs_in_allocations(text: &str, pods: &Store<Pod>) -> Vec<ObjectRef<ComputeJob>> {
    let Ok(a) = allocations::parse(text) else {
        return Vec::new();
    };
    a.keys()
        .filter_map(|key| {
            let (ns, pod) = key.split_once('/')?;
            job_of(pods.get(&ObjectRef::new(pod).within(ns))?.as_ref())
        })
        .collect()
}

/// The hub ComputeJob a member pod belongs to, from the labels dispatch puts on it.
fn job_of(pod: &Pod) -> Option<ObjectRef<ComputeJob>> {
    let l = pod.labels();
    let ns = l.get(names::LABEL_JOB_NAMESPACE)?;
    let name = names::hub_job_name(pod)?;
    Some(ObjectRef::new(name).within(ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    /// Pod `gpufed-t1/w-0` of hub job `team-a/train`.
    fn pod_of_train() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("w-0".into()),
                namespace: Some("gpufed-t1".into()),
                labels: Some(
                    [
                        (names::LABEL_JOB_NAMESPACE.to_string(), "team-a".to_string()),
                        (names::LABEL_JOB_NAME.to_string(), "train".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_names_its_hub_job_and_a_foreign_pod_none() {
        let mut pod = pod_of_train();
        assert_eq!(job_of(&pod), Some(ObjectRef::new("train").within("team-a")));
        pod.metadata.labels = None;
        assert_eq!(job_of(&pod), None);
    }

    #[test]
    fn a_trimmed_node_keeps_all_the_hub_reads() {
        let report = r#"{"report":{"node":"gpu-1"},"signature":"c2ln"}"#;
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-1", "labels": {"gpufed.io/gpu-model": "NVIDIA-H100"},
                "annotations": {(allocations::ANNOTATION): r#"{"gpufed-t1/w-0": ["GPU-a"]}"#,
                                (gpufed_trust::report::ANNOTATION): report},
                "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1"}]},
            "spec": {"podCIDR": "10.0.1.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"nvidia.com/gpu": "8"}, "allocatable": {"nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "ExternalIP", "address": "203.0.113.7"}],
                "images": [{"names": ["registry.example.com/ml/trainer:1"], "sizeBytes": 1}],
                "nodeInfo": {"architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "c",
                             "kernelVersion": "k", "kubeProxyVersion": "p", "kubeletVersion": "v1.20.2",
                             "machineID": "m", "operatingSystem": "linux", "osImage": "o", "systemUUID": "s"}
            }
        }))
        .expect("node");
        let mut trimmed = node.clone();
        trim_node(&mut trimmed);
        assert_eq!(
            ready_node(&trimmed),
            ready_node(&node),
            "readiness, address, allocations"
        );
        assert!(ready_node(&trimmed).is_some());
        assert_eq!(
            crate::provider::report_of(&trimmed.metadata),
            crate::provider::report_of(&node.metadata)
        );
        assert!(crate::provider::report_of(&trimmed.metadata).is_some());
        assert_eq!(
            (trimmed.labels(), trimmed.annotations()),
            (node.labels(), node.annotations())
        );
        assert_eq!(trimmed.metadata.managed_fields, None);
        assert_eq!(trimmed.spec, None);
        let status = trimmed.status.expect("status");
        assert_eq!(
            (status.images, status.node_info, status.capacity),
            (None, None, None)
        );
    }

    #[test]
    fn published_allocations_name_the_jobs_of_our_pods_only() {
        let (store, mut writer) = reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Apply(pod_of_train()));
        let text = r#"{"gpufed-t1/w-0": ["GPU-a"], "other/p": ["GPU-b"]}"#;
        assert_eq!(
            jobs_in_allocations(text, &store),
            vec![ObjectRef::new("train").within("team-a")]
        );
        assert!(jobs_in_allocations("not json", &store).is_empty());
    }
}
