//! `member_restarts`' helpers: the hub sampler (attempt 1 only, ever), the unreachable-node
//! step of restart 1, churn, and the speed watch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpufed_api::ComputeJob;
use gpufed_e2e::Federation;
use gpufed_operator::job::names::LABEL_JOB_NAME;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

use crate::opsupport::{job, phase};

pub const MINUTE: Duration = Duration::from_secs(60);
pub const MANAGED: &str = "app.kubernetes.io/managed-by=gpufed";
/// The member whose API server restarts.
pub const RESTARTED: &str = "provider-a";

/// What the background sampler saw.
#[derive(Default)]
pub struct Seen {
    pub violations: Vec<String>,
    /// Job name → the provider of its attempt 1.
    pub first_provider: BTreeMap<String, String>,
    /// Jobs seen waiting for an unreachable node (`placement.nodeUnreachableSince`).
    pub waited: std::collections::BTreeSet<String>,
    pub samples: u64,
}

pub type Shared = Arc<Mutex<Seen>>;

/// One job status: attempt 1 only, ever, on one provider.
pub fn check_job(seen: &Shared, j: &ComputeJob) {
    let name = j.metadata.name.clone().unwrap_or_default();
    let Some(st) = j.status.as_ref() else { return };
    let Ok(mut s) = seen.lock() else { return };
    let mut bad = Vec::new();
    if let Some(p) = &st.placement {
        if p.attempt != 1 {
            bad.push(format!(
                "{name}: attempt {} on {} (failed over; attempts {:?})",
                p.attempt,
                p.provider,
                st.attempts
                    .iter()
                    .map(|a| (a.attempt, a.provider.clone(), a.message.clone()))
                    .collect::<Vec<_>>()
            ));
        }
        if p.node_unreachable_since.is_some() {
            s.waited.insert(name.clone());
        }
        let first = s
            .first_provider
            .entry(name.clone())
            .or_insert_with(|| p.provider.clone());
        if *first != p.provider {
            bad.push(format!("{name}: moved from {first} to {}", p.provider));
        }
    }
    if st.attempts.iter().any(|a| a.attempt != 1) {
        bad.push(format!(
            "{name}: attempt records {:?}",
            st.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>()
        ));
    }
    for b in bad {
        if s.violations.len() < 50 {
            eprintln!("VIOLATION: {b}");
        }
        s.violations.push(b);
    }
    s.samples += 1;
}

/// Waits until the member marks all of `nodes` `Unknown` and the hub shows a job waiting
/// for one, then lets their kubelets heartbeat again; returns the seconds that took.
pub async fn unknown_nodes_are_waited_for(
    fed: &Federation,
    member: &Client,
    nodes: &[String],
    seen: &Shared,
) -> f64 {
    let t = Instant::now();
    let api = Api::<Node>::all(member.clone());
    gpufed_e2e::wait::until("provider-a's nodes Unknown", 2 * MINUTE, || async {
        for n in nodes {
            let conditions = api.get(n).await?.status.and_then(|s| s.conditions);
            let unknown = conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown");
            if !unknown {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("the node controller marks silent nodes Unknown: {e}"));
    gpufed_e2e::wait::until("a job waiting for its unreachable node", MINUTE, || async {
        Ok(seen.lock().ok().filter(|s| !s.waited.is_empty()).map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("the hub waits for unreachable nodes: {e}"));
    let sim = fed.simulator(RESTARTED).expect("simulator");
    for n in nodes {
        sim.set_node_ready(n, true).await.expect("heartbeats again");
    }
    t.elapsed().as_secs_f64()
}

pub fn sample_hub(hub: Client, ns: String, seen: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let jobs: Api<ComputeJob> = Api::namespaced(hub, &ns);
        loop {
            if let Ok(list) = jobs.list(&ListParams::default()).await {
                for j in &list.items {
                    check_job(&seen, j);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// A job preferring `provider` (or, `pinned`, allowed only there).
pub fn job_on(name: &str, provider: &str, pinned: bool, run_secs: u32) -> serde_json::Value {
    let mut j = job(name, 1, 1, serde_json::json!({}), "1.00", run_secs);
    let key = if pinned { "providers" } else { "preferredProviders" };
    j["spec"]["placement"][key] = serde_json::json!([provider]);
    j
}

/// Writes `n` ConfigMaps in the member, so the revision moves well past what any watch
/// last saw.
pub async fn churn(member: &Client, ns: &str, round: u32, n: u32) {
    let api: Api<ConfigMap> = Api::namespaced(member.clone(), ns);
    for i in 0..n {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("churn-{round}-{i}")}, "data": {"i": i.to_string()}
        }))
        .expect("ConfigMap");
        api.create(&PostParams::default(), &cm).await.expect("churn");
    }
}

/// Deletes a job after a second (the member's API server is going down meanwhile).
pub fn delete_soon(hub: &Client, ns: &str, name: &str) -> tokio::task::JoinHandle<()> {
    let api: Api<ComputeJob> = Api::namespaced(hub.clone(), ns);
    let name = name.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        api.delete(&name, &DeleteParams::default()).await.expect("delete");
    })
}

pub fn running(j: &ComputeJob) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .is_some_and(|p| p.running_time.is_some())
}

/// When each speed job's pod (on provider-a) and hub status were first seen Running and
/// Succeeded: name → [pod Running, job Running, pod Succeeded, job Succeeded].
pub async fn watch_speed(
    hub: &Client,
    member: &Client,
    ns: &str,
    names: &[String],
) -> BTreeMap<String, [Instant; 4]> {
    let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), ns);
    let pods: Api<Pod> = Api::all(member.clone());
    let mut seen: BTreeMap<String, [Option<Instant>; 4]> = BTreeMap::new();
    let deadline = Instant::now() + 2 * MINUTE;
    loop {
        let now = Instant::now();
        if let Ok(list) = pods.list(&ListParams::default().labels(MANAGED)).await {
            for p in &list.items {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let Some(name) = labels.get(LABEL_JOB_NAME).filter(|n| names.contains(n)) else {
                    continue;
                };
                let pod_phase = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default();
                let slot = seen.entry(name.clone()).or_default();
                if pod_phase == "Running" || pod_phase == "Succeeded" {
                    slot[0].get_or_insert(now);
                }
                if pod_phase == "Succeeded" {
                    slot[2].get_or_insert(now);
                }
            }
        }
        if let Ok(list) = jobs.list(&ListParams::default()).await {
            for j in list
                .items
                .iter()
                .filter(|j| names.contains(&j.metadata.name.clone().unwrap_or_default()))
            {
                let slot = seen
                    .entry(j.metadata.name.clone().unwrap_or_default())
                    .or_default();
                if running(j) {
                    slot[1].get_or_insert(now);
                }
                if phase(j) == "Succeeded" {
                    slot[3].get_or_insert(now);
                }
            }
        }
        let done: BTreeMap<String, [Instant; 4]> = seen
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), [s[0]?, s[1]?, s[2]?, s[3]?])))
            .collect();
        if done.len() == names.len() {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "speed jobs did not all finish: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
