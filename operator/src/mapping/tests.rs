use super::*;
use crate::fleet::{GpuNode, GpuPod};
use gpufed_api::job_status::{Placement, WorkerPlacement};
use gpufed_api::serving::{Spread, SpreadDomain};

pub(super) fn provider(name: &str, ready: bool) -> Arc<GpuProvider> {
    let status = if ready { "True" } else { "False" };
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc"},
                     "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                     "prices": [{"model": "NVIDIA-H100", "pricePerGpuHour": "2.5"},
                                {"model": "NVIDIA-GeForce-RTX-4090", "pricePerGpuHour": "0.3"}]},
            "status": {"conditions": [{"type": "Ready", "status": status, "reason": "R", "message": "",
                                       "lastTransitionTime": "2026-11-25T12:00:00Z"}],
                       "reputation": {"score": "80", "jobsCompleted": 0, "jobsFailedByProvider": 0}}
        }))
        .expect("provider"),
    )
}

pub(super) fn job(name: &str, tier: &str, placed_on: Option<(&str, &str)>) -> Arc<ComputeJob> {
    let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
        "spec": {"workers": 1, "gpusPerWorker": 2, "maxPricePerGpuHour": "3",
                 "gpu": {"tier": tier, "interconnect": "Any"},
                 "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}}
    }))
    .expect("job");
    if let Some((provider, node)) = placed_on {
        j.status = Some(placed(provider, "2.5", 2, &[node]));
    }
    Arc::new(j)
}

/// A status placing one worker on each of `nodes` of `provider` (attempt 1), `gpus` in all.
pub(super) fn placed(provider: &str, price: &str, gpus: u32, nodes: &[&str]) -> gpufed_api::ComputeJobStatus {
    gpufed_api::ComputeJobStatus {
        placement: Some(Placement {
            attempt: 1,
            provider: provider.into(),
            gpus,
            price_per_gpu_hour: price.into(),
            workers: (0..)
                .zip(nodes)
                .map(|(rank, node)| WorkerPlacement {
                    rank,
                    node: (*node).into(),
                    gpu_uuids: vec![],
                })
                .collect(),
            placed_time: "2026-11-25T12:00:00Z".into(),
            running_time: None,
            node_unreachable_since: None,
            preempted: None,
        }),
        ..Default::default()
    }
}

pub(super) fn view() -> MemberView {
    let node = |name: &str, model: &str| GpuNode {
        name: name.into(),
        model: model.into(),
        memory_mib: 81920,
        compute: (9, 0),
        nvlink_domain: Some("d".into()),
        allocatable: 8,
        ready: true,
        taints: Vec::new(),
        labels: Default::default(),
        resources: None,
    };
    MemberView {
        nodes: vec![node("h1", "NVIDIA-H100"), node("g1", "NVIDIA-GeForce-RTX-4090")],
        pods: vec![
            // The live job's own pod must not count twice; a foreign pod counts.
            GpuPod {
                node: "h1".into(),
                gpus: 2,
                attempt_key: Some("uid-live/1".into()),
                requests: Default::default(),
                extended: Default::default(),
            },
            GpuPod {
                node: "h1".into(),
                gpus: 1,
                attempt_key: None,
                requests: Default::default(),
                extended: Default::default(),
            },
        ],
        ..MemberView::default()
    }
}

#[test]
fn live_placements_and_foreign_pods_hold_gpus_exactly_once() {
    let jobs = vec![job("live", "Any", Some(("a", "h1"))), job("new", "Any", None)];
    let fleet = BTreeMap::from([("a".to_owned(), view())]);
    let snap = snapshot(&jobs, &[provider("a", true)], &fleet);
    let h1 = snap.providers[0]
        .nodes
        .iter()
        .find(|n| n.name == "h1")
        .expect("h1");
    assert_eq!(h1.free.len(), 8 - 2 - 1);
    assert_eq!(snap.running.len(), 1);
    assert_eq!(snap.running[0].gpus.len(), 2);
    assert!(
        snap.running[0].gpus.iter().all(|g| !h1.free.contains(&g.gpu)),
        "running GPUs are not free"
    );
    assert_eq!(snap.jobs.len(), 1, "only the unplaced job queues");
    assert!((snap.providers[0].reputation - 0.8).abs() < 1e-9);
    assert_eq!(snap.providers[0].prices.get("NVIDIA-H100"), Some(&2_500_000));
}

#[test]
fn not_ready_providers_offer_nothing() {
    let fleet = BTreeMap::from([("a".to_owned(), view())]);
    let snap = snapshot(&[job("new", "Any", None)], &[provider("a", false)], &fleet);
    assert!(snap.providers.is_empty());
}

#[test]
fn tiers_become_model_lists() {
    let fleet = BTreeMap::from([("a".to_owned(), view())]);
    let jobs = [job("c", "Consumer", None), job("d", "Datacenter", None)];
    let snap = snapshot(&jobs, &[provider("a", true)], &fleet);
    assert_eq!(snap.jobs[0].models, ["NVIDIA-GeForce-RTX-4090"]);
    assert_eq!(snap.jobs[1].models, ["NVIDIA-H100"]);
    assert!(is_consumer("NVIDIA-GeForce-RTX-4090") && !is_consumer("NVIDIA-RTX-A6000"));
}

#[test]
fn workstation_rtx_cards_are_datacenter_tier_not_consumer() {
    // `RTX-4000` and `RTX-5000` start like GeForce numbers: matched by prefix, a
    // workstation card took consumer work and never datacenter work.
    let mut v = view();
    for (name, model) in [
        ("w1", "NVIDIA-RTX-4000-Ada-Generation"),
        ("w2", "Quadro-RTX-5000"),
    ] {
        let mut n = v.nodes[0].clone();
        n.name = name.into();
        n.model = model.into();
        v.nodes.push(n);
    }
    let fleet = BTreeMap::from([("a".to_owned(), v)]);
    let jobs = [job("c", "Consumer", None), job("d", "Datacenter", None)];
    let snap = snapshot(&jobs, &[provider("a", true)], &fleet);
    assert_eq!(snap.jobs[0].models, ["NVIDIA-GeForce-RTX-4090"]);
    assert_eq!(
        snap.jobs[1].models,
        ["NVIDIA-H100", "NVIDIA-RTX-4000-Ada-Generation", "Quadro-RTX-5000"]
    );
}

fn with_spread(job: &Arc<ComputeJob>, group: &str, across: SpreadDomain) -> Arc<ComputeJob> {
    let mut j = (**job).clone();
    j.spec.placement.spread = Some(Spread {
        group: group.into(),
        across,
    });
    Arc::new(j)
}

#[test]
fn spread_groups_reach_queued_jobs_and_running_allocations() {
    let fleet = BTreeMap::from([("a".to_owned(), view())]);
    let jobs = vec![
        with_spread(
            &job("live", "Any", Some(("a", "h1"))),
            "svc",
            SpreadDomain::Provider,
        ),
        with_spread(&job("new", "Any", None), "svc", SpreadDomain::Region),
        job("plain", "Any", None),
    ];
    let snap = snapshot(&jobs, &[provider("a", true)], &fleet);
    assert_eq!(snap.running.len(), 1);
    assert_eq!(snap.running[0].namespace, "team");
    assert_eq!(snap.running[0].spread_group.as_deref(), Some("svc"));
    let spreads: Vec<(&str, Option<&pl::Spread>)> = snap
        .jobs
        .iter()
        .map(|j| (j.id.as_str(), j.spread.as_ref()))
        .collect();
    let region = pl::Spread {
        group: "svc".into(),
        across: pl::SpreadDomain::Region,
    };
    // The bare group name: the engine scopes it by the job's namespace.
    assert_eq!(spreads, [("team/new", Some(&region)), ("team/plain", None)]);

    let plain = snapshot(
        &[job("live", "Any", Some(("a", "h1")))],
        &[provider("a", true)],
        &fleet,
    );
    assert_eq!(plain.running[0].spread_group, None);
}

#[test]
fn only_nodes_whose_every_gpu_verified_serve_verified_only_jobs() {
    let mut p = (*provider("a", true)).clone();
    let st = p.status.get_or_insert_with(Default::default);
    st.conditions.push(gpufed_api::Condition {
        type_: "Verified".into(),
        status: gpufed_api::ConditionStatus::True,
        reason: "ChallengesPassed".into(),
        message: "8 of 16 GPUs verified".into(),
        last_transition_time: "2026-11-25T12:00:00Z".into(),
        observed_generation: None,
    });
    st.verification = Some(gpufed_api::provider::Verification {
        verified_gpus: 8,
        failed_gpus: 8,
        verified_nodes: vec!["h1".into()],
        ..Default::default()
    });
    let fleet = BTreeMap::from([("a".to_owned(), view())]);
    let mut strict = (*job("strict", "Any", None)).clone();
    strict.spec.placement.verified_only = true;
    let snap = snapshot(&[Arc::new(strict)], &[Arc::new(p)], &fleet);
    let verified: Vec<(&str, bool)> = snap.providers[0]
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.verified))
        .collect();
    assert_eq!(verified, [("h1", true), ("g1", false)]);
    assert!(snap.providers[0].verified, "the provider itself is Verified");
    // The engine puts the verified-only job on h1, not on the far cheaper unverified g1.
    let d = pl::place(&snap, &pl::Config::default()).expect("place");
    assert_eq!(d.placements.len(), 1, "{:?}", d.unplaced);
    assert_eq!(d.placements[0].workers[0].node, "h1");
}

/// The operator's side of preemption, round by round: the engine picks the victim, the
/// marked victim is never picked again and its preemptor sits out, and once the victim's
/// attempt has ended the preemptor is placed in its room.
#[test]
fn preemption_marks_waits_then_places() {
    let cfg = crate::placement::Preemption::Namespace.engine_config();
    let fleet = BTreeMap::from([("a".to_owned(), view())]);
    let providers = [provider("a", true)];
    let mut urgent = job("urgent", "Datacenter", None);
    let spec = &mut Arc::make_mut(&mut urgent).spec;
    spec.priority = 500;
    spec.gpus_per_worker = 7;
    spec.placement.preempt_lower_priority = true;
    spec.placement.verified_only = false;
    let live = job("live", "Any", Some(("a", "h1")));

    // Round 1: 5 H100s free, 7 wanted: only by evicting the lower-priority job.
    let snap = snapshot(&[live.clone(), urgent.clone()], &providers, &fleet);
    let d = pl::place(&snap, &cfg).expect("round 1");
    assert_eq!(d.placements.len(), 1);
    assert_eq!(d.placements[0].evicts, ["team/live"]);
    let off = pl::place(&snap, &crate::placement::Preemption::Off.engine_config()).expect("off");
    assert!(off.placements.is_empty(), "with preemption off the job waits");

    // Round 2: the victim is marked; nothing is decided for the preemptor.
    let mark = gpufed_api::job_status::Preemption {
        by: "team/urgent".into(),
        priority: 500,
        time: "2026-11-25T12:05:00Z".into(),
    };
    let mut marked = (*live).clone();
    marked.status = crate::placement::marked_status(&live, &mark);
    let snap = snapshot(&[Arc::new(marked), urgent.clone()], &providers, &fleet);
    assert!(snap.running[0].evicting, "the marked attempt is on its way out");
    assert!(snap.jobs.is_empty(), "the preemptor waits for its victim");

    // Round 3: the victim's attempt ended (its pods are gone too); the preemptor fits.
    let mut view = view();
    view.pods.retain(|p| p.attempt_key.is_none());
    let fleet = BTreeMap::from([("a".to_owned(), view)]);
    let snap = snapshot(&[job("live", "Any", None), urgent], &providers, &fleet);
    let d = pl::place(&snap, &cfg).expect("round 3");
    let placed = d
        .placements
        .iter()
        .find(|p| p.job == "team/urgent")
        .expect("placed");
    assert!(placed.evicts.is_empty(), "nothing more is evicted");
    assert_eq!(placed.workers[0].node, "h1");
}

#[test]
fn nodes_with_untolerated_taints_are_not_offered_and_their_running_work_stays() {
    let mut v = view();
    v.nodes[0].taints = vec![gpufed_api::tolerations::NodeTaint {
        key: "dedicated".into(),
        value: "ml".into(),
        effect: gpufed_api::tolerations::TaintEffect::NoSchedule,
    }];
    let fleet = BTreeMap::from([("a".to_owned(), v)]);
    let jobs = vec![job("live", "Any", Some(("a", "h1"))), job("new", "Any", None)];
    let snap = snapshot(&jobs, &[provider("a", true)], &fleet);
    let names: Vec<&str> = snap.providers[0].nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["g1"], "h1 is tainted");
    assert_eq!(snap.running.len(), 1, "the job already on h1 keeps running");

    // Tolerated by the provider's spec: offered again.
    let mut p = (*provider("a", true)).clone();
    p.spec.worker_tolerations = vec![gpufed_api::tolerations::WorkerToleration::exists(
        "dedicated",
        None,
    )];
    let snap = snapshot(&jobs, &[Arc::new(p)], &fleet);
    assert_eq!(snap.providers[0].nodes.len(), 2);
}
