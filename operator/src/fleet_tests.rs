use super::*;

#[test]
fn an_older_agents_report_parses_without_cpu_or_memory_and_a_newer_one_round_trips() {
    let old = serde_json::json!({
        "nodes": [{"name": "n", "model": "A100", "memoryMib": 40960, "compute": [8, 0],
                   "nvlinkDomain": null, "allocatable": 4, "ready": true}],
        "pods": [{"node": "n", "gpus": 1, "attemptKey": "u/1"}]
    });
    let view: MemberView = serde_json::from_value(old.clone()).expect("an older report");
    assert_eq!(view.nodes[0].resources, None, "not reported: not limited");
    assert!(view.pods[0].requests.is_zero());
    assert_eq!(
        serde_json::to_value(&view).expect("json")["nodes"][0].get("resources"),
        None,
        "an older hub reads what this one sends for such a node unchanged"
    );
    let mut new = view;
    new.nodes[0].resources = Some(NodeCpuMemory {
        allocatable: CpuMemory {
            cpu_millis: 64_000,
            memory_mib: 524_288,
            ephemeral_mib: None,
        },
        requested: CpuMemory {
            cpu_millis: 1500,
            memory_mib: 0,
            ephemeral_mib: None,
        },
        extended: None,
    });
    new.pods[0].requests = CpuMemory {
        cpu_millis: 40_000,
        memory_mib: 1024,
        ephemeral_mib: None,
    };
    let json = serde_json::to_value(&new).expect("json");
    assert_eq!(
        json["nodes"][0]["resources"],
        serde_json::json!({"allocatable": {"cpuMillis": 64000, "memoryMib": 524288},
                           "requested": {"cpuMillis": 1500, "memoryMib": 0}})
    );
    assert_eq!(
        json["pods"][0]["requests"],
        serde_json::json!({"cpuMillis": 40000, "memoryMib": 1024})
    );
    assert_eq!(serde_json::from_value::<MemberView>(json).expect("parses"), new);
}

#[tokio::test]
async fn only_a_failed_probe_of_this_process_counts() {
    let fleet = Fleet::default();
    assert!(
        !fleet.probe_failed("a").await,
        "no probe yet: nothing is known to be down"
    );
    fleet.mark_unreachable("a", 1, 100, 15).await;
    fleet.mark_unreachable("a", 1, 130, 15).await;
    assert!(fleet.probe_failed("a").await);
    let streak = |first, last, probes| {
        Some(Failing {
            term: 1,
            first,
            last,
            probes,
            cycle: 15,
        })
    };
    assert_eq!(
        fleet.failing("a", 1).await,
        streak(100, 130, 2),
        "the streak's first and latest failures"
    );
    assert!(
        fleet.snapshot().await.is_empty(),
        "an unreachable provider offers nothing"
    );
    fleet.update("a", MemberView::default()).await;
    assert!(!fleet.probe_failed("a").await);
    assert_eq!(fleet.failing("a", 1).await, None);
    assert_eq!(fleet.snapshot().await.len(), 1);
    fleet.mark_unreachable("a", 1, 500, 15).await;
    assert_eq!(fleet.failing("a", 1).await, streak(500, 500, 1), "a new streak");
    // A new leadership term: the old streak is no evidence; a failure starts afresh.
    assert_eq!(fleet.failing("a", 2).await, None);
    assert!(fleet.probe_failed("a").await, "still unreachable to this process");
    fleet.mark_unreachable("a", 2, 900, 15).await;
    let fresh = Failing {
        term: 2,
        first: 900,
        last: 900,
        probes: 1,
        cycle: 15,
    };
    assert_eq!(fleet.failing("a", 2).await, Some(fresh));
    assert_eq!(fleet.failing("a", 1).await, None);
}

fn node(name: &str) -> GpuNode {
    GpuNode {
        name: name.into(),
        model: "H100".into(),
        memory_mib: 81_559,
        compute: (9, 0),
        nvlink_domain: None,
        allocatable: 8,
        ready: true,
        taints: Vec::new(),
        labels: BTreeMap::new(),
        resources: None,
    }
}

fn texts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

#[tokio::test]
async fn a_reports_only_probe_refreshes_reports_and_requests_and_nothing_else() {
    let fleet = Fleet::default();
    assert!(!fleet.probed_within("a", Duration::from_secs(5)).await);
    assert_eq!(
        fleet.merge_reports("a", NodeReports::default()).await,
        None,
        "no view yet: probe whole"
    );
    let whole = MemberView {
        nodes: vec![node("g1"), node("g2")],
        pods: vec![GpuPod {
            node: "g1".into(),
            gpus: 1,
            attempt_key: None,
            requests: CpuMemory::default(),
            extended: Default::default(),
        }],
        reports: texts(&[("g1", "old-1"), ("g2", "old-2")]),
        challenges: texts(&[("g1", "req-1")]),
    };
    fleet.update("a", whole.clone()).await;
    assert!(fleet.probed_within("a", Duration::from_secs(5)).await);
    assert!(
        !fleet.probed_within("a", Duration::ZERO).await,
        "older than nothing"
    );
    fleet.mark_unready("a", &["g2".into()]).await;
    let fresh = NodeReports {
        // g2 dropped its report; a CPU node's report is not a GPU node's.
        reports: texts(&[("g1", "new-1"), ("cpu-node", "x")]),
        challenges: texts(&[("g1", "req-1-open"), ("g2", "req-2")]),
    };
    let merged = fleet
        .merge_reports("a", fresh.clone())
        .await
        .expect("a view is held");
    assert_eq!(merged.reports, texts(&[("g1", "new-1")]));
    assert_eq!(merged.challenges, fresh.challenges);
    assert_eq!(merged.pods, whole.pods, "pods as the whole probe saw them");
    assert_eq!(merged.nodes.len(), 2);
    assert!(
        !merged.nodes[1].ready,
        "a node seen failing stays so until a whole probe"
    );
    assert_eq!(
        fleet.snapshot().await["a"],
        merged,
        "what placement reads is the merged view"
    );
    fleet.mark_unreachable("a", 1, 0, 15).await;
    assert!(
        !fleet.probed_within("a", Duration::from_secs(5)).await,
        "a failed probe: whole again"
    );
    assert_eq!(fleet.merge_reports("a", fresh).await, None);
}

#[tokio::test]
async fn a_deleted_provider_is_forgotten_whole() {
    let fleet = Fleet::default();
    fleet.update("kept", MemberView::default()).await;
    fleet.update("gone", MemberView::default()).await;
    fleet.mark_unreachable("gone-unreachable", 1, 100, 15).await;
    let gone = fleet.retain(|p| p == "kept").await;
    assert_eq!(gone, ["gone", "gone-unreachable"]);
    let snap = fleet.snapshot().await;
    assert_eq!(snap.keys().collect::<Vec<_>>(), ["kept"]);
    assert!(!fleet.probe_failed("gone-unreachable").await);
    assert!(!fleet.probed_within("gone", Duration::from_secs(60)).await);
    assert!(fleet.retain(|p| p == "kept").await.is_empty(), "once");
}

#[test]
fn none_is_no_nvlink_domain() {
    assert!(!labels::is_nvlink_domain("none") && !labels::is_nvlink_domain(" "));
    assert!(labels::is_nvlink_domain("nvl8-0a1b"));
}
