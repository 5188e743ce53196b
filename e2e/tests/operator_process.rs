//! The operator as a real, separate OS process (`gpufed-e2e operator`), so that faults are
//! real: SIGKILL at random moments during a burst of jobs, and SIGSTOP of the leader for
//! longer than its Lease, then SIGCONT. GPU nodes are SIMULATED; API servers, scheduler and
//! controller-manager are real.
//!
//! What "no gang bound twice" and "no orphan" mean here:
//! - a watch on the member's gpufed pods (`app.kubernetes.io/managed-by=gpufed`) records
//!   every `(gpufed.io/job-uid, gpufed.io/attempt, pod name)` it ever sees, including pods
//!   that were created and deleted between two looks. A job passes when it is Succeeded
//!   with exactly one attempt record (attempt 1, Succeeded), and the watch saw pods of
//!   attempt 1 only, exactly one pod per worker;
//! - an orphan is a member pod, not being deleted, labeled `managed-by=gpufed`, whose job
//!   uid is none of the hub's jobs, or whose attempt is not its job's final attempt. The
//!   test waits up to two minutes for there to be none.

mod common;
mod opsupport;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_api::ComputeJob;
use gpufed_api::job_status::AttemptOutcome;
use gpufed_e2e::process::ManagedProcess;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use gpufed_operator::job::names::{LABEL_ATTEMPT, LABEL_JOB_UID};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use opsupport::{job, phase, submit};
use rustix::process::Signal;

const MINUTE: Duration = Duration::from_secs(60);
const MANAGED: &str = "app.kubernetes.io/managed-by=gpufed";
/// `--lease-duration` of the operator processes.
const LEASE: Duration = Duration::from_secs(6);

/// One operator process; stopped (SIGCONT, SIGTERM, then SIGKILL) when dropped.
struct OperatorProcess {
    identity: String,
    log: PathBuf,
    proc: ManagedProcess,
}

impl OperatorProcess {
    /// Starts `gpufed-e2e operator` on the hub in `kubeconfig`, as replica `identity`, with
    /// the short heartbeats and Lease of the in-process tests; logs to `<dir>/<identity>.log`
    /// (appended to across restarts).
    fn start(kubeconfig: &Path, identity: &str, dir: &Path) -> Self {
        let log = dir.join(format!("{identity}.log"));
        let args: Vec<String> = [
            "operator",
            "--identity",
            identity,
            "--heartbeat-interval",
            "1s",
            "--placement-interval",
            "1s",
            "--member-timeout",
            "3s",
            "--lease-duration",
            "6s",
            "--admin-addr",
            "127.0.0.1:0",
        ]
        .iter()
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

    fn signal(&self, signal: Signal) {
        assert!(
            self.proc.record().signal(signal),
            "{}: {signal:?} not delivered (process gone?)",
            self.identity
        );
    }

    /// SIGKILL, as a crash or an OOM kill would; reaps the process.
    fn kill(mut self) {
        self.signal(Signal::KILL);
        self.proc.stop(Duration::from_secs(5));
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The log from byte `offset` on, without ANSI colour codes.
    fn log_since(&self, offset: u64) -> String {
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

fn strip_ansi(s: &str) -> String {
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
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi)`.
    fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every `(job uid → attempt → pod names)` the watch has seen on the member.
type Seen = Arc<Mutex<BTreeMap<String, BTreeMap<u32, BTreeSet<String>>>>>;

fn watch_member_pods(member: Client) -> (Seen, tokio::task::JoinHandle<()>) {
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

async fn list_jobs(hub: &Client, ns: &str) -> Vec<ComputeJob> {
    Api::<ComputeJob>::namespaced(hub.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn succeeded(jobs: &[ComputeJob]) -> usize {
    jobs.iter().filter(|j| phase(j) == "Succeeded").count()
}

/// Waits until all `n` jobs in `ns` are Succeeded; fails at once if one Failed.
async fn all_succeeded(hub: &Client, ns: &str, n: usize, timeout: Duration) -> Vec<ComputeJob> {
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
fn assert_each_gang_bound_once(jobs: &[ComputeJob], seen: &Seen) {
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
async fn assert_no_orphans(hub: &Client, ns: &str, member: &Client) {
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

async fn lease_holder(hub: &Client) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(hub.clone(), "gpufed-system");
    leases
        .get_opt(gpufed_operator::lease::LEASE_NAME)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

async fn holder_becomes(hub: &Client, who: &str, timeout: Duration) {
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
async fn federation(spec: FederationSpec) -> Option<(TestEnv, Client, PathBuf)> {
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return None;
    };
    let hub = env.hub_client().await.expect("hub");
    opsupport::setup(fed, &hub, &[("provider-a", "0.50")]).await;
    let kubeconfig = fed.hub().kubeconfig().to_owned();
    Some((env, hub, kubeconfig))
}

/// A directory for the operator logs that outlives the federation's run directory.
fn log_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpufed-opproc-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log dir");
    eprintln!("operator logs: {}", dir.display());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_repeatedly_during_a_burst() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let n = env_u32("GPUFED_KILL_JOBS", 60) as usize;
    let kills = env_u32("GPUFED_KILLS", 6);
    let seed = std::env::var("GPUFED_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("{n} jobs, {kills} kills, seed {seed} (GPUFED_KILL_SEED={seed} repeats the timings)");
    let mut rng = Rng(seed);
    // 3 nodes × 4 GPUs; every job is 1 worker × 1 GPU running 3 s.
    let gpus = 12;
    let run_secs = 3;
    let spec = FederationSpec::new("opp-kill").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 3)]);
    let Some((env, hub, kubeconfig)) = federation(spec).await else {
        return;
    };
    let logs = log_dir("kill");
    let mut op = OperatorProcess::start(&kubeconfig, "op-1", &logs);
    opsupport::providers_ready(&hub, 1).await;
    let member = env.member_client("provider-a").await.expect("member");
    let (seen, watch) = watch_member_pods(member.clone());
    let ns = common::namespace(&hub, "kill").await;

    let t0 = Instant::now();
    let submitter = {
        let (hub, ns) = (hub.clone(), ns.clone());
        tokio::spawn(async move {
            for i in 0..n {
                let spec = job(
                    &format!("burst-{i}"),
                    1,
                    1,
                    serde_json::json!({}),
                    "1.00",
                    run_secs,
                );
                submit(&hub, &ns, &spec).await;
            }
        })
    };
    // The time the unfinished jobs still need, spread over the kills still to come, so that
    // every kill lands inside the burst (whatever N).
    let remaining = |unfinished: usize| {
        let waves = unfinished.div_ceil(gpus) as u64;
        Duration::from_secs(waves * (u64::from(run_secs) + 2))
    };
    let mut unfinished_at_kill = Vec::new();
    for k in 0..kills {
        let jobs = list_jobs(&hub, &ns).await;
        let unfinished = n - succeeded(&jobs);
        let mean = (remaining(unfinished) / (kills - k + 1)).max(Duration::from_secs(1));
        tokio::time::sleep(rng.duration(Duration::from_millis(200), 2 * mean)).await;
        let unfinished = n - succeeded(&list_jobs(&hub, &ns).await);
        op.kill();
        unfinished_at_kill.push(unfinished);
        let down = rng.duration(Duration::ZERO, Duration::from_millis(1500));
        eprintln!(
            "kill {}/{kills} at {:.1} s with {unfinished} jobs unfinished; down {down:?}",
            k + 1,
            t0.elapsed().as_secs_f64()
        );
        tokio::time::sleep(down).await;
        op = OperatorProcess::start(&kubeconfig, "op-1", &logs);
    }
    submitter.await.expect("all jobs submitted");
    let timeout = 3 * remaining(n) + 2 * MINUTE;
    let jobs = all_succeeded(&hub, &ns, n, timeout).await;
    eprintln!(
        "all {n} jobs Succeeded after {:.1} s and {kills} kills",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        unfinished_at_kill.iter().all(|u| *u > 0),
        "every kill landed during the burst: unfinished jobs at each kill {unfinished_at_kill:?}"
    );
    // Let the watch catch up with the last changes before judging.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_each_gang_bound_once(&jobs, &seen);
    assert_no_orphans(&hub, &ns, &member).await;
    watch.abort();
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_resumed_writes_nothing() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // 1 node × 4 GPUs; 12 jobs of 1 GPU × 4 s run in three waves.
    let spec = FederationSpec::new("opp-freeze").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 1)]);
    let Some((env, hub, kubeconfig)) = federation(spec).await else {
        return;
    };
    let logs = log_dir("freeze");
    let op1 = OperatorProcess::start(&kubeconfig, "op-1", &logs);
    opsupport::providers_ready(&hub, 1).await;
    holder_becomes(&hub, "op-1", 30 * Duration::from_secs(1)).await;
    let op2 = OperatorProcess::start(&kubeconfig, "op-2", &logs);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lease_holder(&hub).await.as_deref(),
        Some("op-1"),
        "the first replica leads"
    );

    let member = env.member_client("provider-a").await.expect("member");
    let (seen, watch) = watch_member_pods(member.clone());
    let ns = common::namespace(&hub, "freeze").await;
    let n = 12;
    for i in 0..n {
        submit(
            &hub,
            &ns,
            &job(&format!("burst-{i}"), 1, 1, serde_json::json!({}), "1.00", 4),
        )
        .await;
    }
    // Freeze the leader in the middle of dispatching the first wave.
    opsupport::job_until(&hub, &ns, "burst-0", "first dispatch", MINUTE, |j| {
        !phase(j).is_empty() && phase(j) != "Queued"
    })
    .await;
    op1.signal(Signal::STOP);
    let frozen = Instant::now();
    eprintln!("op-1 frozen");
    holder_becomes(&hub, "op-2", 5 * LEASE).await;
    let takeover = frozen.elapsed();
    eprintln!(
        "op-2 holds the Lease {:.1} s after the freeze",
        takeover.as_secs_f64()
    );
    // op-1 renewed at most a third of the lease (+ a round) before it froze, and the Lease
    // counts whole seconds: anything sooner than this was taken from a live lease.
    let earliest = LEASE - LEASE / 3 - Duration::from_secs(1);
    assert!(
        takeover >= earliest,
        "taken over {takeover:?} after the freeze, before the lease ran out"
    );
    // Jobs keep progressing under the new leader while the old one is still frozen.
    let done_at_takeover = succeeded(&list_jobs(&hub, &ns).await);
    gpufed_e2e::wait::until(
        "a job completes under op-2",
        40 * Duration::from_secs(1),
        || async { Ok((succeeded(&list_jobs(&hub, &ns).await) > done_at_takeover).then_some(())) },
    )
    .await
    .expect("progress while op-1 is frozen");
    let min_freeze = Duration::from_secs(15);
    tokio::time::sleep(min_freeze.saturating_sub(frozen.elapsed())).await;
    let offset = op1.log_len();
    op1.signal(Signal::CONT);
    eprintln!("op-1 resumed after {:.1} s", frozen.elapsed().as_secs_f64());

    // The resumed replica must not take the Lease back while op-2 renews it.
    let watch_until = Instant::now() + 2 * LEASE;
    while Instant::now() < watch_until {
        assert_eq!(
            lease_holder(&hub).await.as_deref(),
            Some("op-2"),
            "Lease holder after op-1 resumed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let jobs = all_succeeded(&hub, &ns, n, 3 * MINUTE).await;
    assert_eq!(
        lease_holder(&hub).await.as_deref(),
        Some("op-2"),
        "op-2 still leads"
    );
    let after = op1.log_since(offset);
    // Neither a won Lease round nor a placement from the resumed replica.
    assert!(
        !after.contains("leader=true") && !after.contains("placed job="),
        "op-1 acted as leader again after resuming:\n{after}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_each_gang_bound_once(&jobs, &seen);
    assert_no_orphans(&hub, &ns, &member).await;
    watch.abort();
    drop((op1, op2));
}
