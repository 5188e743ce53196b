//! Publishing to the Node object: the labels of [`crate::labels::node_labels`] and the
//! signed inventory report, by server-side apply under one field manager. The hub asks
//! for a fresh report by writing a nonce into the [`NONCE_ANNOTATION`] of the Node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use gpufed_trust::ChallengeAnswer;
use gpufed_trust::allocations::{self, Allocations};

use crate::challenge::{CHALLENGE_TIMEOUT, Challenger, read_request};
use crate::executor::Executor;
use crate::inventory::Inventory;
use crate::labels::node_labels;
use crate::report::{SignedReport, of_inventory, sign};
use crate::service::PluginState;

/// Field manager of every write this plugin makes.
pub const FIELD_MANAGER: &str = "gpufed-device-plugin";
/// Annotation the hub sets to a fresh nonce to ask for a report.
pub const NONCE_ANNOTATION: &str = "gpufed.io/attestation-nonce";
/// Annotation holding the signed report (see [`gpufed_trust::report::ANNOTATION`]).
pub const REPORT_ANNOTATION: &str = gpufed_trust::report::ANNOTATION;
/// Annotation holding the pods' GPU allocations (see [`gpufed_trust::allocations`]).
pub const ALLOCATIONS_ANNOTATION: &str = allocations::ANNOTATION;

/// Node publishing failures.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API server refused or could not be reached.
    #[error("node {node}: {source}")]
    Kube {
        /// Node name.
        node: String,
        /// The client error.
        source: kube::Error,
    },
    /// The report could not be signed.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

/// The signed report of `inv` for `node` answering `nonce`, issued now.
pub fn signed_report(
    node: &str,
    nonce: &str,
    inv: &Inventory,
    key: &SigningKey,
) -> Result<SignedReport, NodeError> {
    signed_report_with(node, nonce, inv, None, key)
}

/// Like [`signed_report`], carrying the answer to the hub's compute challenge.
pub fn signed_report_with(
    node: &str,
    nonce: &str,
    inv: &Inventory,
    challenge: Option<ChallengeAnswer>,
    key: &SigningKey,
) -> Result<SignedReport, NodeError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut report = of_inventory(node, nonce, now, inv);
    report.challenge = challenge;
    Ok(sign(report, key)?)
}

/// The server-side-apply body: labels, the report annotation, and (when PodResources is
/// read) the pods' GPU allocations. One body under one field manager: a field left out of
/// it would be removed from the Node.
pub fn apply_body(
    node: &str,
    labels: &BTreeMap<String, String>,
    report: &SignedReport,
    allocations: Option<&Allocations>,
) -> serde_json::Value {
    let report_json = serde_json::to_string(report).unwrap_or_default();
    let mut annotations = serde_json::json!({ REPORT_ANNOTATION: report_json });
    if let Some(a) = allocations {
        annotations[ALLOCATIONS_ANNOTATION] = serde_json::Value::String(allocations::encode(a));
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": labels,
            "annotations": annotations,
        }
    })
}

/// Applies labels and a report answering the Node's current nonce. Returns the nonce used.
pub async fn publish_once(
    api: &Api<Node>,
    node: &str,
    inv: &Inventory,
    key: &SigningKey,
) -> Result<String, NodeError> {
    publish_with(api, node, inv, None, None, key).await
}

/// Like [`publish_once`], with the answer to the hub's compute challenge in the report and
/// the pods' GPU allocations.
pub async fn publish_with(
    api: &Api<Node>,
    node: &str,
    inv: &Inventory,
    challenge: Option<ChallengeAnswer>,
    allocations: Option<&Allocations>,
    key: &SigningKey,
) -> Result<String, NodeError> {
    let kube = |source| NodeError::Kube {
        node: node.to_owned(),
        source,
    };
    let current = api.get(node).await.map_err(kube)?;
    let nonce = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NONCE_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let report = signed_report_with(node, &nonce, inv, challenge, key)?;
    let body = apply_body(node, &node_labels(inv), &report, allocations);
    api.patch(
        node,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube)?;
    Ok(nonce)
}

/// What [`run_publisher`] publishes, where, and how often.
pub struct Publisher {
    /// Client of the node's own cluster.
    pub client: kube::Client,
    /// The Node's name.
    pub node: String,
    /// Namespace of the hub's challenge ConfigMap.
    pub namespace: String,
    /// This node's GPUs.
    pub inventory: Inventory,
    /// The node key that signs reports.
    pub key: SigningKey,
    /// How often the nonce, the challenge request and the allocations are checked.
    pub every: Duration,
    /// kubelet's PodResources socket and our resource name: the pods' GPU allocations are
    /// published from it ([`ALLOCATIONS_ANNOTATION`]); `None` publishes none.
    pub pod_resources: Option<(PathBuf, String)>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("node", &self.node)
            .field("namespace", &self.namespace)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// How the publisher answers the hub's compute challenge.
pub struct ChallengeSetup {
    /// Who computes ([`crate::cuda::executor_for`]).
    pub executor: Executor,
    /// The bound on one GPU's computation ([`CHALLENGE_TIMEOUT`]); the whole answer is
    /// abandoned a little after it (see [`run_publisher_with`]).
    pub timeout: Duration,
    /// The GPUs' health: unhealthy GPUs are not computed for. `None`: all are.
    pub health: Option<PluginState>,
}

impl ChallengeSetup {
    /// This node's executor, [`CHALLENGE_TIMEOUT`], no health.
    pub fn for_inventory(inv: &Inventory) -> Self {
        Self {
            executor: crate::cuda::executor_for(inv.simulated),
            timeout: CHALLENGE_TIMEOUT,
            health: None,
        }
    }
}

impl std::fmt::Debug for ChallengeSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeSetup")
            .field("executor", &self.executor)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What the answer may take beyond one GPU's bound (cgroup reads, the answer's openings)
/// before the publisher gives up on it for the round.
pub const ANSWER_SLACK: Duration = Duration::from_secs(30);

/// [`run_publisher_with`] with [`ChallengeSetup::for_inventory`].
pub async fn run_publisher(p: Publisher, shutdown: watch::Receiver<bool>) {
    let setup = ChallengeSetup::for_inventory(&p.inventory);
    run_publisher_with(p, setup, shutdown).await;
}

/// Publishes at start and whenever the hub's nonce, its challenge request for this node
/// (ConfigMap in the publisher's namespace) or the pods' GPU allocations change, checked
/// every `every` and at once when the challenge ConfigMap changes (watched), until
/// `shutdown` turns true. Errors are logged and retried; while
/// PodResources cannot be read, the last allocations read stay published.
///
/// The challenge answer runs off the async workers and is bounded: a GPU whose
/// computation outlives `setup.timeout` is left out ([`Challenger`]), and should the
/// whole answer still not come within that plus [`ANSWER_SLACK`] it is abandoned and the
/// round published without one. Before, a CUDA call hung on a GPU that fell off the bus
/// stopped this loop for good: no more reports, labels or allocations.
pub async fn run_publisher_with(p: Publisher, setup: ChallengeSetup, mut shutdown: watch::Receiver<bool>) {
    let Publisher {
        client,
        node,
        namespace,
        inventory: inv,
        key,
        every,
        pod_resources,
    } = p;
    let api: Api<Node> = Api::all(client.clone());
    type Published = (String, Option<ChallengeAnswer>, Option<Allocations>);
    let mut last: Option<Published> = None;
    let ChallengeSetup {
        executor,
        timeout,
        health,
    } = setup;
    let challenger =
        Challenger::new(executor, inv.gpus.iter().map(|g| g.uuid.clone()).collect()).with_timeout(timeout);
    // The workload runs for up to seconds (GPU) and is CPU work (hashing, the simulated
    // executor): off the async workers, one at a time.
    let challenger = std::sync::Arc::new(std::sync::Mutex::new(challenger));
    // A new request is answered at once, not at the next poll.
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let watch = tokio::spawn(crate::challenge::watch_requests(
        client.clone(),
        namespace.clone(),
        node.clone(),
        wake.clone(),
    ));
    while !*shutdown.borrow() {
        let nonce = match api.get(&node).await {
            Ok(n) => n
                .metadata
                .annotations
                .and_then(|a| a.get(NONCE_ANNOTATION).cloned())
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%node, error = %e, "cannot read Node");
                last.as_ref().map(|(n, ..)| n.clone()).unwrap_or_default()
            }
        };
        let request = read_request(&client, &namespace, &node).await;
        let answer = {
            let challenger = challenger.clone();
            let unhealthy = health.as_ref().map(PluginState::unhealthy).unwrap_or_default();
            let run = tokio::task::spawn_blocking(move || {
                // An answer abandoned in an earlier round still holds the challenger: this
                // round has none rather than a thread queued behind it.
                let mut c = match challenger.try_lock() {
                    Ok(c) => c,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return None,
                };
                c.answer_among(request.as_ref(), |u| !unhealthy.contains(u))
            });
            match tokio::time::timeout(timeout + ANSWER_SLACK, run).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the challenge computation failed");
                    None
                }
                Err(_) => {
                    tracing::error!(
                        bound_secs = (timeout + ANSWER_SLACK).as_secs(),
                        "the challenge answer did not come in time: abandoned, this round is published without it"
                    );
                    None
                }
            }
        };
        let allocations = match &pod_resources {
            None => None,
            Some((socket, resource)) => match crate::kubelet::allocations(socket, resource).await {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read PodResources; keeping the published allocations");
                    last.as_ref().and_then(|(.., a)| a.clone())
                }
            },
        };
        let current = (nonce, answer, allocations);
        if last.as_ref() != Some(&current) {
            match publish_with(&api, &node, &inv, current.1.clone(), current.2.as_ref(), &key).await {
                Ok(n) => {
                    tracing::info!(%node, nonce = %n, challenge = ?current.1.as_ref().map(|a| &a.nonce),
                        pods_with_gpus = current.2.as_ref().map(BTreeMap::len),
                        "node labels, signed inventory report and GPU allocations applied");
                    last = Some(current);
                }
                Err(e) => tracing::warn!(error = %e, "cannot publish node labels/report; retrying"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
    watch.abort();
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
