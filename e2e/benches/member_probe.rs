//! Benchmark: what the hub's probe of a big member costs, whole (every heartbeat: the GPU
//! nodes and every non-terminal pod) against reports-only (every `--challenge-poll` while a
//! challenge is open: the nodes' metadata, for their signed reports, and the challenge
//! ConfigMap). One real member control plane (1.20.2 API server, etcd, scheduler,
//! controller-manager) holding N GPU nodes, each with a signed 8-GPU inventory report as
//! its device plugin publishes it, and 5 pods per node bound to them (no kubelet: they stay
//! Pending, which the probe counts like Running). Measured in the same run, alternating
//! the kinds: wall time per probe (median, p90) and the member API server's CPU. A third
//! kind, **watched**, is the look of a push member whose watches are current: the reports
//! from the hub's node watch ([`MemberCache`]), and one GET of the challenge ConfigMap;
//! beside it what holding those watches costs (the hub's memory, the API server's CPU
//! while nothing changes).
//! Run: `cargo bench -p gpufed-e2e --bench member_probe` (1000 nodes, 5000 pods, 30
//! probes of each kind). Without `--bench` a smoke run: 40 nodes, 200 pods, 5 probes.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use gpufed_e2e::{Federation, FederationSpec};
use gpufed_operator::fleet::labels;
use gpufed_operator::member::ops::{probe_reports, probe_with};
use gpufed_operator::member::wakes::ReportWakes;
use gpufed_operator::member::watch::{MemberCache, trim_node};
use gpufed_operator::verification::read_challenges;
use gpufed_trust::report::{InventoryReport, ReportGpu, sign};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::{Api, Client};

const RESOURCE: &str = gpufed_api::DEFAULT_GPU_RESOURCE;
const PODS_PER_NODE: usize = 5;

/// How long the watches are held with nothing changing, for the API server's idle cost.
const IDLE: Duration = Duration::from_secs(10);

/// This process's resident memory in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The hub's look at a member whose watches are current (`kind="watched"`): the challenge
/// requests read, the reports from the node watch.
async fn watch_look(
    client: &Client,
    cache: &MemberCache,
    selector: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    read_challenges(client).await.expect("challenge requests read");
    cache.node_reports(selector)
}

/// CPU seconds the member's API server has used.
fn cpu_seconds(pid: u32) -> f64 {
    gpufed_e2e::process::cpu_seconds(pid).expect("the member's API server runs")
}

/// A GPU node as a kubelet and our device plugin leave it: status with capacity,
/// conditions and addresses, the model labels, and the signed inventory report.
fn node(i: usize, key: &ed25519_dalek::SigningKey) -> serde_json::Value {
    let name = format!("gpu-{i:05}");
    let report = InventoryReport {
        node: name.clone(),
        nonce: String::new(),
        issued_at: 1_764_000_000,
        driver_version: "580.159.04".into(),
        cuda_version: "13.0".into(),
        simulated: false,
        gpus: (0..8)
            .map(|g| ReportGpu {
                uuid: format!("GPU-{i:05}-{g}-4f1c2a9e-8d7b-11ee-b962-0242ac120002"),
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_mib: 81_559,
                compute_capability: "9.0".into(),
                serial: Some(format!("165222{i:07}{g}")),
            })
            .collect(),
        challenge: None,
    };
    let signed = serde_json::to_string(&sign(report, key).expect("signs")).expect("json");
    let quantities = serde_json::json!({
        "cpu": "192", "memory": "2113282588Ki", "ephemeral-storage": "3750000000Ki",
        "pods": "110", "hugepages-1Gi": "0", "hugepages-2Mi": "0", RESOURCE: "8",
    });
    let condition = |t: &str, s: &str, reason: &str| {
        serde_json::json!({"type": t, "status": s, "reason": reason,
            "message": format!("kubelet reports {t} {s}"),
            "lastHeartbeatTime": "2026-12-06T10:00:00Z", "lastTransitionTime": "2026-12-01T00:00:00Z"})
    };
    serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                labels::MODEL: "NVIDIA-H100-80GB-HBM3", labels::MEMORY_MIB: "81559",
                labels::COMPUTE_CAPABILITY: "9.0", labels::NVLINK_DOMAIN: format!("d{}", i / 4),
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": "zone-a",
            },
            "annotations": {"gpufed.io/inventory-report": signed},
        },
        "spec": {"podCIDR": format!("10.{}.{}.0/24", i / 256, i % 256)},
        "status": {
            "capacity": quantities, "allocatable": quantities,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ],
            "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", i / 256, i % 256)},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}"),
                "bootID": format!("{i:032x}"), "kernelVersion": "6.1.0-28-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux", "architecture": "amd64"},
        },
    })
}

/// A training pod bound to `node`, one GPU of it.
fn pod(i: usize, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("train-{i:06}"),
            "labels": {"app": "train", "team": format!("team-{}", i % 17)}},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "trainer", "image": "registry.example.com/ml/trainer:2026.11",
                "command": ["python", "-m", "train", "--config", "/etc/train/config.yaml"],
                "env": [{"name": "NCCL_DEBUG", "value": "WARN"}, {"name": "RANK", "value": i.to_string()}],
                "resources": {"requests": {"cpu": "16", "memory": "128Gi", RESOURCE: "1"},
                              "limits": {RESOURCE: "1"}},
            }],
        },
    }))
    .expect("pod")
}

async fn fill(client: &Client, nodes: usize) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let node_api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..nodes)
        .map(|i| {
            let (api, body) = (node_api.clone(), node(i, &key));
            async move {
                let n: Node = serde_json::from_value(body).expect("node");
                api.create(&PostParams::default(), &n).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("nodes created");
    let pod_api: Api<Pod> = Api::default_namespaced(client.clone());
    futures::stream::iter(0..nodes * PODS_PER_NODE)
        .map(|i| {
            let (api, p) = (pod_api.clone(), pod(i, &format!("gpu-{:05}", i / PODS_PER_NODE)));
            async move { api.create(&PostParams::default(), &p).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("pods created");
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        common::init_tracing();
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (nodes, probes) = if smoke { (40, 5) } else { (1000, 30) };
    let fed = Federation::start(FederationSpec::new("bench-probe").member("big", Vec::new()))
        .await
        .expect("member");
    let member = fed.cluster("big").expect("big");
    let client = member.client().await.expect("client");
    let started = Instant::now();
    fill(&client, nodes).await;
    let filled = started.elapsed();
    let apiserver = fed
        .processes()
        .into_iter()
        .find(|r| r.name.ends_with("big/kube-apiserver"))
        .map(|r| r.pid)
        .expect("the member's API server");
    let selector = BTreeMap::new();
    // The API server's own background (controllers, scheduler, leases) without a watch.
    let c = cpu_seconds(apiserver);
    tokio::time::sleep(IDLE).await;
    let idle_base = cpu_seconds(apiserver) - c;
    // The watches first, before the probes' allocations blur this process's RSS.
    let rss_before = rss_kib();
    let cache = MemberCache::start(&client, None, "big", ReportWakes::default());
    let synced = Instant::now();
    while !cache.current() {
        assert!(
            synced.elapsed() < Duration::from_secs(300),
            "the member watches never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let synced = synced.elapsed();
    let rss_watched = rss_kib().saturating_sub(rss_before);
    // What the cache keeps of a node against the node whole, as it kept them before it
    // trimmed them ([`trim_node`]), in bytes of JSON: RSS is too blurred by the list's
    // own transient buffers to tell the two apart.
    let listed = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("nodes listed");
    let json = |n: &Node| serde_json::to_vec(n).expect("node to JSON").len();
    let whole_bytes: usize = listed.items.iter().map(json).sum();
    let kept_bytes: usize = listed
        .items
        .iter()
        .map(|n| {
            let mut n = n.clone();
            trim_node(&mut n);
            json(&n)
        })
        .sum();
    let c = cpu_seconds(apiserver);
    tokio::time::sleep(IDLE).await;
    let idle_cpu = cpu_seconds(apiserver) - c;
    // Warm the paths (connections, the API server's caches), then alternate.
    let whole = probe_with(client.clone(), RESOURCE, &selector, &[])
        .await
        .expect("whole probe");
    assert_eq!(whole.nodes.len(), nodes);
    assert_eq!(whole.pods.len(), nodes * PODS_PER_NODE);
    assert_eq!(whole.reports.len(), nodes);
    let reports = probe_reports(client.clone(), &selector)
        .await
        .expect("reports probe");
    assert_eq!(reports.reports, whole.reports, "the same reports either way");
    assert_eq!(
        watch_look(&client, &cache, &selector).await,
        whole.reports,
        "the watch too"
    );
    let (mut t_whole, mut t_reports, mut t_watched) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_whole, mut cpu_reports, mut cpu_watched) = (0.0, 0.0, 0.0);
    for _ in 0..probes {
        let (c, t) = (cpu_seconds(apiserver), Instant::now());
        probe_with(client.clone(), RESOURCE, &selector, &[])
            .await
            .expect("whole probe");
        t_whole.push(t.elapsed());
        cpu_whole += cpu_seconds(apiserver) - c;
        let (c, t) = (cpu_seconds(apiserver), Instant::now());
        probe_reports(client.clone(), &selector)
            .await
            .expect("reports probe");
        t_reports.push(t.elapsed());
        cpu_reports += cpu_seconds(apiserver) - c;
        let (c, t) = (cpu_seconds(apiserver), Instant::now());
        watch_look(&client, &cache, &selector).await;
        t_watched.push(t.elapsed());
        cpu_watched += cpu_seconds(apiserver) - c;
    }
    t_whole.sort();
    t_reports.sort();
    t_watched.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "member: {nodes} GPU nodes with signed reports, {} pods (created in {:.1} s); {probes} probes of each kind, alternating",
        nodes * PODS_PER_NODE,
        filled.as_secs_f64()
    );
    println!("| probe | median | p90 | member API server CPU a probe |");
    println!("|---|---|---|---|");
    for (kind, t, cpu) in [
        ("whole", &t_whole, cpu_whole),
        ("reports only", &t_reports, cpu_reports),
        ("watched", &t_watched, cpu_watched),
    ] {
        println!(
            "| {kind} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.9)),
            1e3 * cpu / probes as f64
        );
    }
    println!(
        "ratio whole / reports only: median {:.1}×, API server CPU {:.1}×",
        ms(percentile(&t_whole, 0.5)) / ms(percentile(&t_reports, 0.5)).max(1e-3),
        cpu_whole / cpu_reports.max(0.01)
    );
    println!(
        "ratio reports only / watched: median {:.1}×, API server CPU {:.1}×",
        ms(percentile(&t_reports, 0.5)) / ms(percentile(&t_watched, 0.5)).max(1e-3),
        cpu_reports / cpu_watched.max(0.01)
    );
    println!(
        "the watches (nodes, gpufed's pods): listed in {:.1} s; this process's RSS +{:.1} MiB; member API server CPU over {} s with nothing changing: {:.0} ms with them, {:.0} ms before",
        synced.as_secs_f64(),
        rss_watched as f64 / 1024.0,
        IDLE.as_secs(),
        idle_cpu * 1e3,
        idle_base * 1e3
    );
    println!(
        "a node as the watch keeps it: {:.0} bytes of JSON, whole {:.0} bytes ({:.1}×)",
        kept_bytes as f64 / nodes as f64,
        whole_bytes as f64 / nodes as f64,
        whole_bytes as f64 / kept_bytes.max(1) as f64
    );
    drop(cache);
    fed.down();
}
