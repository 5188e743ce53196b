//! `why` against what the operator decides beyond the catalog: member views, verified
//! nodes, avoided providers, tenant policies, and the job constraints left to it.
use serde_json::json;

use super::tests::{NOW, queued, reasons};
use super::*;
use crate::fixtures::{job, provider, ready_h100_status, ready_rtx_status};
use gpufed_api::provider::Inventory;
use rebuild::MAX_NODES_PER_MODEL;

#[test]
fn member_views_rebuild_nodes_from_the_summary() {
    let h100 = ready_h100_status(8, 16).inventory.unwrap();
    let v = member_view(&h100);
    assert_eq!(v.nodes.len(), 2);
    assert!(
        v.nodes
            .iter()
            .all(|n| n.allocatable == 8 && n.nvlink_domain.is_some() && n.ready)
    );
    assert_eq!(v.nodes[0].compute, (9, 0));
    assert_eq!(
        v.pods.len(),
        1,
        "the 8 allocated GPUs are packed on the first node"
    );
    assert_eq!((v.pods[0].node.as_str(), v.pods[0].gpus), ("m0-n0", 8));

    let mut mixed = ready_rtx_status(5, 6).inventory.unwrap();
    mixed.nodes = 3;
    mixed.models.push(gpufed_api::provider::ModelInventory {
        model: "NVIDIA-H100-80GB-HBM3".into(),
        memory_mib: 81_559,
        compute_capability: "9.0".into(),
        count: 8,
        allocatable: 8,
        largest_nvlink_domain: 8,
    });
    let v = member_view(&mixed);
    let sizes: Vec<(String, u32, bool)> = v
        .nodes
        .iter()
        .map(|n| (n.model.clone(), n.allocatable, n.nvlink_domain.is_some()))
        .collect();
    assert_eq!(
        sizes,
        [
            ("NVIDIA-GeForce-RTX-4090".into(), 3, false),
            ("NVIDIA-GeForce-RTX-4090".into(), 3, false),
            ("NVIDIA-H100-80GB-HBM3".into(), 8, true),
        ]
    );
    assert_eq!(v.pods.iter().map(|p| p.gpus).sum::<u32>(), 1);
    assert!(member_view(&Inventory::default()).nodes.is_empty());

    // A lying or corrupt summary is bounded, not a panic.
    let mut huge = mixed.clone();
    huge.nodes = u32::MAX;
    for m in &mut huge.models {
        (m.count, m.allocatable, m.largest_nvlink_domain) = (u32::MAX, u32::MAX, u32::MAX);
    }
    huge.models[0].largest_nvlink_domain = 0;
    let v = member_view(&huge);
    assert!(v.nodes.len() <= 2 * MAX_NODES_PER_MODEL as usize);
    assert!(v.nodes.iter().all(|n| n.allocatable <= 64));
}

#[test]
fn a_verified_provider_without_verified_nodes_does_not_fit_a_verified_only_job() {
    let mut none = provider("a-none", Some(ready_h100_status(16, 16)));
    if let Some(v) = none.status.as_mut().and_then(|s| s.verification.as_mut()) {
        v.verified_nodes.clear();
    }
    let mut one = provider("b-one", Some(ready_h100_status(16, 16)));
    if let Some(v) = one.status.as_mut().and_then(|s| s.verification.as_mut()) {
        v.verified_nodes.truncate(1);
    }
    let mut probation = provider("c-probation", Some(ready_h100_status(16, 16)));
    if let Some(st) = probation.status.as_mut() {
        let v = st.verification.as_mut().expect("verification");
        v.verified_nodes.clear();
        v.probation_gpus = Some(16);
        let c = st
            .conditions
            .iter_mut()
            .find(|c| c.type_ == "Verified")
            .expect("Verified");
        c.status = ConditionStatus::False;
        c.reason = "OnProbation".into();
        c.message =
            "16 GPUs passed between rounds; on probation, they count from the round at 2026-01-01T00:10:00Z"
                .into();
    }
    let r = explain(&queued(), &[none, one, probation], NOW);
    let got = reasons(&r);
    assert_eq!(got[0], ("a-none", false, "not verified"), "{got:?}");
    assert_eq!(
        got[2],
        (
            "c-probation",
            false,
            "not verified: 16 GPUs passed between rounds; on probation, they count from the round at 2026-01-01T00:10:00Z"
        ),
        "says when they count"
    );
    // One verified 8-GPU node of two: the 2 × 4 job fits on it alone.
    assert!(got[1].1, "{got:?}");
}

/// A provider that forbade the job's last attempt is kept off it for the operator's avoid
/// window (the round's `Job.avoid`), and `why` says so and until when, not "fits now".
#[test]
fn a_provider_that_forbade_the_last_attempt_is_avoided_until_the_window_ends() {
    let j = job(
        "train",
        "team",
        Some(json!({
            "phase": "Recovering",
            "attempts": [{"attempt": 1, "provider": "a", "outcome": "Failed",
                          "reason": "DispatchForbidden", "message": "provider a forbids",
                          "gpuSeconds": 0, "pricePerGpuHour": "2.25",
                          "endTime": "2026-01-01T00:05:00Z"}],
        })),
    );
    let all = [
        provider("a", Some(ready_h100_status(16, 16))),
        provider("b", Some(ready_h100_status(16, 16))),
    ];
    let r = explain(&j, &all, NOW);
    assert_eq!(r.summary, "recovering: the next attempt waits for a provider");
    assert_eq!(
        reasons(&r)[0],
        (
            "a",
            false,
            "refused or did not start this job's last attempt: kept off it until 2026-01-01T00:20:00Z"
        )
    );
    assert!(reasons(&r)[1].1, "{:?}", reasons(&r));
    // Fifteen minutes after that attempt ended, it may go there again.
    let later = NOW + 600;
    let r = explain(&j, &all, later);
    assert!(reasons(&r).iter().all(|(_, fits, _)| *fits), "{:?}", reasons(&r));
}

#[test]
fn a_providers_tenant_policy_is_named_with_the_namespace() {
    use gpufed_api::tenants::{NamespaceSelector, Tenants};
    let kyc = || Tenants {
        namespace_selector: Some(NamespaceSelector {
            match_labels: BTreeMap::from([("gpufed.io/kyc".into(), "verified".into())]),
            ..NamespaceSelector::default()
        }),
        ..Tenants::default()
    };
    let mut selective = provider("a-kyc", Some(ready_h100_status(16, 16)));
    selective.spec.tenants = Some(kyc());
    let mut excluding = provider("b-excludes", Some(ready_h100_status(16, 16)));
    excluding.spec.tenants = Some(Tenants {
        excluded_namespaces: vec!["team".into()],
        ..Tenants::default()
    });
    let open = provider("c-open", Some(ready_h100_status(16, 16)));
    let all = [selective, excluding, open];
    let vetted = BTreeMap::from([("gpufed.io/kyc".to_owned(), "verified".to_owned())]);
    let r = explain_with_labels(&queued(), &all, Some(&vetted), NOW);
    let got = reasons(&r);
    assert!(got[0].1, "labels match: {got:?}");
    assert_eq!(
        got[1],
        (
            "b-excludes",
            false,
            "takes no work from namespace team (spec.tenants)"
        )
    );
    assert!(got[2].1);
    let r = explain_with_labels(&queued(), &all, Some(&BTreeMap::new()), NOW);
    assert_eq!(
        reasons(&r)[0],
        ("a-kyc", false, "takes no work from namespace team (spec.tenants)")
    );
    // A tenant who may not read namespaces is told what could not be checked.
    let r = explain_with_labels(&queued(), &all, None, NOW);
    let (_, fits, why) = reasons(&r)[0];
    assert!(!fits);
    assert!(
        why.contains("namespaceSelector") && why.contains("could not be read"),
        "{why}"
    );
}

#[test]
fn a_node_selector_is_left_to_the_operator_and_said_so() {
    let mut j = queued();
    j.spec.template.spec.rest.insert(
        "nodeSelector".into(),
        json!({"example.com/network": "infiniband"}),
    );
    let r = explain(&j, &[provider("a", Some(ready_h100_status(16, 16)))], NOW);
    let (name, fits, reason) = reasons(&r)[0];
    assert_eq!((name, fits), ("a", true), "{reason}");
    assert!(
        reason.ends_with(
            ", if a node of it is labelled example.com/network=infiniband (not checked here: see the job's Placed condition)"
        ),
        "{reason}"
    );
}

#[test]
fn cpu_and_memory_requests_are_left_to_the_operator_and_said_so() {
    let mut j = queued();
    j.spec.template.spec.containers[0].0.insert(
        "resources".into(),
        json!({"requests": {"cpu": "40", "memory": "100Gi"}}),
    );
    let providers = [provider("a", Some(ready_h100_status(16, 16)))];
    let r = explain(&j, &providers, NOW);
    let (name, fits, reason) = reasons(&r)[0];
    assert_eq!((name, fits), ("a", true), "{reason}");
    assert!(
        reason.ends_with(
            ", if a node of it has 40 CPU and 100 GiB memory free per worker beside its GPUs \
             (not checked here: see the job's Placed condition)"
        ),
        "{reason}"
    );
    j.spec.template.spec.rest.insert(
        "nodeSelector".into(),
        json!({"example.com/network": "infiniband"}),
    );
    let r = explain(&j, &providers, NOW);
    let (_, _, reason) = reasons(&r)[0];
    assert!(
        reason.ends_with(
            ", if a node of it is labelled example.com/network=infiniband and has 40 CPU and 100 GiB \
             memory free per worker beside its GPUs (not checked here: see the job's Placed condition)"
        ),
        "{reason}"
    );
    j.spec.template.spec.containers[0]
        .0
        .insert("resources".into(), json!({"limits": {"rdma/ib": "1"}}));
    let r = explain(&j, &providers, NOW);
    let (_, _, reason) = reasons(&r)[0];
    assert!(
        reason.contains("has 1 rdma/ib free per worker beside its GPUs (not checked here"),
        "{reason}"
    );
}

#[test]
fn node_affinity_and_workers_kept_apart_are_left_to_the_operator_and_said_so() {
    let mut j = queued();
    j.spec.workers = 4;
    j.spec.gpus_per_worker = 1;
    j.spec.template.spec.rest.insert(
        "affinity".into(),
        json!({
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "example.com/network", "operator": "In",
                                       "values": ["infiniband", "roce"]}]}]}},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchExpressions": [{"key": "gpufed.io/rank", "operator": "Exists"}]},
                 "topologyKey": "kubernetes.io/hostname"}]}
        }),
    );
    let r = explain(&j, &[provider("a", Some(ready_h100_status(16, 16)))], NOW);
    let (name, fits, reason) = reasons(&r)[0];
    assert_eq!((name, fits), ("a", true), "{reason}");
    assert!(
        reason.ends_with(
            ", if a node of it is labelled example.com/network in (infiniband,roce), and if it has 4 \
             such nodes free for 1 worker(s) each (not checked here: see the job's Placed condition)"
        ),
        "{reason}"
    );
}

#[test]
fn workers_kept_together_are_checked_as_one_and_their_requests_summed() {
    let mut j = queued();
    j.spec.workers = 4;
    j.spec.gpus_per_worker = 2;
    j.spec.template.spec.containers[0]
        .0
        .insert("resources".into(), json!({"requests": {"cpu": "10"}}));
    j.spec.template.spec.rest.insert(
        "affinity".into(),
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "gpufed.io/rank", "operator": "Exists"}]},
             "topologyKey": "kubernetes.io/hostname"}]}}),
    );
    let r = explain(&j, &[provider("a", Some(ready_h100_status(16, 16)))], NOW);
    let (name, fits, reason) = reasons(&r)[0];
    assert_eq!((name, fits), ("a", true), "{reason}");
    assert!(
        reason.ends_with(
            ", if a node of it has 40 CPU free for all 4 workers (kept on one node) beside its GPUs \
             (not checked here: see the job's Placed condition)"
        ),
        "{reason}"
    );
}

/// NVLink domains smaller than a node rebuild one real node as several: every rebuilt node
/// of a provider whose nodes all verified counts as verified, not only the first as many
/// as it has real nodes.
#[test]
fn verified_nodes_rebuilt_as_several_count_all_their_gpus() {
    let mut st = ready_h100_status(16, 16);
    st.inventory.as_mut().unwrap().models[0].largest_nvlink_domain = 4;
    assert_eq!(st.verification.as_ref().unwrap().verified_nodes.len(), 2);
    let p = provider("a", Some(st.clone()));
    let mut j = queued();
    j.spec.workers = 3;
    let r = explain(&j, std::slice::from_ref(&p), NOW);
    assert!(
        r.providers[0].fits,
        "a 3 × 4 verified-only job fits on 16 verified GPUs: {r:?}"
    );
    let fleet: BTreeMap<String, MemberView> =
        [("a".to_owned(), member_view(st.inventory.as_ref().unwrap()))].into();
    assert_eq!(fleet["a"].nodes.len(), 4);
    let rebuilt = as_rebuilt(&p, &fleet);
    assert_eq!(
        rebuilt.status.unwrap().verification.unwrap().verified_nodes.len(),
        4
    );

    // One of the two real nodes verified: its share, 8 GPUs, is two rebuilt nodes of 4.
    let mut half = p.clone();
    let v = half.status.as_mut().unwrap().verification.as_mut().unwrap();
    v.verified_nodes.truncate(1);
    let marked = as_rebuilt(&half, &fleet)
        .status
        .unwrap()
        .verification
        .unwrap()
        .verified_nodes;
    assert_eq!(marked, ["m0-n0", "m0-n1"]);
    let r = explain(&j, &[half], NOW);
    assert!(!r.providers[0].fits, "12 GPUs do not fit on 8 verified: {r:?}");
}
