//! The node's side of the hub's compute challenge (docs/trust.md).
//!
//! The hub writes a request for this node into the ConfigMap [`CHALLENGE_CONFIGMAP`] of
//! the plugin's namespace (key = node name). The plugin computes the workload once per
//! nonce, keeps the row commitments, and answers inside its signed report: first the
//! commitments, then — once the hub has added its open seed — the openings.
//!
//! Executors ([`crate::executor`]): a `--simulate` node computes on the CPU (the reference
//! implementation; its report says `simulated`, so the hub checks the answer but never
//! counts it verified); an NVML node computes on its GPUs with CUDA ([`crate::cuda`]) and
//! checks sampled rows on its CPU before answering. A GPU it cannot compute for is left
//! out of the answer (the hub reports it not answered), and so is a GPU whose computation
//! does not end within [`CHALLENGE_TIMEOUT`]: a CUDA call on a GPU that fell off the bus
//! can hang for good, and must not hang the answer of the others (nor the node's
//! publisher, which waits for the answer).

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use gpufed_trust::protocol::{ChallengeAnswer, ChallengeRequest, Computed, answer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use crate::executor::{Executor, host_bytes};
use crate::memory::{Cgroup, answering, mib};

/// ConfigMap (in the plugin's namespace) holding the hub's requests, one key per node.
pub const CHALLENGE_CONFIGMAP: &str = "gpufed-challenge";
/// How long one GPU's challenge computation may take before it is left out of the answer:
/// the hub's default `--challenge-timeout` (2 minutes), after which the hub counts the GPU
/// not answered anyway. A GPU left out this way is not challenged again until that
/// computation returns (its thread is abandoned, not killed: a hung CUDA call cannot be).
pub const CHALLENGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Answers challenges for one node's GPUs.
pub struct Challenger {
    executor: Arc<Executor>,
    uuids: Vec<String>,
    timeout: Duration,
    /// GPUs whose computation outlived `timeout`, with its thread: skipped until it ends.
    stuck: BTreeMap<String, std::thread::JoinHandle<()>>,
    computed: Option<(String, Vec<Computed>)>,
    last: Option<ChallengeAnswer>,
    /// What a challenge may take of the container's memory now (`None`: no limit).
    headroom: fn() -> Option<u64>,
}

impl std::fmt::Debug for Challenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenger")
            .field("executor", &self.executor)
            .field("uuids", &self.uuids)
            .finish_non_exhaustive()
    }
}

impl Challenger {
    /// For a node with these GPUs, within this container's cgroup memory limit.
    pub fn new(executor: Executor, uuids: Vec<String>) -> Self {
        Self::with_headroom(executor, uuids, || Cgroup::current().map(|c| c.headroom()))
    }

    /// The same, with the memory a challenge may take from `headroom` (tests).
    pub fn with_headroom(executor: Executor, uuids: Vec<String>, headroom: fn() -> Option<u64>) -> Self {
        Self {
            executor: Arc::new(executor),
            uuids,
            timeout: CHALLENGE_TIMEOUT,
            stuck: BTreeMap::new(),
            computed: None,
            last: None,
            headroom,
        }
    }

    /// The same, with another bound on one GPU's computation than [`CHALLENGE_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The answer to publish for the current request (`None`: no request seen yet, or this
    /// node cannot run it). Computes at most once per nonce.
    pub fn answer(&mut self, req: Option<&ChallengeRequest>) -> Option<ChallengeAnswer> {
        self.answer_among(req, |_| true)
    }

    /// Like [`Challenger::answer`], computing only for the GPUs `eligible` accepts (the
    /// plugin passes the healthy ones: a GPU kubelet may not use is not worth a CUDA call
    /// that can hang on it) and not stuck in an earlier computation.
    pub fn answer_among(
        &mut self,
        req: Option<&ChallengeRequest>,
        eligible: impl Fn(&str) -> bool,
    ) -> Option<ChallengeAnswer> {
        let Some(req) = req else {
            return self.last.clone();
        };
        if let Err(e) = req.params.validate() {
            tracing::warn!(nonce = %req.nonce, error = %e, "challenge request refused");
            return self.last.clone();
        }
        if self.computed.as_ref().map(|(n, _)| n) != Some(&req.nonce) {
            // The previous nonce's trees go before the new ones are built, not after.
            self.computed = None;
            self.stuck.retain(|_, run| !run.is_finished());
            let candidates: Vec<String> = self
                .uuids
                .iter()
                .filter(|u| !self.stuck.contains_key(*u) && eligible(u))
                .cloned()
                .collect();
            if candidates.len() < self.uuids.len() {
                tracing::warn!(nonce = %req.nonce, gpus = self.uuids.len(), computing = candidates.len(),
                    stuck = ?self.stuck.keys().collect::<Vec<_>>(),
                    "challenge not computed for unhealthy GPUs or GPUs still stuck in an earlier one");
            }
            let uuids = self.within_memory(req, &candidates);
            let computed = compute_all(&self.executor, &uuids, req, self.timeout, &mut self.stuck);
            tracing::info!(nonce = %req.nonce, gpus = self.uuids.len(), answered = computed.len(),
                executor = ?self.executor, "challenge computed");
            self.computed = Some((req.nonce.clone(), computed));
        }
        let computed = self
            .computed
            .as_ref()
            .map(|(_, c)| c.as_slice())
            .unwrap_or_default();
        if computed.is_empty() {
            return None;
        }
        self.last = Some(answer(req, computed));
        self.last.clone()
    }
}

impl Challenger {
    /// Those of `uuids` that answer `req` within the container's memory (all of them on a
    /// node with room, or whose executor is not a device's); says what limit all would need.
    fn within_memory(&self, req: &ChallengeRequest, uuids: &[String]) -> Vec<String> {
        let per_gpu = match &*self.executor {
            Executor::Device(_) => host_bytes(&req.params),
            Executor::Cpu | Executor::Unavailable(_) => None,
        };
        let Some(per_gpu) = per_gpu else {
            return uuids.to_vec();
        };
        let room = (self.headroom)();
        let chosen = answering(uuids.len(), per_gpu, room, &req.nonce);
        if chosen.len() < uuids.len() {
            let all = per_gpu * uuids.len() as u64;
            tracing::error!(nonce = %req.nonce, gpus = uuids.len(), answering = chosen.len(),
                per_gpu_mib = mib(per_gpu), headroom_mib = room.map(mib),
                "not every GPU fits this challenge in the container's memory limit: the others are \
                 not answered this round (not evidence, but not verified either); raise the memory \
                 limit (Helm: devicePlugin.resources.limits.memory) by at least {} MiB",
                mib(all.saturating_sub(room.unwrap_or(0))));
        }
        chosen.into_iter().map(|k| uuids[k].clone()).collect()
    }
}

/// Every GPU's workload at once, one thread each: the hub times the node's answer as a
/// whole (issue → commitment), so GPUs computed one after another would make an honest
/// node with eight GPUs look eight times slower. A GPU that cannot compute is left out;
/// so is one still computing after `timeout`, whose thread goes into `stuck` (threads
/// that are not scoped, so that one can be abandoned). In the order of `uuids`.
fn compute_all(
    executor: &Arc<Executor>,
    uuids: &[String],
    req: &ChallengeRequest,
    timeout: Duration,
    stuck: &mut BTreeMap<String, std::thread::JoinHandle<()>>,
) -> Vec<Computed> {
    let (tx, rx) = mpsc::channel();
    let mut running: BTreeMap<String, std::thread::JoinHandle<()>> = uuids
        .iter()
        .map(|uuid| {
            let (executor, tx, gpu, nonce, params) = (
                executor.clone(),
                tx.clone(),
                uuid.clone(),
                req.nonce.clone(),
                req.params,
            );
            let run = std::thread::spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    executor.compute(&nonce, &gpu, &params)
                }))
                .unwrap_or_else(|_| Err("the computation panicked".to_owned()));
                let _ = tx.send((gpu, result));
            });
            (uuid.clone(), run)
        })
        .collect();
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut done = BTreeMap::new();
    while !running.is_empty() {
        let Ok((uuid, result)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        if let Some(run) = running.remove(&uuid) {
            let _ = run.join();
        }
        done.insert(uuid, result);
    }
    for (uuid, run) in running {
        tracing::error!(nonce = %req.nonce, gpu = %uuid, timeout_secs = timeout.as_secs(),
            "challenge computation on this GPU did not end in time (a hung CUDA call: has the GPU \
             fallen off the bus?): not answered, and not challenged again until it ends");
        stuck.insert(uuid, run);
    }
    uuids
        .iter()
        .filter_map(|uuid| {
            done.remove(uuid)?
                .map_err(|e| {
                    tracing::warn!(nonce = %req.nonce, gpu = %uuid, error = %e,
                        "challenge not answered for this GPU")
                })
                .ok()
        })
        .collect()
}

/// Wakes `wake` whenever this node's request in the challenge ConfigMap changes, until
/// the task is dropped. The hub's clock runs from the moment it writes a request: a node
/// that only polled every `--publish-interval-secs` would have to be granted that much
/// slack, and the slack is exactly what a node can spend computing on slower hardware
/// (docs/trust.md, "What the hub's clock proves"). A watch of that one object by name
/// (RBAC: `list`/`watch` with `resourceNames`, which a `metadata.name` field selector
/// satisfies) costs the API server nothing between challenges, and other nodes' requests
/// in the same object do not wake this one. Errors are retried with backoff; the
/// publisher's polling goes on regardless.
pub async fn watch_requests(
    client: Client,
    namespace: String,
    node: String,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={CHALLENGE_CONFIGMAP}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut seen: Option<String> = None;
    while let Some(event) = events.next().await {
        let mine = match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                cm.data.and_then(|mut d| d.remove(&node))
            }
            Ok(watcher::Event::Delete(_)) => None,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "watching the challenge ConfigMap; polling meanwhile");
                continue;
            }
        };
        if mine != seen {
            seen = mine;
            wake.notify_one();
        }
    }
}

/// This node's request in the ConfigMap, if any (a missing or unreadable one is `None`).
pub async fn read_request(client: &Client, namespace: &str, node: &str) -> Option<ChallengeRequest> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(CHALLENGE_CONFIGMAP).await {
        Ok(cm) => {
            let text = cm?.data?.remove(node)?;
            serde_json::from_str(&text)
                .map_err(|e| tracing::warn!(error = %e, "unreadable challenge request"))
                .ok()
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the challenge ConfigMap");
            None
        }
    }
}

#[cfg(test)]
#[path = "challenge_tests.rs"]
mod tests;
