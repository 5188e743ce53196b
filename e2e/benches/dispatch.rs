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

use gpufed_e2e::{Federation, FederationSpec, GpuPool};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Polls `clients` until `want` pods with `selector` are bound; returns when each was
/// first seen bound, by the pod's `group` label value.
async fn watch_bound(
    clients: &[Client],
    selector: &str,
    group: &str,
    want: usize,
) -> BTreeMap<String, Instant> {
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen.len() < want && Instant::now() < deadline {
        for c in clients {
            let pods = Api::<Pod>::all(c.clone())
                .list(&ListParams::default().labels(selector))
                .await;
            for p in pods.map(|l| l.items).unwrap_or_default() {
                let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                let key = p.metadata.labels.as_ref().and_then(|l| l.get(group)).cloned();
                if let (true, Some(key)) = (bound, key) {
                    seen.entry(key).or_insert_with(Instant::now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
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
    let start = Instant::now();
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
    let bound = watch_bound(&[client], "bench=direct", "idx", jobs).await;
    (
        report("kube-scheduler, pods direct", start, &applied, &bound, jobs),
        bound.len(),
    )
}

async fn through_gpufed(fed: &Federation, jobs: usize) -> (f64, usize) {
    let hub = fed.hub().client().await.expect("hub");
    opsupport::setup_members(fed, &hub, &["provider-a", "provider-b", "provider-c"], &[]).await;
    let operator = opsupport::Operator::start(hub.clone(), "bench");
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
    let start = Instant::now();
    let mut applied = BTreeMap::new();
    for i in 0..jobs {
        let name = format!("j{i}");
        opsupport::submit(
            &hub,
            &ns,
            &opsupport::job(&name, 1, 1, serde_json::json!({}), "5.00", 3600),
        )
        .await;
        applied.insert(name, Instant::now());
    }
    let bound = watch_bound(
        &members,
        "app.kubernetes.io/managed-by=gpufed",
        "gpufed.io/job-name",
        jobs,
    )
    .await;
    let rate = report("gpufed: hub → 3 members", start, &applied, &bound, jobs);
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
    let (ours, ours_bound) = through_gpufed(&fed, jobs).await;
    println!("ratio gpufed / direct: {:.2}×", ours / direct);
    assert_eq!(
        (direct_bound, ours_bound),
        (jobs, jobs),
        "every workload must be bound both ways"
    );
}
