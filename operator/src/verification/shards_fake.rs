//! An API server holding the ConfigMaps of one namespace in memory, for the shards' tests:
//! get, create, replace (a stale `resourceVersion` is a conflict) and delete (a UID
//! precondition is checked), over HTTP as a kube client speaks it. An empty `data` is
//! left out of what it keeps, as the real API server does (Go's `omitempty`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;

/// The namespace it serves.
pub const NS: &str = "gpufed-system";

/// What the server holds, shared with the test.
#[derive(Clone, Default)]
pub struct Held {
    /// ConfigMaps by name.
    pub maps: Arc<Mutex<BTreeMap<String, ConfigMap>>>,
    /// Every DELETE fails with 500 while set (an operator that dies before deleting).
    pub fail_deletes: Arc<AtomicBool>,
    versions: Arc<AtomicU64>,
}

impl Held {
    /// Names held, in order.
    pub fn names(&self) -> Vec<String> {
        self.maps.lock().unwrap().keys().cloned().collect()
    }

    /// ConfigMap `name`.
    pub fn get(&self, name: &str) -> Option<ConfigMap> {
        self.maps.lock().unwrap().get(name).cloned()
    }

    fn answer(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let prefix = format!("/api/v1/namespaces/{NS}/configmaps");
        let Some(rest) = path.strip_prefix(&prefix) else {
            return status(404, "NotFound");
        };
        let name = rest.strip_prefix('/').filter(|n| !n.is_empty());
        let mut maps = self.maps.lock().unwrap();
        let version = || self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        match (method, name) {
            ("GET", Some(n)) => match maps.get(n) {
                Some(cm) => (200, serde_json::to_string(cm).unwrap()),
                None => status(404, "NotFound"),
            },
            ("POST", None) => {
                let mut cm = stored(body);
                let n = cm.metadata.name.clone().unwrap_or_default();
                if maps.contains_key(&n) {
                    return status(409, "AlreadyExists");
                }
                let v = version();
                cm.metadata.uid = Some(format!("uid-{v}"));
                cm.metadata.resource_version = Some(v.to_string());
                cm.metadata.namespace = Some(NS.to_owned());
                maps.insert(n, cm.clone());
                (201, serde_json::to_string(&cm).unwrap())
            }
            ("PUT", Some(n)) => {
                let mut cm = stored(body);
                let Some(held) = maps.get(n) else {
                    return status(404, "NotFound");
                };
                if cm.metadata.resource_version != held.metadata.resource_version {
                    return status(409, "Conflict");
                }
                cm.metadata.uid.clone_from(&held.metadata.uid);
                cm.metadata.resource_version = Some(version().to_string());
                maps.insert(n.to_owned(), cm.clone());
                (200, serde_json::to_string(&cm).unwrap())
            }
            ("DELETE", Some(n)) => {
                if self.fail_deletes.load(Ordering::SeqCst) {
                    return status(500, "InternalError");
                }
                let Some(held) = maps.get(n) else {
                    return status(404, "NotFound");
                };
                let options: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                let uid = options.pointer("/preconditions/uid").and_then(|u| u.as_str());
                if uid.is_some_and(|u| Some(u) != held.metadata.uid.as_deref()) {
                    return status(409, "Conflict");
                }
                let cm = maps.remove(n).unwrap();
                (200, serde_json::to_string(&cm).unwrap())
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }
}

/// The ConfigMap a request's `body` sends, as the API server keeps it: an empty `data`
/// or `binaryData` is left out (a GET returns none).
fn stored(body: &str) -> ConfigMap {
    let mut cm: ConfigMap = serde_json::from_str(body).unwrap();
    if cm.data.as_ref().is_some_and(BTreeMap::is_empty) {
        cm.data = None;
    }
    if cm.binary_data.as_ref().is_some_and(BTreeMap::is_empty) {
        cm.binary_data = None;
    }
    cm
}

fn status(code: u16, reason: &str) -> (u16, String) {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
        "reason": reason, "message": reason,
    });
    (code, body.to_string())
}

/// Starts the server; a client of it, and what it holds.
pub async fn start() -> (Client, Held) {
    let held = Held::default();
    let serving = held.clone();
    let addr = crate::test_http::serve(move |method, target, body| {
        let path = target.split('?').next().unwrap_or_default();
        serving.answer(method, path, body)
    })
    .await;
    (crate::test_http::client(addr), held)
}
