//! An API server holding the ConfigMaps of one namespace in memory, for the shards' tests:
//! get, create, replace (a stale `resourceVersion` is a conflict) and delete (a UID
//! precondition is checked), over HTTP as a kube client speaks it. An empty `data` is
//! left out of what it keeps, as the real API server does (Go's `omitempty`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = held.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let held = serving.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&data[..head_end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while data.len() < head_end + length {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&data[head_end..head_end + length]).to_string();
                let mut line = head.split_whitespace();
                let method = line.next().unwrap_or_default().to_owned();
                let target = line.next().unwrap_or_default();
                let path = target.split('?').next().unwrap_or_default();
                let (code, answer) = held.answer(&method, path, &body);
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let client = Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    (client, held)
}
