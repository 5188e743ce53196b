#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

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

/// Computes on the CPU; opening GPU-hung blocks for good, as a CUDA call can on a GPU that
/// fell off the bus.
struct HangsOn(&'static str);
struct OnCpu;

impl crate::executor::DeviceRunner for HangsOn {
    fn open(&self, uuid: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
        if uuid == self.0 {
            // Parked for good (a spurious wakeup parks again).
            loop {
                std::thread::park();
            }
        }
        Ok(Box::new(OnCpu))
    }
}

impl crate::executor::OpenDevice for OnCpu {
    fn product(
        &mut self,
        seeds: gpufed_trust::workload::Seeds,
        p: &gpufed_trust::Params,
    ) -> Result<crate::executor::DeviceProduct, String> {
        let c = gpufed_trust::workload::product(p, &seeds);
        Ok(crate::executor::DeviceProduct { c, device_micros: 5 })
    }
}

/// A fake API server for the publisher: the Node (with the hub's nonce, which the test
/// changes), this node's challenge request, and every PATCH of the Node recorded; anything
/// else (the challenge ConfigMap's watch) is a 404.
fn fake_api(nonce: Arc<Mutex<String>>, patches: Arc<Mutex<Vec<serde_json::Value>>>) -> kube::Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (nonce, patches) = (nonce.clone(), patches.clone());
        async move {
            let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
            let body = req.into_body().collect_bytes().await.unwrap().to_vec();
            let node = || {
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
                    "annotations": {NONCE_ANNOTATION: nonce.lock().unwrap().clone()}}})
            };
            let (status, json) = match (method.as_str(), path.as_str()) {
                ("GET", "/api/v1/nodes/n1") => (200, node()),
                ("PATCH", "/api/v1/nodes/n1") => {
                    patches
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    (200, node())
                }
                ("GET", "/api/v1/namespaces/default/configmaps/gpufed-challenge") => {
                    let request = gpufed_trust::protocol::ChallengeRequest {
                        nonce: "challenge-1".into(),
                        params: gpufed_trust::Params::u32(8, 4, 4, 3),
                        open_seed: None,
                    };
                    let data = serde_json::to_string(&request).unwrap();
                    (
                        200,
                        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "gpufed-challenge", "namespace": "default"},
                            "data": {"n1": data}}),
                    )
                }
                _ => (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            };
            let mut resp = http::Response::new(kube::client::Body::from(serde_json::to_vec(&json).unwrap()));
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    kube::Client::new(svc, "default")
}

/// The published reports' (nonce, GPUs answering the challenge).
fn published(patches: &Mutex<Vec<serde_json::Value>>) -> Vec<(String, Vec<String>)> {
    patches
        .lock()
        .unwrap()
        .iter()
        .map(|body| {
            let text = body["metadata"]["annotations"][REPORT_ANNOTATION]
                .as_str()
                .unwrap();
            let report: SignedReport = serde_json::from_str(text).unwrap();
            let gpus = report
                .report
                .challenge
                .map(|c| c.commits.into_iter().map(|g| g.uuid).collect())
                .unwrap_or_default();
            (report.report.nonce, gpus)
        })
        .collect()
}

/// A challenge computation that hangs on one GPU used to stop the publisher for good (it
/// awaited the blocking task unbounded): no report, labels or allocations ever again. Now
/// that GPU is left out after the bound, and the publisher goes on publishing.
#[test]
fn a_challenge_hung_on_one_gpu_does_not_stop_the_publisher() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(hung_gpu_then_two_reports())
    }));
    // A blocking task that never ends (what the old publisher left behind) must fail this
    // test, not hang it: dropping a runtime waits for its blocking tasks.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn hung_gpu_then_two_reports() {
    let nonce = Arc::new(Mutex::new("hub-nonce-1".to_owned()));
    let patches = Arc::new(Mutex::new(Vec::new()));
    let inv = Inventory::from_simulate_str(
        "gpus:\n  - {uuid: GPU-a, name: NVIDIA L4, memoryMib: 23034, computeCapability: \"8.9\"}\n  - {uuid: GPU-hung, name: NVIDIA L4, memoryMib: 23034, computeCapability: \"8.9\"}\n",
    )
    .unwrap();
    let publisher = Publisher {
        client: fake_api(nonce.clone(), patches.clone()),
        node: "n1".into(),
        namespace: "default".into(),
        inventory: inv,
        key: SigningKey::from_bytes(&[3; 32]),
        every: Duration::from_millis(100),
        pod_resources: None,
    };
    let setup = ChallengeSetup {
        executor: Executor::Device(Box::new(HangsOn("GPU-hung"))),
        timeout: Duration::from_millis(500),
        health: None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_publisher_with(publisher, setup, stop_rx));
    let until = |want: &'static str| {
        let patches = patches.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let seen = published(&patches);
                if let Some(p) = seen.iter().find(|(n, _)| n == want) {
                    return p.clone();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no report for {want}: {seen:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (_, gpus) = until("hub-nonce-1").await;
    assert_eq!(gpus, ["GPU-a"], "the hung GPU left out, the other answered");
    // The hub asks again: the publisher is still running, and answers.
    *nonce.lock().unwrap() = "hub-nonce-2".to_owned();
    let (_, gpus) = until("hub-nonce-2").await;
    assert_eq!(gpus, ["GPU-a"]);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the publisher stops")
        .unwrap();
}
