//! The placement round's pure parts at fleet scale: what the leader does with its caches
//! before and after the engine — the snapshot (which jobs queue, templates' requests,
//! members' reports), avoidance, budgets, quotas, finding each decision's job — beside
//! the engine itself, on 100 providers × 100 nodes and 20 000 jobs (3 000 of them
//! running). Lines marked `'` are parts of others, or the way before a fix, timed alone
//! and left out of the total.
//!
//! `cargo bench -p gpufed-operator --bench round` prints milliseconds per round for each
//! part; without `--bench` (as `cargo test --all-targets` runs it) a small smoke version.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_operator::fleet::{CpuMemory, GpuNode, GpuPod, MemberView, NodeCpuMemory, NodeExtended};
use gpufed_operator::{mapping, placement, quota, service};
use gpufed_placement as pl;
use serde_json::json;

/// Most jobs take any GPU; some data-center or consumer cards only.
const TIERS: [&str; 4] = ["Any", "Datacenter", "Any", "Consumer"];

const MODELS: [(&str, u32, (u8, u8)); 3] = [
    ("NVIDIA-H100-80GB-HBM3", 81_920, (9, 0)),
    ("NVIDIA-A100-SXM4-40GB", 40_960, (8, 0)),
    ("NVIDIA-GeForce-RTX-4090", 24_564, (8, 9)),
];

fn provider(i: usize) -> Arc<GpuProvider> {
    let prices: Vec<_> = MODELS
        .iter()
        .enumerate()
        .map(|(m, (model, _, _))| json!({"model": model, "pricePerGpuHour": format!("{}.{:02}", 1 + m, i % 100)}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": format!("p{i:03}")},
            "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc"},
                     "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP",
                     "region": if i.is_multiple_of(2) { "eu" } else { "us" }, "prices": prices},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "",
                                       "lastTransitionTime": "2026-11-25T12:00:00Z"}]}
        }))
        .expect("provider"),
    )
}

/// Provider `i`'s nodes: 8 GPUs of one model each, 128 cores, 1 TiB, every fourth with
/// 4 RDMA devices; some of their CPU held by other pods.
fn view(i: usize, nodes: usize) -> MemberView {
    let nodes = (0..nodes)
        .map(|n| {
            let (model, vram, cc) = MODELS[(i + n) % MODELS.len()];
            let cpu = |c: u64| CpuMemory {
                cpu_millis: c * 1000,
                memory_mib: c * 8 * 1024,
                ephemeral_mib: None,
            };
            let rdma = if n % 4 == 0 { 4 } else { 0 };
            GpuNode {
                name: format!("n{n:03}"),
                model: model.into(),
                memory_mib: vram,
                compute: cc,
                nvlink_domain: (model != MODELS[2].0).then(|| format!("d{n}")),
                allocatable: 8,
                ready: true,
                taints: Vec::new(),
                labels: BTreeMap::from([("topology.kubernetes.io/zone".to_owned(), format!("z{}", n % 3))]),
                resources: Some(NodeCpuMemory {
                    allocatable: cpu(128),
                    requested: cpu((n % 5) as u64),
                    extended: Some(NodeExtended {
                        allocatable: [("rdma/ib".to_owned(), rdma)]
                            .into_iter()
                            .filter(|(_, n)| *n > 0)
                            .collect(),
                        requested: BTreeMap::new(),
                    }),
                }),
            }
        })
        .collect();
    let pods = vec![GpuPod {
        node: "n000".into(),
        gpus: 2,
        attempt_key: None,
        requests: CpuMemory::default(),
        extended: BTreeMap::new(),
    }];
    MemberView {
        nodes,
        pods,
        ..MemberView::default()
    }
}

/// Job `i`: a mix of sizes and requests; every `running`-th one placed and running on
/// provider `i % providers`.
fn job(i: usize, providers: usize, running: bool) -> Arc<ComputeJob> {
    let g = [1, 1, 2, 4, 8][i % 5];
    let workers = [1, 1, 1, 2, 4][(i / 5) % 5];
    let mut resources = json!({});
    if i.is_multiple_of(2) {
        resources = json!({"requests": {"cpu": format!("{}", 4 * g), "memory": format!("{}Gi", 16 * g)}});
    }
    if i % 10 == 3 {
        resources["limits"] = json!({"rdma/ib": "1"});
    }
    let mut spec = json!({
        "workers": workers, "gpusPerWorker": g, "maxPricePerGpuHour": "4",
        "priority": i % 7,
        "gpu": {"tier": TIERS[i % 4], "interconnect": "Any"},
        "placement": {"verifiedOnly": false},
        "template": {"spec": {"containers": [{"name": "main", "image": "registry.example/train:1", "resources": resources,
                     "command": ["python", "train.py"], "env": [{"name": "EPOCHS", "value": "3"}]}]}}
    });
    if i % 10 == 5 {
        spec["template"]["spec"]["nodeSelector"] =
            json!({"topology.kubernetes.io/zone": format!("z{}", i % 3)});
    }
    let mut j: ComputeJob = serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": format!("j{i:05}"), "namespace": format!("team{}", i % 20), "uid": format!("uid-{i}"),
                     "generation": 1, "resourceVersion": format!("{}", 1000 + i), "creationTimestamp": "2026-11-25T12:00:00Z"},
        "spec": spec
    }))
    .expect("job");
    if running {
        let p = i % providers;
        j.status = Some(
            serde_json::from_value(json!({
                "phase": "Running",
                "placement": {"attempt": 1, "provider": format!("p{p:03}"), "gpus": g * workers,
                              "pricePerGpuHour": "1.50", "placedTime": "2026-11-25T12:00:00Z",
                              "workers": (0..workers).map(|r| json!({"rank": r, "node": format!("n{:03}", (i / providers + r) % 100), "gpuUuids": []})).collect::<Vec<_>>()}
            }))
            .expect("status"),
        );
    }
    Arc::new(j)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (providers_n, nodes, jobs_n, rounds) = if full {
        (100, 100, 20_000, 5)
    } else {
        (4, 10, 200, 1)
    };
    let providers: Vec<Arc<GpuProvider>> = (0..providers_n).map(provider).collect();
    let fleet: BTreeMap<String, MemberView> = (0..providers_n)
        .map(|i| (format!("p{i:03}"), view(i, nodes)))
        .collect();
    let jobs: Vec<Arc<ComputeJob>> = (0..jobs_n).map(|i| job(i, providers_n, i % 20 < 3)).collect();
    let mut times: BTreeMap<&str, f64> = BTreeMap::new();
    let time = |times: &mut BTreeMap<&str, f64>, name: &'static str, t: Instant| {
        *times.entry(name).or_default() += t.elapsed().as_secs_f64() * 1e3;
    };
    let mut placed = 0;
    // The first round reads every template (`mapping::spec_facts`); the timed ones find
    // them read, as the leader's rounds do while specs stay unchanged.
    let cold = Instant::now();
    let _ = mapping::snapshot_checked(&jobs, &providers, &fleet);
    let cold_ms = cold.elapsed().as_secs_f64() * 1e3;
    for _ in 0..rounds {
        let t = Instant::now();
        let queued = jobs.iter().filter(|j| mapping::is_queued(j)).count();
        time(
            &mut times,
            "2' of which: which jobs queue (is_queued, timed alone)",
            t,
        );
        let t = Instant::now();
        let (mut snap, _) = mapping::snapshot_checked(&jobs, &providers, &fleet);
        time(&mut times, "2 snapshot (mapping::snapshot_checked)", t);
        assert_eq!(snap.jobs.len(), queued);
        let t = Instant::now();
        mapping::avoid_forbidding(&mut snap, &jobs, 1_800_000_000);
        mapping::tenants::admit(&mut snap, &providers, |_| None);
        let (budgets, replicas) = service::budget::keys(&jobs, &[]);
        let drained = placement::drain::round_victims(&jobs, &providers, &replicas, &budgets, |_| None, 0);
        assert!(drained.evict.is_empty());
        service::budget::apply(&mut snap, &budgets, &replicas);
        snap.quotas = quota::plan::caps(&[], &jobs, 1_800_000_000);
        time(&mut times, "3 avoidance, tenants, budgets, drains, quotas", t);
        let t = Instant::now();
        let (decisions, _) = mapping::sanitize::place_leaving_out(&mut snap, &pl::Config::default());
        let decisions = decisions.expect("placed");
        time(&mut times, "4 the engine (sanitize::place_leaving_out)", t);
        let t = Instant::now();
        let index = mapping::JobIndex::new(&jobs);
        let found = decisions
            .placements
            .iter()
            .map(|p| &p.job)
            .chain(decisions.unplaced.iter().map(|u| &u.job))
            .filter(|id| index.get(id).is_some())
            .count();
        time(&mut times, "5 each decision's job (mapping::JobIndex)", t);
        assert_eq!(found, decisions.placements.len() + decisions.unplaced.len());
        // The way the round found them before the index: a scan of the job list per
        // decision. Timed on the first 1 000 decisions, scaled to all of them.
        let t = Instant::now();
        let ids: Vec<&String> = decisions.placements.iter().map(|p| &p.job).take(1000).collect();
        let scanned = ids
            .iter()
            .filter(|id| jobs.iter().any(|j| mapping::job_id(j) == ***id))
            .count();
        assert_eq!(scanned, ids.len());
        let scale = found as f64 / ids.len().max(1) as f64;
        *times
            .entry("5' each decision's job by a scan (before the index, scaled)")
            .or_default() += t.elapsed().as_secs_f64() * 1e3 * scale;
        placed = decisions.placements.len();
    }
    let per_round = |ms: f64| ms / rounds as f64;
    println!(
        "round: {providers_n} providers × {nodes} nodes, {jobs_n} jobs, {placed} placed per round; ms per round:"
    );
    let total: f64 = times
        .iter()
        .filter(|(name, _)| !name.contains('\''))
        .map(|(_, ms)| ms)
        .sum();
    for (name, ms) in &times {
        println!("  {name}: {:.1} ms ({:.0} %)", per_round(*ms), 100.0 * ms / total);
    }
    println!("  total: {:.1} ms", per_round(total));
    println!("  (the first snapshot, reading every template: {cold_ms:.1} ms)");
}
