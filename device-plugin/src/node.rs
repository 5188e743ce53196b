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

use crate::challenge::{Challenger, read_request};
use crate::inventory::Inventory;
use crate::labels::node_labels;
use crate::report::{SignedReport, of_inventory, sign};

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

/// Publishes at start and whenever the hub's nonce, its challenge request for this node
/// (ConfigMap in the publisher's namespace) or the pods' GPU allocations change, checked
/// every `every` and at once when the challenge ConfigMap changes (watched), until
/// `shutdown` turns true. Errors are logged and retried; while
/// PodResources cannot be read, the last allocations read stay published.
pub async fn run_publisher(p: Publisher, mut shutdown: watch::Receiver<bool>) {
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
    let challenger = Challenger::new(
        crate::cuda::executor_for(inv.simulated),
        inv.gpus.iter().map(|g| g.uuid.clone()).collect(),
    );
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
            tokio::task::spawn_blocking(move || {
                challenger
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .answer(request.as_ref())
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the challenge computation failed");
                None
            })
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::report::verify;

    #[test]
    fn apply_body_carries_labels_and_a_verifiable_report() {
        let inv = Inventory::from_simulate_str(
            "gpus:\n  - {uuid: GPU-a, name: NVIDIA L4, memoryMib: 23034, computeCapability: \"8.9\"}\n",
        )
        .unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let report = signed_report("n1", "abc", &inv, &key).unwrap();
        let body = apply_body("n1", &node_labels(&inv), &report, None);
        assert_eq!(body["metadata"]["labels"]["gpufed.io/gpu.model"], "NVIDIA-L4");
        assert_eq!(body["metadata"]["labels"]["gpufed.io/simulated"], "true");
        let text = body["metadata"]["annotations"][REPORT_ANNOTATION]
            .as_str()
            .unwrap();
        let parsed: SignedReport = serde_json::from_str(text).unwrap();
        let v = verify(&parsed, "abc", None).unwrap();
        assert!(!v.counts_as_verified(), "simulated node");
    }

    #[test]
    fn apply_body_carries_the_pods_allocations_when_read() {
        let inv = Inventory::from_simulate_str(
            "gpus:\n  - {uuid: GPU-a, name: NVIDIA L4, memoryMib: 23034, computeCapability: \"8.9\"}\n",
        )
        .unwrap();
        let report = signed_report("n1", "abc", &inv, &SigningKey::from_bytes(&[7; 32])).unwrap();
        let a = Allocations::from([("t-1/w-0".to_owned(), vec!["GPU-a".to_owned()])]);
        let body = apply_body("n1", &node_labels(&inv), &report, Some(&a));
        let text = body["metadata"]["annotations"][ALLOCATIONS_ANNOTATION]
            .as_str()
            .unwrap();
        assert_eq!(allocations::parse(text).unwrap(), a);
        let none = apply_body("n1", &node_labels(&inv), &report, None);
        assert!(
            none["metadata"]["annotations"]
                .get(ALLOCATIONS_ANNOTATION)
                .is_none()
        );
    }

    #[tokio::test]
    async fn publish_once_applies_labels_and_a_report_for_the_hubs_nonce() {
        use std::sync::{Arc, Mutex};
        type Seen = Arc<Mutex<Vec<(String, String, String, Vec<u8>)>>>;
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let log = log.clone();
            async move {
                let method = req.method().to_string();
                let uri = req.uri().to_string();
                let ctype = req
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body = req.into_body().collect_bytes().await.unwrap().to_vec();
                log.lock().unwrap().push((method, uri, ctype, body));
                let node = serde_json::json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": "n1", "annotations": {NONCE_ANNOTATION: "hub-nonce-1"}}});
                let bytes = serde_json::to_vec(&node).unwrap();
                Ok::<_, std::convert::Infallible>(http::Response::new(kube::client::Body::from(bytes)))
            }
        });
        let api: Api<Node> = Api::all(kube::Client::new(svc, "default"));
        let inv = Inventory::from_simulate_str(
            "gpus:\n  - {uuid: GPU-a, name: NVIDIA L4, memoryMib: 23034, computeCapability: \"8.9\"}\n",
        )
        .unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        assert_eq!(publish_once(&api, "n1", &inv, &key).await.unwrap(), "hub-nonce-1");
        let seen = seen.lock().unwrap();
        let (method, uri, ctype, body) = seen.iter().find(|(m, ..)| m == "PATCH").unwrap();
        assert_eq!(method, "PATCH");
        assert!(uri.starts_with("/api/v1/nodes/n1?"), "{uri}");
        assert!(
            uri.contains("fieldManager=gpufed-device-plugin") && uri.contains("force=true"),
            "{uri}"
        );
        assert_eq!(ctype, "application/apply-patch+yaml");
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            body["metadata"]["labels"]["gpufed.io/gpu.compute-capability"],
            "8.9"
        );
        let report: SignedReport = serde_json::from_str(
            body["metadata"]["annotations"][REPORT_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert!(verify(&report, "hub-nonce-1", None).is_ok());
    }
}
