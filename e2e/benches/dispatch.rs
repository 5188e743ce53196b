//! Benchmark: `kubectl apply` of a burst of ComputeJobs → worker pods bound by the real
//! kube-scheduler in the member clusters, through the hub and the gpufed operator;
//! against the same number of GPU pods created directly in one cluster and bound by its
//! kube-scheduler, in the same run. GPU nodes are SIMULATED; API servers, schedulers and
//! the operator are real. Run: `cargo bench -p gpufed-e2e --bench dispatch`.
//! Under `cargo test` (no `--bench` argument) it runs as a smoke test: 6 workloads on
//! small pools, failing unless every pod is bound both ways.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/opsupport/mod.rs"]
mod opsupport;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gpufed_api::ComputeJob;
use gpufed_e2e::{Federation, FederationSpec, GpuPool};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Watches `clients` until `want` pods with `selector` are bound; returns when each was
/// first seen bound, by the pod's `group` label value. A watch per cluster (not polling),
/// so measuring costs both sides the same and times are exact to the event.
async fn watch_bound(
    clients: Vec<Client>,
    selector: &'static str,
    group: &'static str,
    want: usize,
) -> BTreeMap<String, Instant> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let streams = clients.iter().map(|c| {
        watcher(
            Api::<Pod>::all(c.clone()),
            watcher::Config::default().labels(selector),
        )
        .applied_objects()
        .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(deadline);
    while seen.len() < want {
        let pod = tokio::select! {
            _ = &mut deadline => break,
            event = events.next() => match event {
                Some(Ok(pod)) => pod,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let key = pod.metadata.labels.as_ref().and_then(|l| l.get(group)).cloned();
        if let (true, Some(key)) = (bound, key) {
            seen.entry(key).or_insert_with(Instant::now);
        }
    }
    seen
}

/// CPU seconds used so far by each process of this machine, grouped by cluster and
/// program (`kube-apiserver hub`, `etcd`, `bench` for this process: the operator, the
/// simulated kubelets and the watches). Clock ticks of 10 ms (`USER_HZ` = 100).
fn cpu_by_process() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        // Only processes (not `self`, which would count this one twice).
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let (Ok(stat), Ok(cmd)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        let Some(seconds) = gpufed_e2e::process::cpu_of_stat(&stat) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let program = cmd
            .split(' ')
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let key = if pid == me {
            "bench".to_owned()
        } else {
            let cluster = ["hub", "provider-a", "provider-b", "provider-c", "direct"]
                .into_iter()
                .find(|c| cmd.contains(&format!("/{c}/")) || cmd.contains(&format!("/gpufed-e2e/{c} ")));
            match cluster {
                Some(c) => format!("{program} {c}"),
                None if program.is_empty() => continue,
                None => program,
            }
        };
        *out.entry(key).or_insert(0.0) += seconds;
    }
    out
}

/// Prints where the CPU went between two [`cpu_by_process`] readings, per workload.
fn print_cpu(before: &BTreeMap<String, f64>, start: Instant, jobs: usize) {
    let after = cpu_by_process();
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let per = |s: f64| s * 1000.0 / jobs as f64;
    println!(
        "  CPU: {:.0} ms per workload, all processes ({:.2} cores busy of {})",
        per(total),
        total / start.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (k, d) in rows.iter().take(10) {
        println!("    {:>6.1} ms  {k}", per(*d));
    }
}

/// The API server's request counters (`apiserver_request_total`) by verb, resource,
/// subresource and code, summed over the other labels.
async fn request_counts(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let get = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let key = format!(
            "{} {}{} {}",
            get("verb"),
            get("resource"),
            Some(get("subresource"))
                .filter(|s| !s.is_empty())
                .map(|s| format!("/{s}"))
                .unwrap_or_default(),
            get("code")
        );
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Prints the requests `client`'s API server served between two counts, per workload.
fn print_requests(name: &str, before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, jobs: usize) {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(k, d)| *d >= jobs as f64 / 4.0 && !k.starts_with("WATCH"))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    println!("  {name}: {:.1} requests per workload", total / jobs as f64);
    for (k, d) in rows {
        println!("    {:>6.2}  {k}", d / jobs as f64);
    }
}

fn report(
    name: &str,
    start: Instant,
    applied: &BTreeMap<String, Instant>,
    bound: &BTreeMap<String, Instant>,
    jobs: usize,
) -> f64 {
    let mut lat: Vec<f64> = bound
        .iter()
        .filter_map(|(k, t)| Some(t.duration_since(*applied.get(k)?).as_secs_f64()))
        .collect();
    lat.sort_by(f64::total_cmp);
    let last = bound.values().max().copied().unwrap_or(start);
    let rate = bound.len() as f64 / last.duration_since(start).as_secs_f64();
    println!(
        "{name:<34} {:>3}/{jobs} bound  {rate:>6.1} pods/s  apply→bound p50 {:.2} s  p99 {:.2} s",
        bound.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    rate
}

async fn baseline(fed: &Federation, jobs: usize) -> (f64, usize) {
    let client = fed
        .cluster("direct")
        .expect("direct cluster")
        .client()
        .await
        .expect("client");
    let ns = common::namespace(&client, "bench").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = request_counts(&client).await;
    let watch = tokio::spawn(watch_bound(vec![client.clone()], "bench=direct", "idx", jobs));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let cpu0 = cpu_by_process();
    let mut applied = BTreeMap::new();
    for i in 0..jobs {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p{i}"), "labels": {"bench": "direct", "idx": i.to_string()},
                         "annotations": {"gpufed.io/sim-run-seconds": "3600"}},
            "spec": {"containers": [{"name": "m", "image": "x",
                     "resources": {"limits": {"gpufed.io/gpu": "1"}, "requests": {"gpufed.io/gpu": "1"}}}]}
        }))
        .expect("pod");
        api.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        applied.insert(i.to_string(), Instant::now());
    }
    let bound = watch.await.expect("watch");
    let rate = report("kube-scheduler, pods direct", start, &applied, &bound, jobs);
    print_cpu(&cpu0, start, jobs);
    print_requests("direct", &before, &request_counts(&client).await, jobs);
    (rate, bound.len())
}

/// Creates `jobs` ComputeJobs on the hub one after another (as `kubectl create` would,
/// the same verb as the direct peer's pods) and returns when each was acknowledged.
async fn create_jobs(hub: &Client, ns: &str, prefix: &str, jobs: usize) -> BTreeMap<String, Instant> {
    let api: Api<ComputeJob> = Api::namespaced(hub.clone(), ns);
    let mut applied = BTreeMap::new();
    for i in 0..jobs {
        let name = format!("{prefix}{i}");
        let job: ComputeJob =
            serde_json::from_value(opsupport::job(&name, 1, 1, serde_json::json!({}), "5.00", 3600))
                .expect("job");
        api.create(&PostParams::default(), &job)
            .await
            .expect("create job");
        applied.insert(name, Instant::now());
    }
    applied
}

/// The hub's own pace: ComputeJobs created with no operator running (nothing else
/// writes), so the gpufed figure can be read against what the hub alone allows.
async fn hub_floor(fed: &Federation, jobs: usize) {
    let hub = fed.hub().client().await.expect("hub");
    gpufed_e2e::crds::install_crds(&hub, &common::repo_root().join("crds"), Duration::from_secs(60))
        .await
        .expect("CRDs install");
    let ns = common::namespace(&hub, "floor").await;
    let start = Instant::now();
    create_jobs(&hub, &ns, "f", jobs).await;
    let took = start.elapsed().as_secs_f64();
    println!(
        "{:<34} {jobs} created in {took:.2} s  {:>6.1} jobs/s (no operator)",
        "hub alone, ComputeJobs",
        jobs as f64 / took
    );
    let api: Api<ComputeJob> = Api::namespaced(hub.clone(), &ns);
    api.delete_collection(&Default::default(), &ListParams::default())
        .await
        .expect("delete floor jobs");
}

async fn through_gpufed(fed: &Federation, jobs: usize) -> (f64, usize) {
    let hub = fed.hub().client().await.expect("hub");
    opsupport::setup_members(fed, &hub, &["provider-a", "provider-b", "provider-c"], &[]).await;
    // The operator as deployed: its default heartbeat and placement intervals.
    let operator = opsupport::Operator::start_args(
        hub.clone(),
        [
            "gpufed-operator",
            "--identity",
            "bench",
            "--admin-addr",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    opsupport::providers_ready(&hub, 3).await;
    let ns = common::namespace(&hub, "bench").await;
    let mut members = Vec::new();
    for m in ["provider-a", "provider-b", "provider-c"] {
        members.push(
            fed.cluster(m)
                .expect("member")
                .client()
                .await
                .expect("member client"),
        );
    }
    let watch = tokio::spawn(watch_bound(
        members.clone(),
        "app.kubernetes.io/managed-by=gpufed",
        "gpufed.io/job-name",
        jobs,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hub_before = request_counts(&hub).await;
    let member_before = request_counts(&members[0]).await;
    let start = Instant::now();
    let cpu0 = cpu_by_process();
    let applied = create_jobs(&hub, &ns, "j", jobs).await;
    println!(
        "{:<34} {jobs} created in {:.2} s",
        "gpufed: jobs on the hub",
        start.elapsed().as_secs_f64()
    );
    let bound = watch.await.expect("watch");
    let rate = report("gpufed: hub → 3 members", start, &applied, &bound, jobs);
    print_cpu(&cpu0, start, jobs);
    print_requests("hub", &hub_before, &request_counts(&hub).await, jobs);
    print_requests(
        "provider-a (a third of the workloads)",
        &member_before,
        &request_counts(&members[0]).await,
        jobs / 3,
    );
    operator.stop().await;
    (rate, bound.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        common::init_tracing();
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (jobs, nodes) = if smoke { (6, 2) } else { (60, 24) };
    let pool = |p: &str| vec![GpuPool::rtx4090(p, nodes)];
    let spec = FederationSpec::new("bench-dispatch")
        .member("provider-a", pool("a"))
        .member("provider-b", pool("b"))
        .member("provider-c", pool("c"))
        .member("direct", vec![GpuPool::rtx4090("d", 3 * nodes)]);
    let fed = Federation::start(spec).await.expect("federation");
    println!(
        "{jobs} one-GPU workloads; federation ready in {:.1} s",
        fed.ready_after().as_secs_f64()
    );
    let (direct, direct_bound) = baseline(&fed, jobs).await;
    hub_floor(&fed, jobs).await;
    let (ours, ours_bound) = through_gpufed(&fed, jobs).await;
    println!("ratio gpufed / direct: {:.2}×", ours / direct);
    assert_eq!(
        (direct_bound, ours_bound),
        (jobs, jobs),
        "every workload must be bound both ways"
    );
}
