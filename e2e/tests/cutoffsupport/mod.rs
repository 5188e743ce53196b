//! The member-cutoff test's background sampler: hub ComputeJob and GpuProvider statuses
//! every 500 ms and a watch of gpufed pods on the reachable members, each sample checked
//! against the invariants (one live attempt per job, attempts only move forward, jobs on
//! reachable members keep attempt 1) and recorded for the test's final assertions; and
//! the small probes the test uses (provider Ready, a job's live pods, the thaw guard).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_api::job_status::JobPhase;
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_e2e::process::ProcessRecord;
use gpufed_operator::job::names::{LABEL_ATTEMPT, LABEL_JOB_UID};
use gpufed_operator::time::parse as parse_time;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rustix::process::Signal;

/// Labels of every object gpufed puts on a member.
pub const MANAGED: &str = "app.kubernetes.io/managed-by=gpufed";
/// The member that is cut off.
pub const CUT: &str = "provider-a";

/// What the background sampler saw.
#[derive(Default)]
pub struct Seen {
    /// Every invariant broken, in words.
    pub violations: Vec<String>,
    /// Job name → attempt → provider, from `status.placement`.
    pub placements: BTreeMap<String, BTreeMap<u32, String>>,
    /// Job name → when its attempt 2 was first seen placed.
    pub attempt2_at: BTreeMap<String, Instant>,
    /// provider-a's `lastHeartbeatTime` values (Unix s) with when each was first seen.
    pub heartbeats: Vec<(i64, Instant)>,
    /// Per reachable member: pod name → (job uid, attempt, live = neither deleted nor
    /// terminating).
    pub pods: BTreeMap<String, BTreeMap<String, (String, u32, bool)>>,
    /// Per reachable member: job uid → attempts seen there.
    pub pod_attempts: BTreeMap<String, BTreeMap<String, BTreeSet<u32>>>,
    /// Hub samples taken.
    pub samples: u64,
}

pub type Shared = Arc<Mutex<Seen>>;

fn violation(seen: &Shared, what: String) {
    if let Ok(mut s) = seen.lock() {
        if s.violations.len() < 50 {
            eprintln!("VIOLATION: {what}");
        }
        s.violations.push(what);
    }
}

/// Checks one ComputeJob status: at most one live attempt, newer than every finished one;
/// jobs that started on a reachable member keep attempt 1.
fn check_job(seen: &Shared, job: &ComputeJob) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let Some(st) = job.status.as_ref() else {
        return;
    };
    let numbers: Vec<u32> = st.attempts.iter().map(|a| a.attempt).collect();
    if numbers.windows(2).any(|w| w[0] >= w[1]) {
        violation(
            seen,
            format!("{name}: attempt records out of order or repeated: {numbers:?}"),
        );
    }
    let mut bad = Vec::new();
    let finished = matches!(st.phase, Some(JobPhase::Succeeded | JobPhase::Failed));
    if finished {
        // The placement stays as the record of where the last attempt ran.
        if let Some(p) = &st.placement
            && numbers.last() != Some(&p.attempt)
        {
            bad.push(format!(
                "{name}: finished with placement attempt {} but attempts {numbers:?}",
                p.attempt
            ));
        }
    } else if let Some(p) = &st.placement {
        if numbers.iter().any(|n| *n >= p.attempt) {
            bad.push(format!(
                "{name}: live attempt {} on {} while finished attempts are {numbers:?} (two live at once)",
                p.attempt, p.provider
            ));
        }
        if (p.attempt as usize) != numbers.len() + 1 {
            bad.push(format!(
                "{name}: live attempt {} but {} finished ones",
                p.attempt,
                numbers.len()
            ));
        }
        if p.attempt >= 2 && !numbers.contains(&(p.attempt - 1)) {
            bad.push(format!(
                "{name}: attempt {} live before attempt {} ended",
                p.attempt,
                p.attempt - 1
            ));
        }
    }
    let Ok(mut s) = seen.lock() else { return };
    s.violations
        .extend(bad.into_iter().inspect(|b| eprintln!("VIOLATION: {b}")));
    let max_before = s
        .placements
        .get(&name)
        .and_then(|m| m.keys().next_back().copied())
        .unwrap_or(0);
    let now_max = st
        .placement
        .as_ref()
        .map(|p| p.attempt)
        .into_iter()
        .chain(numbers.iter().copied())
        .max()
        .unwrap_or(0);
    if now_max < max_before {
        s.violations.push(format!(
            "{name}: attempt went back from {max_before} to {now_max}"
        ));
    }
    if let Some(p) = &st.placement {
        let first_provider = s
            .placements
            .get(&name)
            .and_then(|m| m.get(&1))
            .cloned()
            .unwrap_or_else(|| p.provider.clone());
        if p.attempt != 1 && first_provider != CUT {
            s.violations.push(format!(
                "{name}: started on {first_provider} (reachable) but now runs attempt {} on {}",
                p.attempt, p.provider
            ));
        }
        let previous = s
            .placements
            .entry(name.clone())
            .or_default()
            .insert(p.attempt, p.provider.clone());
        if previous.as_ref().is_some_and(|prev| *prev != p.provider) {
            s.violations.push(format!(
                "{name}: attempt {} moved from {previous:?} to {}",
                p.attempt, p.provider
            ));
        }
        if p.attempt == 2 {
            s.attempt2_at.entry(name.clone()).or_insert_with(Instant::now);
        }
    }
}

/// Samples the hub every 500 ms: job statuses and provider-a's heartbeat.
pub fn sample_hub(hub: Client, ns: String, seen: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), &ns);
        let providers: Api<GpuProvider> = Api::all(hub);
        loop {
            if let Ok(list) = jobs.list(&ListParams::default()).await {
                for j in &list.items {
                    check_job(&seen, j);
                }
                if let Ok(mut s) = seen.lock() {
                    s.samples += 1;
                }
            }
            if let Ok(Some(p)) = providers.get_opt(CUT).await
                && let Some(hb) = p
                    .status
                    .as_ref()
                    .and_then(|s| s.last_heartbeat_time.as_deref())
                    .and_then(parse_time)
                && let Ok(mut s) = seen.lock()
                && s.heartbeats.last().is_none_or(|(last, _)| *last != hb)
            {
                s.heartbeats.push((hb, Instant::now()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Watches gpufed pods on a reachable member: a job may have live pods (neither deleted
/// nor terminating) of one attempt only, at every moment.
pub fn watch_pods(member: &'static str, client: Client, seen: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api = Api::<Pod>::all(client);
        let mut stream = watcher(api, watcher::Config::default().labels(MANAGED))
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            let (pod, deleted) = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                Ok(watcher::Event::Delete(p)) => (p, true),
                _ => continue,
            };
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let (Some(uid), Some(attempt)) = (labels.get(LABEL_JOB_UID), labels.get(LABEL_ATTEMPT)) else {
                continue;
            };
            let attempt: u32 = attempt.parse().unwrap_or(u32::MAX);
            let live = !deleted && pod.metadata.deletion_timestamp.is_none();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Ok(mut s) = seen.lock() else { continue };
            s.pod_attempts
                .entry(member.to_owned())
                .or_default()
                .entry(uid.clone())
                .or_default()
                .insert(attempt);
            let pods = s.pods.entry(member.to_owned()).or_default();
            pods.insert(name, (uid.clone(), attempt, live));
            let live_attempts: BTreeSet<u32> = pods
                .values()
                .filter(|(u, _, l)| u == uid && *l)
                .map(|(_, a, _)| *a)
                .collect();
            if live_attempts.len() > 1 {
                let v = format!("{member}: job {uid} has live pods of attempts {live_attempts:?}");
                eprintln!("VIOLATION: {v}");
                s.violations.push(v);
            }
        }
    })
}

/// Thaws the frozen API server however the test ends (a stopped process would not even
/// take the harness' SIGTERM).
pub struct Thaw(pub ProcessRecord);

impl Drop for Thaw {
    fn drop(&mut self) {
        self.0.signal(Signal::CONT);
    }
}

pub async fn provider_ready(hub: &Client, name: &str) -> bool {
    Api::<GpuProvider>::all(hub.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.status)
        .is_some_and(|s| gpufed_api::conditions::is_true(&s.conditions, "Ready"))
}

/// Pods of `uid`'s `attempt` on a member that are neither deleted nor terminating; `None`
/// while the member does not answer.
pub async fn live_pods(member: &Client, uid: &str, attempt: u32) -> Option<usize> {
    let lp = ListParams::default().labels(&format!("{LABEL_JOB_UID}={uid},{LABEL_ATTEMPT}={attempt}"));
    let list = tokio::time::timeout(Duration::from_secs(5), Api::<Pod>::all(member.clone()).list(&lp))
        .await
        .ok()?
        .ok()?;
    Some(
        list.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count(),
    )
}

/// The `abandoned-job` evidence documents recorded against each provider (operator
/// namespace `gpufed-system`), as the (job UID, attempt) pairs they name, waiting up to a
/// minute for one against `cut` naming attempts of `expected` only (the first document of
/// a cooldown names the attempts lost by then: the jobs of one loss end one by one);
/// every document's stated hash is checked.
pub async fn abandoned_evidence(
    hub: &Client,
    cut: &str,
    expected: &BTreeSet<(String, u32)>,
) -> BTreeMap<String, Vec<BTreeSet<(String, u32)>>> {
    use gpufed_operator::verification::evidence::{LABEL_KIND, LABEL_PROVIDER};
    use gpufed_trust::evidence::Evidence;
    use k8s_openapi::api::core::v1::ConfigMap;
    let cms: Api<ConfigMap> = Api::namespaced(hub.clone(), "gpufed-system");
    let read = || async {
        let mut out: BTreeMap<String, Vec<BTreeSet<(String, u32)>>> = BTreeMap::new();
        let list = cms
            .list(&ListParams::default().labels(&format!("{LABEL_KIND}=abandoned-job")))
            .await?;
        for cm in list.items {
            let data = cm.data.unwrap_or_default();
            let doc: Evidence = serde_json::from_str(&data["evidence.json"]).expect("evidence document");
            assert_eq!(
                doc.hash().to_hex(),
                data["hash"],
                "the stated hash is the document's"
            );
            let labels = cm.metadata.labels.unwrap_or_default();
            assert_eq!(labels.get(LABEL_PROVIDER), Some(&doc.provider));
            let named = doc.jobs.iter().map(|j| (j.uid.clone(), j.attempt)).collect();
            out.entry(doc.provider).or_default().push(named);
        }
        Ok::<_, kube::Error>(out)
    };
    let found = gpufed_e2e::wait::until("abandoned-job evidence", Duration::from_secs(60), || async {
        let out = read().await?;
        let named = |d: &BTreeSet<(String, u32)>| !d.is_empty() && d.is_subset(expected);
        Ok(out
            .get(cut)
            .is_some_and(|docs| docs.iter().any(named))
            .then_some(out))
    })
    .await;
    match found {
        Ok(out) => out,
        Err(e) => panic!("{e}: {:?}", read().await),
    }
}
