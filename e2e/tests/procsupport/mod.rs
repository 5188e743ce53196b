//! Support for `operator_process.rs`: the operator as a separate OS process, a watch of
//! the member's gpufed pods, and the checks both fault tests share.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use super::opsupport::lease_holder;
use super::opsupport::phase;
use futures::StreamExt;
use gpufed_api::ComputeJob;
use gpufed_api::job_status::AttemptOutcome;
use gpufed_e2e::process::ManagedProcess;
use gpufed_e2e::{FederationSpec, TestEnv};
use gpufed_operator::job::names::{LABEL_ATTEMPT, LABEL_JOB_UID};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rustix::process::Signal;

pub const MINUTE: Duration = Duration::from_secs(60);
pub const MANAGED: &str = "app.kubernetes.io/managed-by=gpufed";
/// `--lease-duration` of the operator processes.
pub const LEASE: Duration = Duration::from_secs(6);

/// One operator process; stopped (SIGCONT, SIGTERM, then SIGKILL) when dropped.
pub struct OperatorProcess {
    identity: String,
    log: PathBuf,
    proc: ManagedProcess,
}

impl OperatorProcess {
    /// Starts `gpufed-e2e operator` on the hub in `kubeconfig`, as replica `identity`, with
    /// the short heartbeats and Lease of the in-process tests; logs to `<dir>/<identity>.log`
    /// (appended to across restarts).
    pub fn start(kubeconfig: &Path, identity: &str, dir: &Path) -> Self {
        let log = dir.join(format!("{identity}.log"));
        let args: Vec<String> = ["operator", "--identity", identity]
            .iter()
            .chain(super::opsupport::TEST_FLAGS.iter())
            .chain(["--admin-addr", "127.0.0.1:0"].iter())
            .map(|s| s.to_string())
            .collect();
        let env = [
            ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        let proc = ManagedProcess::spawn_tied_env(
            &format!("operator {identity}"),
            Path::new(env!("CARGO_BIN_EXE_gpufed-e2e")),
            &args,
            &env,
            &log,
        )
        .expect("operator process starts");
        Self {
            identity: identity.to_owned(),
            log,
            proc,
        }
    }

    pub fn signal(&self, signal: Signal) {
        assert!(
            self.proc.record().signal(signal),
            "{}: {signal:?} not delivered (process gone?)",
            self.identity
        );
    }

    /// SIGKILL, as a crash or an OOM kill would; reaps the process.
    pub fn kill(mut self) {
        self.signal(Signal::KILL);
        self.proc.stop(Duration::from_secs(5));
    }

    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The log from byte `offset` on, without ANSI colour codes.
    pub fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.seek(SeekFrom::Start(offset));
            let _ = f.read_to_string(&mut text);
        }
        strip_ansi(&text)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.proc.record().signal(Signal::CONT);
        self.proc.stop(Duration::from_secs(10));
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in '@'..='~'
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// xorshift64*: enough randomness for kill timings, reproducible from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi)`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

pub fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every `(job uid → attempt → pod names)` the watch has seen on the member.
pub type Seen = Arc<Mutex<BTreeMap<String, BTreeMap<u32, BTreeSet<String>>>>>;

pub fn watch_member_pods(member: Client) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let api = Api::<Pod>::all(member);
        let mut stream = watcher(api, watcher::Config::default().labels(MANAGED))
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            let pod = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p)) => p,
                _ => continue,
            };
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let (Some(uid), Some(attempt)) = (labels.get(LABEL_JOB_UID), labels.get(LABEL_ATTEMPT)) else {
                continue;
            };
            let attempt = attempt.parse().unwrap_or(u32::MAX);
            if let Ok(mut s) = record.lock() {
                s.entry(uid.clone())
                    .or_default()
                    .entry(attempt)
                    .or_default()
                    .insert(pod.metadata.name.clone().unwrap_or_default());
            }
        }
    });
    (seen, task)
}

pub async fn list_jobs(hub: &Client, ns: &str) -> Vec<ComputeJob> {
    Api::<ComputeJob>::namespaced(hub.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

pub fn succeeded(jobs: &[ComputeJob]) -> usize {
    jobs.iter().filter(|j| phase(j) == "Succeeded").count()
}

/// Waits until all `n` jobs in `ns` are Succeeded; fails at once if one Failed.
pub async fn all_succeeded(hub: &Client, ns: &str, n: usize, timeout: Duration) -> Vec<ComputeJob> {
    let t0 = Instant::now();
    loop {
        let jobs = list_jobs(hub, ns).await;
        if let Some(failed) = jobs.iter().find(|j| phase(j) == "Failed") {
            panic!(
                "{:?} Failed: {}",
                failed.metadata.name,
                serde_json::to_string_pretty(&failed.status).unwrap_or_default()
            );
        }
        if jobs.len() == n && succeeded(&jobs) == n {
            return jobs;
        }
        if t0.elapsed() > timeout {
            let open: Vec<String> = jobs
                .iter()
                .filter(|j| phase(j) != "Succeeded")
                .map(|j| format!("{}={}", j.metadata.name.clone().unwrap_or_default(), phase(j)))
                .collect();
            panic!(
                "{} of {n} jobs Succeeded after {timeout:?}; not: {open:?}",
                succeeded(&jobs)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every job ran exactly one attempt (attempt 1, Succeeded) and the member only ever had
/// pods of that attempt, one per worker; no pod of any other job appeared.
pub fn assert_each_gang_bound_once(jobs: &[ComputeJob], seen: &Seen) {
    let seen = seen.lock().expect("seen").clone();
    let mut uids = BTreeSet::new();
    for job in jobs {
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().expect("uid");
        uids.insert(uid.clone());
        let st = job.status.clone().expect("status");
        let attempts: Vec<(u32, AttemptOutcome)> =
            st.attempts.iter().map(|a| (a.attempt, a.outcome)).collect();
        assert_eq!(
            attempts,
            vec![(1, AttemptOutcome::Succeeded)],
            "{name}: one attempt, attempt 1: {:?}",
            st.attempts
        );
        if let Some(p) = &st.placement {
            assert_eq!(p.attempt, 1, "{name}: placement {p:?}");
        }
        let pods = seen.get(&uid).cloned().unwrap_or_default();
        let attempts: Vec<u32> = pods.keys().copied().collect();
        assert_eq!(attempts, vec![1], "{name}: member pods of attempts {pods:?}");
        assert_eq!(
            pods.get(&1).map_or(0, BTreeSet::len),
            job.spec.workers as usize,
            "{name}: pods {pods:?}"
        );
    }
    let strays: Vec<&String> = seen.keys().filter(|u| !uids.contains(*u)).collect();
    assert!(strays.is_empty(), "member pods of unknown jobs: {strays:?}");
}

/// Waits up to two minutes until no member pod is an orphan (see the module docs).
pub async fn assert_no_orphans(hub: &Client, ns: &str, member: &Client) {
    let pods: Api<Pod> = Api::all(member.clone());
    let last = Mutex::new(Vec::new());
    let result = gpufed_e2e::wait::until("no orphaned member pods", 2 * MINUTE, || async {
        let jobs = list_jobs(hub, ns).await;
        let finals: BTreeMap<String, u32> = jobs
            .iter()
            .filter_map(|j| {
                let st = j.status.as_ref()?;
                let last = st
                    .placement
                    .as_ref()
                    .map(|p| p.attempt)
                    .or_else(|| st.attempts.iter().map(|a| a.attempt).max())?;
                Some((j.metadata.uid.clone()?, last))
            })
            .collect();
        let orphans: Vec<String> = pods
            .list(&ListParams::default().labels(MANAGED))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let attempt = labels.get(LABEL_ATTEMPT).and_then(|a| a.parse::<u32>().ok());
                labels
                    .get(LABEL_JOB_UID)
                    .and_then(|u| finals.get(u))
                    .is_none_or(|last| Some(*last) != attempt)
            })
            .map(|p| p.metadata.name.unwrap_or_default())
            .collect();
        let none = orphans.is_empty();
        *last.lock().expect("last") = orphans;
        Ok(none.then_some(()))
    })
    .await;
    if let Err(e) = result {
        panic!("{e}: orphaned member pods {:?}", last.lock().expect("last"));
    }
}

pub async fn holder_becomes(hub: &Client, who: &str, timeout: Duration) {
    let result = gpufed_e2e::wait::until(&format!("{who} holds the Lease"), timeout, || async {
        Ok((lease_holder(hub).await.as_deref() == Some(who)).then_some(()))
    })
    .await;
    if let Err(e) = result {
        panic!("{e}; holder: {:?}", lease_holder(hub).await);
    }
}

/// Starts `spec` with its members registered; `None` (skip printed) against an external
/// cluster, which has no simulated nodes.
pub async fn federation(spec: FederationSpec) -> Option<(TestEnv, Client, PathBuf)> {
    let (env, hub) = super::opsupport::federation_with_providers(spec, &[("provider-a", "0.50")]).await?;
    let kubeconfig = env.federation()?.hub().kubeconfig().to_owned();
    Some((env, hub, kubeconfig))
}

/// A directory for the operator logs that outlives the federation's run directory.
pub fn log_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpufed-opproc-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log dir");
    eprintln!("operator logs: {}", dir.display());
    dir
}
