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
//! out of the answer (the hub reports it not answered).

use gpufed_trust::protocol::{ChallengeAnswer, ChallengeRequest, Computed, answer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use crate::executor::{Executor, host_bytes};
use crate::memory::{Cgroup, answering, mib};

/// ConfigMap (in the plugin's namespace) holding the hub's requests, one key per node.
pub const CHALLENGE_CONFIGMAP: &str = "gpufed-challenge";
/// Answers challenges for one node's GPUs.
pub struct Challenger {
    executor: Executor,
    uuids: Vec<String>,
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
            executor,
            uuids,
            computed: None,
            last: None,
            headroom,
        }
    }

    /// The answer to publish for the current request (`None`: no request seen yet, or this
    /// node cannot run it). Computes at most once per nonce.
    pub fn answer(&mut self, req: Option<&ChallengeRequest>) -> Option<ChallengeAnswer> {
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
            let uuids = self.within_memory(req);
            let computed = compute_all(&self.executor, &uuids, req);
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
    /// The GPUs that answer `req` within the container's memory (all of them on a node
    /// with room, or whose executor is not a device's); says what limit all would need.
    fn within_memory(&self, req: &ChallengeRequest) -> Vec<String> {
        let per_gpu = match &self.executor {
            Executor::Device(_) => host_bytes(&req.params),
            Executor::Cpu | Executor::Unavailable(_) => None,
        };
        let Some(per_gpu) = per_gpu else {
            return self.uuids.clone();
        };
        let room = (self.headroom)();
        let chosen = answering(self.uuids.len(), per_gpu, room, &req.nonce);
        if chosen.len() < self.uuids.len() {
            let all = per_gpu * self.uuids.len() as u64;
            tracing::error!(nonce = %req.nonce, gpus = self.uuids.len(), answering = chosen.len(),
                per_gpu_mib = mib(per_gpu), headroom_mib = room.map(mib),
                "not every GPU fits this challenge in the container's memory limit: the others are \
                 not answered this round (not evidence, but not verified either); raise the memory \
                 limit (Helm: devicePlugin.resources.limits.memory) by at least {} MiB",
                mib(all.saturating_sub(room.unwrap_or(0))));
        }
        chosen.into_iter().map(|k| self.uuids[k].clone()).collect()
    }
}

/// Every GPU's workload at once, one thread each: the hub times the node's answer as a
/// whole (issue → commitment), so GPUs computed one after another would make an honest
/// node with eight GPUs look eight times slower. A GPU that cannot compute is left out.
fn compute_all(executor: &Executor, uuids: &[String], req: &ChallengeRequest) -> Vec<Computed> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = uuids
            .iter()
            .map(|uuid| {
                (
                    uuid,
                    scope.spawn(|| executor.compute(&req.nonce, uuid, &req.params)),
                )
            })
            .collect();
        runs.into_iter()
            .filter_map(|(uuid, run)| {
                let result = run
                    .join()
                    .unwrap_or_else(|_| Err("the computation panicked".to_owned()));
                result
                    .map_err(|e| {
                        tracing::warn!(nonce = %req.nonce, gpu = %uuid, error = %e,
                        "challenge not answered for this GPU")
                    })
                    .ok()
            })
            .collect()
    })
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gpufed_trust::Params;

    fn req(nonce: &str, seed: Option<&str>) -> ChallengeRequest {
        ChallengeRequest {
            nonce: nonce.into(),
            params: Params::u32(8, 4, 4, 3),
            open_seed: seed.map(str::to_owned),
        }
    }

    #[test]
    fn a_simulated_node_commits_then_opens_and_keeps_its_answer() {
        let mut c = Challenger::new(Executor::Cpu, vec!["GPU-a".into(), "GPU-b".into()]);
        assert_eq!(c.answer(None), None);
        let first = c.answer(Some(&req("n1", None))).unwrap();
        assert_eq!(first.commits.len(), 2);
        assert!(first.commits.iter().all(|g| g.kernel_micros > 0));
        let opened = c.answer(Some(&req("n1", Some("s")))).unwrap();
        assert_eq!(opened.commits, first.commits, "computed once per nonce");
        assert_eq!(opened.openings.len(), 2);
        assert_eq!(
            c.answer(None),
            Some(opened),
            "request gone: the last answer stays"
        );
        let next = c.answer(Some(&req("n2", None))).unwrap();
        assert_ne!(next.commits[0].root, first.commits[0].root);
    }

    /// Computes on the CPU, but gets GPU-bad's row 0 wrong.
    struct OneBadGpu;
    struct Opened(bool);

    impl crate::executor::DeviceRunner for OneBadGpu {
        fn open(&self, uuid: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
            Ok(Box::new(Opened(uuid == "GPU-bad")))
        }
    }

    impl crate::executor::OpenDevice for Opened {
        fn product(
            &mut self,
            seeds: gpufed_trust::workload::Seeds,
            p: &Params,
        ) -> Result<crate::executor::DeviceProduct, String> {
            let mut c = gpufed_trust::workload::product(p, &seeds);
            if self.0 {
                crate::executor::flip_low_bit(&mut c, 0);
            }
            Ok(crate::executor::DeviceProduct { c, device_micros: 77 })
        }
    }

    /// Each opened GPU waits (up to 10 s) until all of the node's GPUs are open at once,
    /// and says whether they were.
    struct Rendezvous {
        gpus: usize,
        open: std::sync::Mutex<usize>,
        all_open: std::sync::Condvar,
        met: std::sync::Mutex<Vec<bool>>,
    }

    impl crate::executor::DeviceRunner for Rendezvous {
        fn open(&self, _: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
            let mut open = self.open.lock().unwrap();
            *open += 1;
            self.all_open.notify_all();
            let (open, _) = self
                .all_open
                .wait_timeout_while(open, std::time::Duration::from_secs(10), |n| *n < self.gpus)
                .unwrap();
            self.met.lock().unwrap().push(*open == self.gpus);
            Ok(Box::new(Opened(false)))
        }
    }

    #[test]
    fn a_nodes_gpus_compute_at_the_same_time() {
        let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
        let runner = std::sync::Arc::new(Rendezvous {
            gpus: uuids.len(),
            open: Default::default(),
            all_open: Default::default(),
            met: Default::default(),
        });
        struct Shared(std::sync::Arc<Rendezvous>);
        impl crate::executor::DeviceRunner for Shared {
            fn open(&self, uuid: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
                self.0.open(uuid)
            }
        }
        let got = compute_all(
            &Executor::Device(Box::new(Shared(runner.clone()))),
            &uuids,
            &req("n1", None),
        );
        assert_eq!(got.len(), 4, "every GPU answered");
        assert_eq!(
            *runner.met.lock().unwrap(),
            vec![true; 4],
            "all four GPUs were open at once, not one after another"
        );
    }

    #[test]
    fn a_gpu_that_computes_wrongly_is_left_out_and_the_others_answer() {
        let uuids = vec!["GPU-a".into(), "GPU-bad".into(), "GPU-c".into()];
        let mut c = Challenger::with_headroom(Executor::Device(Box::new(OneBadGpu)), uuids, || None);
        let got = c.answer(Some(&req("n1", None))).unwrap();
        let answered: Vec<&str> = got.commits.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(answered, ["GPU-a", "GPU-c"]);
        assert!(got.commits.iter().all(|g| g.kernel_micros == 77));
        let opened = c.answer(Some(&req("n1", Some("s")))).unwrap();
        assert_eq!(opened.openings.len(), 2);
    }

    #[test]
    fn gpus_beyond_the_containers_memory_wait_for_a_later_round() {
        let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
        // Room for two GPUs' answers to this request, not three.
        let room = || Some(2 * host_bytes(&req("n", None).params).unwrap() + 1);
        let mut c = Challenger::with_headroom(Executor::Device(Box::new(OneBadGpu)), uuids, room);
        let mut seen = std::collections::BTreeSet::new();
        for round in 0..32 {
            let nonce = format!("n{round}");
            let got = c.answer(Some(&req(&nonce, None))).unwrap();
            assert_eq!(got.commits.len(), 2, "round {round}");
            let opened = c.answer(Some(&req(&nonce, Some("s")))).unwrap();
            assert_eq!(opened.openings.len(), 2, "the same two open");
            seen.extend(got.commits.into_iter().map(|g| g.uuid));
        }
        assert_eq!(seen.len(), 4, "each GPU answers in some round: {seen:?}");
        // No limit: all four at once.
        let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
        let mut c = Challenger::with_headroom(Executor::Device(Box::new(OneBadGpu)), uuids, || None);
        assert_eq!(c.answer(Some(&req("n1", None))).unwrap().commits.len(), 4);
    }

    #[test]
    fn a_gpu_node_without_an_executor_and_oversized_work_are_not_answered() {
        let mut gpu = Challenger::new(Executor::Unavailable("no driver".into()), vec!["GPU-a".into()]);
        assert_eq!(gpu.answer(Some(&req("n1", None))), None);
        assert_eq!(
            gpu.answer(Some(&req("n1", Some("s")))),
            None,
            "computed once, still nothing"
        );
        let mut sim = Challenger::new(Executor::Cpu, vec!["GPU-a".into()]);
        let mut big = req("n1", None);
        big.params = Params::u32(65536, 65536, 65536, 3);
        assert_eq!(sim.answer(Some(&big)), None);
    }
}
