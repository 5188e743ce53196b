//! One provider's bad report must cost only that provider: tests of the cleaning, the
//! per-provider check and the round's retry without the provider the engine blames.

use std::sync::Arc;

use gpufed_api::{ComputeJob, GpuProvider};

use super::*;
use crate::fleet::GpuPod;
use crate::mapping::{snapshot, snapshot_checked};

fn provider(name: &str) -> Arc<GpuProvider> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc"},
                     "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                     "prices": [{"model": "H100", "pricePerGpuHour": "2"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                                       "message": "", "lastTransitionTime": "2026-11-25T12:00:00Z"}]}
        }))
        .expect("provider"),
    )
}

/// A queued job of one worker with 2 GPUs.
fn job(name: &str) -> Arc<ComputeJob> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
            "spec": {"workers": 1, "gpusPerWorker": 2, "maxPricePerGpuHour": "3",
                     "gpu": {"tier": "Any", "interconnect": "Any"}, "placement": {"verifiedOnly": false},
                     "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}}
        }))
        .expect("job"),
    )
}

fn node(name: &str, allocatable: u32) -> GpuNode {
    GpuNode {
        name: name.into(),
        model: "H100".into(),
        memory_mib: 81920,
        compute: (9, 0),
        nvlink_domain: None,
        allocatable,
        ready: true,
        taints: Vec::new(),
        labels: Default::default(),
        resources: None,
    }
}

fn report(nodes: Vec<GpuNode>) -> MemberView {
    MemberView {
        nodes,
        ..MemberView::default()
    }
}

fn names(p: &pl::Provider) -> Vec<&str> {
    p.nodes.iter().map(|n| n.name.as_str()).collect()
}

#[test]
fn duplicate_and_gpu_less_nodes_are_dropped_and_named() {
    let raw = report(vec![
        node("a", 8),
        node("dup", 8),
        node("z", 0),
        node("dup", 4),
        node("b", 8),
    ]);
    let (clean, problems) = view(&raw);
    let kept: Vec<&str> = clean.nodes.iter().map(|n| n.name.as_str()).collect();
    // Every copy of a duplicated name goes: which one is real cannot be told.
    assert_eq!(kept, ["a", "b"]);
    assert_eq!(
        problems,
        [
            Problem::DuplicateNode {
                node: "dup".into(),
                copies: 2
            },
            Problem::NoGpus { node: "z".into() },
        ]
    );
    assert_eq!(problems.iter().map(Problem::nodes).sum::<usize>(), 3);
    // A valid report is passed through untouched, without a copy.
    let valid = report(vec![node("a", 8), node("b", 4)]);
    let (same, none) = view(&valid);
    assert!(matches!(same, Cow::Borrowed(_)) && none.is_empty());
    assert_eq!(*same, valid);
}

#[test]
fn a_bad_report_costs_only_its_own_provider() {
    let good = report(vec![node("g1", 8), node("g2", 8)]);
    for bad in [
        report(vec![node("b1", 8), node("b1", 8)]),
        report(vec![node("z1", 0)]),
    ] {
        let fleet = BTreeMap::from([("good".to_owned(), good.clone()), ("bad".to_owned(), bad)]);
        let (snap, findings) = snapshot_checked(&[job("j")], &[provider("bad"), provider("good")], &fleet);
        let offered = |id: &str| {
            snap.providers
                .iter()
                .find(|p| p.id == id)
                .expect("provider offered")
        };
        assert_eq!(
            names(offered("good")),
            ["g1", "g2"],
            "the good provider's nodes all stay"
        );
        assert!(names(offered("bad")).is_empty(), "no invalid node is offered");
        assert!(findings.iter().all(|f| f.provider == "bad") && !findings.is_empty());
        let decisions = pl::place(&snap, &pl::Config::default()).expect("the round is not rejected");
        assert_eq!(decisions.placements.len(), 1, "{decisions:?}");
        assert_eq!(decisions.placements[0].provider, "good");
    }
}

#[test]
fn the_valid_nodes_of_a_bad_report_are_still_offered() {
    let bad = report(vec![node("b1", 8), node("ok", 8), node("b1", 8), node("z1", 0)]);
    let fleet = BTreeMap::from([("bad".to_owned(), bad)]);
    let snap = snapshot(&[job("j")], &[provider("bad")], &fleet);
    assert_eq!(names(&snap.providers[0]), ["ok"]);
    let decisions = pl::place(&snap, &pl::Config::default()).expect("accepted");
    assert_eq!(decisions.placements[0].workers[0].node, "ok");
}

#[test]
fn pod_counts_of_any_size_saturate_and_leave_no_gpu_free() {
    let huge = GpuPod {
        node: "a".into(),
        gpus: u32::MAX,
        attempt_key: None,
        requests: Default::default(),
        extended: Default::default(),
    };
    let mut raw = report(vec![node("a", u32::MAX), node("b", u32::MAX)]);
    raw.pods = vec![huge.clone(); 5];
    let fleet = BTreeMap::from([("p".to_owned(), raw)]);
    let snap = snapshot(&[job("j")], &[provider("p")], &fleet);
    let a = &snap.providers[0].nodes[0];
    assert_eq!((a.name.as_str(), a.gpus), ("a", pl::MAX_GPUS_PER_NODE));
    assert!(a.free.is_empty(), "held beyond its size: nothing free");
    let decisions = pl::place(&snap, &pl::Config::default()).expect("accepted");
    assert_eq!(decisions.placements[0].workers[0].node, "b");
}

fn pl_provider(id: &str, nodes: &[(&str, u8)]) -> pl::Provider {
    pl::Provider {
        id: id.into(),
        region: "eu".into(),
        healthy: true,
        verified: false,
        reputation: 0.5,
        prices: BTreeMap::from([("H100".to_owned(), 2_000_000)]),
        nodes: nodes
            .iter()
            .map(|&(name, gpus)| {
                pl::Node::new(name, "H100", 81920, pl::ComputeCapability::new(9, 0), None, gpus)
            })
            .collect(),
        tenants: None,
    }
}

#[test]
fn a_part_the_engine_rejects_sits_out_and_is_named() {
    let mut findings = Vec::new();
    let mut liar = pl_provider("x", &[("n", 4)]);
    liar.nodes[0].free = vec![0, 7]; // a free GPU the node does not have
    let rejected = part(
        "x",
        &report(vec![node("n", 4)]),
        |_| (liar, Vec::new()),
        &mut findings,
    );
    assert!(rejected.is_none());
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].provider, "x");
    assert!(matches!(
        findings[0].problem,
        Problem::Rejected(pl::SnapshotError::BadNode { .. })
    ));
    // A sound part passes, whole.
    let sound = pl_provider("y", &[("n", 4)]);
    let mut findings = Vec::new();
    let accepted = part(
        "y",
        &report(vec![node("n", 4)]),
        |_| (sound.clone(), Vec::new()),
        &mut findings,
    );
    assert_eq!(accepted.map(|p| p.providers), Some(vec![sound]));
    assert!(findings.is_empty());
}

fn queued() -> pl::Job {
    pl::Job {
        id: "team/j".into(),
        namespace: "team".into(),
        gpus_per_worker: 2,
        workers: 1,
        ..pl::Job::default()
    }
}

#[test]
fn a_rejected_round_is_retried_without_the_blamed_provider() {
    let good = pl_provider("good", &[("g1", 8)]);
    let twice = pl_provider("bad", &[("x", 8), ("x", 8)]);
    let mut snap = pl::Snapshot {
        providers: vec![twice, good.clone()],
        jobs: vec![queued()],
        ..pl::Snapshot::default()
    };
    assert!(
        pl::place(&snap, &pl::Config::default()).is_err(),
        "the engine rejects it whole"
    );
    let (decisions, left_out) = place_leaving_out(&mut snap, &pl::Config::default());
    let decisions = decisions.expect("placed without the bad provider");
    assert_eq!(decisions.placements[0].provider, "good");
    assert_eq!(left_out.len(), 1);
    assert_eq!(left_out[0].provider, "bad");
    assert!(matches!(
        left_out[0].problem,
        Problem::Rejected(pl::SnapshotError::DuplicateNode { .. })
    ));
    assert_eq!(snap.providers, [good]);
}

#[test]
fn an_allocation_the_engine_rejects_blames_its_provider() {
    let alloc = |job: &str, provider: &str| pl::RunningAllocation {
        job: job.into(),
        namespace: "team".into(),
        priority: 0,
        start_time: 0,
        provider: provider.into(),
        gpus: vec![pl::GpuRef {
            node: "nowhere".into(),
            gpu: 0,
        }],
        spread_group: None,
        evicting: false,
        budget: None,
        ..Default::default()
    };
    let mut snap = pl::Snapshot {
        providers: vec![
            pl_provider("good", &[("g1", 8)]),
            pl_provider("bad", &[("b1", 8)]),
        ],
        running: vec![alloc("team/r1", "bad"), alloc("team/r2", "gone")],
        jobs: vec![queued()],
        ..pl::Snapshot::default()
    };
    let (decisions, left_out) = place_leaving_out(&mut snap, &pl::Config::default());
    assert_eq!(decisions.expect("placed").placements.len(), 1);
    let blamed: Vec<&str> = left_out.iter().map(|f| f.provider.as_str()).collect();
    // "gone" is not in the round: only its allocation is dropped.
    assert_eq!(blamed, ["bad", "gone"]);
    assert_eq!(names(&snap.providers[0]), ["g1"]);
    assert!(snap.running.is_empty());
}

#[test]
fn a_valid_round_is_placed_as_before() {
    let snap = pl::Snapshot {
        providers: vec![pl_provider("a", &[("a1", 8)]), pl_provider("b", &[("b1", 4)])],
        jobs: vec![queued()],
        ..pl::Snapshot::default()
    };
    let mut mine = snap.clone();
    let (decisions, left_out) = place_leaving_out(&mut mine, &pl::Config::default());
    assert!(left_out.is_empty());
    assert_eq!(mine, snap);
    assert_eq!(decisions, pl::place(&snap, &pl::Config::default()));
}

#[test]
fn summaries_stay_short_whatever_the_report() {
    let long = "n".repeat(10_000);
    let nodes: Vec<GpuNode> = (0..1000)
        .flat_map(|i| [node(&format!("{long}{i}"), 8), node(&format!("{long}{i}"), 8)])
        .collect();
    let problems = problems(&report(nodes));
    assert_eq!(problems.len(), 1000);
    let text = summary(&problems);
    assert!(text.len() < 600, "{} chars", text.len());
    assert!(text.ends_with("(and 997 more)"), "{text}");
    assert!(text.contains("is listed 2 times"), "{text}");
}
