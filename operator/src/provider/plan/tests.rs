use super::*;
use crate::fleet::{GpuNode, GpuPod};
use gpufed_api::common::ConditionStatus;

fn provider(status: Option<GpuProviderStatus>) -> GpuProvider {
    let mut p: GpuProvider = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": "a", "generation": 3},
        "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc", "key": "kubeconfig"},
                 "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                 "prices": [{"model": "H100", "pricePerGpuHour": "2"}], "heartbeatGracePeriod": "60s",
                 "resourceName": "gpufed.io/gpu"}
    }))
    .expect("provider");
    p.status = status;
    p
}

fn view() -> MemberView {
    let node = |name: &str, domain: Option<&str>| GpuNode {
        name: name.into(),
        model: "H100".into(),
        memory_mib: 81920,
        compute: (9, 0),
        nvlink_domain: domain.map(Into::into),
        allocatable: 8,
        ready: true,
        taints: Vec::new(),
        labels: Default::default(),
        resources: None,
    };
    MemberView {
        nodes: vec![node("n1", Some("d1")), node("n2", None)],
        pods: vec![GpuPod {
            node: "n1".into(),
            gpus: 3,
            attempt_key: None,
            requests: Default::default(),
            extended: Default::default(),
        }],
        ..MemberView::default()
    }
}

/// When a provider counts as lost ([`provider_lost`]).
mod lost;

fn cond(st: &GpuProviderStatus, t: &str) -> (ConditionStatus, String) {
    let c = conditions::find(&st.conditions, t).expect("condition present");
    (c.status, c.reason.clone())
}

#[test]
fn reachable_member_reports_inventory_and_ready() {
    let st = status(&provider(None), &Ok(view()), 1000, "T1000");
    let inv = st.inventory.clone().expect("inventory");
    assert_eq!((inv.nodes, inv.gpus, inv.allocatable), (2, 16, 13));
    assert_eq!(inv.models[0].largest_nvlink_domain, 8);
    assert_eq!(cond(&st, "Ready"), (ConditionStatus::True, "Serving".into()));
    assert_eq!(st.last_heartbeat_time.as_deref(), Some("T1000"));
    assert_eq!(st.observed_generation, Some(3));
}

#[test]
fn unreachable_turns_not_ready_only_after_the_grace_period() {
    let ok = status(&provider(None), &Ok(view()), 1000, &crate::time::format(1000));
    let down: Probe = Err("connection refused".into());
    let within = status(
        &provider(Some(ok.clone())),
        &down,
        1030,
        &crate::time::format(1030),
    );
    assert_eq!(
        cond(&within, "Reachable"),
        (ConditionStatus::False, "Unreachable".into())
    );
    assert_eq!(
        cond(&within, "Ready").0,
        ConditionStatus::True,
        "still within 60s grace"
    );
    let after = status(&provider(Some(within)), &down, 1061, &crate::time::format(1061));
    assert_eq!(
        cond(&after, "Ready"),
        (ConditionStatus::False, "HeartbeatLost".into())
    );
    assert!(heartbeat_lost(&provider(Some(after)), 1061));
}

#[test]
fn reconciling_twice_writes_the_same_status() {
    let first = status(&provider(None), &Ok(view()), 1000, "T");
    let second = status(&provider(Some(first.clone())), &Ok(view()), 1000, "T");
    assert_eq!(first, second);
}

#[test]
fn invalid_spec_stalls() {
    let mut p = provider(None);
    p.spec.kubeconfig_secret_ref = None;
    let st = status(&p, &Ok(view()), 1000, "T");
    assert_eq!(
        cond(&st, "Stalled"),
        (ConditionStatus::True, "InvalidSpec".into())
    );
}

fn gpu_node(name: &str, allocatable: u32) -> GpuNode {
    GpuNode {
        name: name.into(),
        model: "H100".into(),
        memory_mib: 81920,
        compute: (9, 0),
        nvlink_domain: Some("d1".into()),
        allocatable,
        ready: true,
        taints: Vec::new(),
        labels: Default::default(),
        resources: None,
    }
}

#[test]
fn invalid_nodes_are_named_and_not_counted() {
    let mut v = view();
    v.nodes
        .extend([gpu_node("twin", 8), gpu_node("z", 0), gpu_node("twin", 8)]);
    let st = status(&provider(None), &Ok(v), 1000, "T");
    let inv = st.inventory.clone().expect("inventory");
    // As placement offers it: the valid nodes only.
    assert_eq!((inv.nodes, inv.gpus, inv.allocatable), (2, 16, 13));
    assert_eq!(
        cond(&st, "Ready"),
        (ConditionStatus::True, REASON_INVALID_NODES_IGNORED.into())
    );
    let msg = &conditions::find(&st.conditions, "Ready").expect("ready").message;
    assert!(msg.contains(r#"node "twin" is listed 2 times"#), "{msg}");
    assert!(msg.contains(r#"node "z" reports no allocatable GPUs"#), "{msg}");
}

#[test]
fn a_member_reporting_only_invalid_nodes_is_not_ready() {
    let v = MemberView {
        nodes: vec![gpu_node("twin", 8), gpu_node("twin", 8), gpu_node("z", 0)],
        ..MemberView::default()
    };
    let st = status(&provider(None), &Ok(v), 1000, "T");
    assert_eq!(
        cond(&st, "Ready"),
        (ConditionStatus::False, REASON_INVALID_INVENTORY.into())
    );
    assert_eq!(st.inventory.map(|i| i.gpus), Some(0));
}

#[test]
fn huge_counts_from_a_member_saturate_instead_of_overflowing() {
    let pod = |node: &str| GpuPod {
        node: node.into(),
        gpus: u32::MAX,
        attempt_key: None,
        requests: Default::default(),
        extended: Default::default(),
    };
    let v = MemberView {
        nodes: vec![gpu_node("a", u32::MAX), gpu_node("b", u32::MAX), gpu_node("c", 7)],
        pods: vec![pod("a"), pod("a"), pod("c"), pod("c")],
        ..MemberView::default()
    };
    let inv = inventory(&v);
    assert_eq!((inv.nodes, inv.gpus), (3, u32::MAX));
    // a and c are held beyond their size, b is all free: its u32::MAX saturates the sum.
    assert_eq!(inv.allocatable, u32::MAX);
    assert_eq!(
        (inv.models[0].count, inv.models[0].allocatable),
        (u32::MAX, u32::MAX)
    );
    let st = status(&provider(None), &Ok(v), 1000, "T");
    assert_eq!(cond(&st, "Ready"), (ConditionStatus::True, "Serving".into()));
}

#[test]
fn a_draining_provider_says_what_still_runs_and_what_holds_it() {
    let mut p = provider(None);
    p.spec.drain = true;
    let mut st = status(&p, &Ok(view()), 1000, "T1000");
    drain(&mut st, &p, 3, &["team/llm".to_owned()], 1000, "T1000");
    assert_eq!(
        cond(&st, "Ready"),
        (ConditionStatus::False, REASON_DRAINING.into())
    );
    let msg = &conditions::find(&st.conditions, "Ready").expect("Ready").message;
    assert!(
        msg.contains("evicting 3 running attempt(s)") && msg.contains("disruption budget of team/llm"),
        "{msg}"
    );
    drain(&mut st, &p, 0, &[], 1001, "T1001");
    assert_eq!(
        cond(&st, "Ready"),
        (ConditionStatus::False, REASON_DRAINED.into())
    );
    // Not draining: untouched; unreachable: the heartbeat's story stands.
    p.spec.drain = false;
    let mut serving = status(&p, &Ok(view()), 1000, "T1000");
    drain(&mut serving, &p, 3, &[], 1000, "T1000");
    assert_eq!(cond(&serving, "Ready"), (ConditionStatus::True, "Serving".into()));
    p.spec.drain = true;
    let mut down = status(&p, &Err("refused".into()), 1000, "T1000");
    let before = down.clone();
    drain(&mut down, &p, 3, &[], 1000, "T1000");
    assert_eq!(down, before);
}

#[test]
fn a_drain_keeps_its_start_and_says_when_its_deadline_ends_the_wait() {
    let t0 = crate::time::parse("2026-01-01T00:00:00Z").expect("time");
    let at = |secs: i64| crate::time::format(t0 + secs);
    let mut p = provider(None);
    p.spec.drain = true;
    p.spec.drain_deadline = Some("30m".into());
    // The first status starts the clock; later ones keep it.
    let first = status(&p, &Ok(view()), t0, &at(0));
    assert_eq!(first.drain_start_time.as_deref(), Some(at(0).as_str()));
    p.status = Some(first);
    let mut st = status(&p, &Ok(view()), t0 + 60, &at(60));
    assert_eq!(st.drain_start_time.as_deref(), Some(at(0).as_str()));
    let held = ["team/llm".to_owned()];
    drain(&mut st, &p, 2, &held, t0 + 60, &at(60));
    let msg = conditions::find(&st.conditions, "Ready")
        .expect("Ready")
        .message
        .clone();
    assert!(
        msg.contains("disruption budget of team/llm")
            && msg.contains(&format!("at most until {} (spec.drainDeadline)", at(1800))),
        "{msg}"
    );
    drain(&mut st, &p, 2, &[], t0 + 1800, &at(1800));
    let msg = conditions::find(&st.conditions, "Ready")
        .expect("Ready")
        .message
        .clone();
    assert!(
        msg.contains("evicting 2 running attempt(s); spec.drainDeadline (30m) has passed"),
        "{msg}"
    );
    // Uncordoned: the clock is gone; a new drain starts afresh.
    p.spec.drain = false;
    p.status = Some(st);
    let st = status(&p, &Ok(view()), t0 + 1900, &at(1900));
    assert_eq!(st.drain_start_time, None);
    p.spec.drain = true;
    p.status = Some(st);
    let st = status(&p, &Ok(view()), t0 + 2000, &at(2000));
    assert_eq!(st.drain_start_time.as_deref(), Some(at(2000).as_str()));
}

fn tainted(
    key: &str,
    value: &str,
    effect: gpufed_api::tolerations::TaintEffect,
) -> gpufed_api::tolerations::NodeTaint {
    gpufed_api::tolerations::NodeTaint {
        key: key.into(),
        value: value.into(),
        effect,
    }
}

#[test]
fn nodes_with_taints_the_workers_do_not_tolerate_are_named_and_not_counted() {
    use gpufed_api::tolerations::TaintEffect::{NoExecute, NoSchedule, PreferNoSchedule};
    let mut v = view();
    v.nodes[0].taints = vec![tainted("dedicated", "ml", NoSchedule)];
    // The GPU resource's own taint and a soft one never keep workers off.
    v.nodes[1].taints = vec![
        tainted("gpufed.io/gpu", "present", NoSchedule),
        tainted("spot", "", PreferNoSchedule),
    ];
    let st = status(&provider(None), &Ok(v.clone()), 1000, "T1000");
    let inv = st.inventory.clone().expect("inventory");
    assert_eq!((inv.nodes, inv.gpus, inv.allocatable), (1, 8, 8));
    let ready = conditions::find(&st.conditions, "Ready").expect("Ready");
    assert_eq!(ready.reason, "Serving");
    assert!(
        ready.message.ends_with(
            "not offered: 1 GPU node(s) with taints the workers do not tolerate (spec.workerTolerations): n1 (dedicated=ml:NoSchedule)"
        ),
        "{}",
        ready.message
    );

    // Tolerated by the provider's spec: counted again.
    let mut p = provider(None);
    p.spec.worker_tolerations = vec![gpufed_api::tolerations::WorkerToleration::exists(
        "dedicated",
        None,
    )];
    let st = status(&p, &Ok(v.clone()), 1000, "T1000");
    assert_eq!(st.inventory.expect("inventory").gpus, 16);

    // Every node tainted: not ready, saying which taint of which node.
    v.nodes[1].taints.push(tainted("maintenance", "", NoExecute));
    let st = status(&provider(None), &Ok(v), 1000, "T1000");
    let ready = conditions::find(&st.conditions, "Ready").expect("Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, REASON_UNTOLERATED_TAINTS)
    );
    assert!(
        ready.message.contains("n2 (maintenance:NoExecute)"),
        "{}",
        ready.message
    );
    assert_eq!(st.inventory.expect("inventory").gpus, 0);
}

#[test]
fn many_tainted_nodes_are_counted_after_the_first_few() {
    let mut v = view();
    v.nodes = (0..5)
        .map(|i| {
            let mut n = gpu_node(&format!("n{i}"), 1);
            n.taints = vec![tainted("x", "", gpufed_api::tolerations::TaintEffect::NoSchedule)];
            n
        })
        .collect();
    let (offered, sentence) = withhold_tainted(&v, &provider(None).spec);
    assert!(offered.nodes.iter().all(|n| !n.ready));
    assert!(sentence.starts_with("5 GPU node(s)"), "{sentence}");
    assert!(sentence.ends_with("n2 (x:NoSchedule); 2 more"), "{sentence}");
    // Nothing tainted: the view itself, untouched.
    let clean = view();
    let (same, none) = withhold_tainted(&clean, &provider(None).spec);
    assert!(matches!(same, std::borrow::Cow::Borrowed(_)) && none.is_empty());
}
