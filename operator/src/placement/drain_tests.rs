use super::*;

fn alloc(job: &str, provider: &str, start: u64, budget: Option<&str>) -> pl::RunningAllocation {
    pl::RunningAllocation {
        job: job.into(),
        namespace: "team".into(),
        priority: 100,
        start_time: start,
        provider: provider.into(),
        gpus: Vec::new(),
        spread_group: None,
        evicting: false,
        budget: budget.map(Into::into),
        ..Default::default()
    }
}

fn draining(p: &[&str]) -> BTreeSet<String> {
    p.iter().map(|s| (*s).to_owned()).collect()
}

/// The evictions of the `draining` providers' drains.
fn victims(
    running: &[pl::RunningAllocation],
    budgets: &BTreeMap<String, u32>,
    draining: &BTreeSet<String>,
) -> Drain {
    victims_by(running, budgets, |r| {
        draining.contains(&r.provider).then_some(Leave::Drain)
    })
}

fn evicted(d: &Drain) -> Vec<&str> {
    d.evict.iter().map(|(j, _, _)| j.as_str()).collect()
}

#[test]
fn everything_on_a_draining_provider_goes_and_nothing_elsewhere() {
    let mut snap = pl::Snapshot {
        running: vec![
            alloc("team/b", "a", 20, None),
            alloc("team/a", "a", 10, None),
            alloc("team/c", "b", 5, None),
            alloc("team/d", "a", 1, None),
        ],
        ..pl::Snapshot::default()
    };
    snap.running[3].evicting = true;
    let d = victims(&snap.running, &snap.budgets, &draining(&["a"]));
    assert_eq!(
        evicted(&d),
        ["team/a", "team/b"],
        "oldest first, the leaving one skipped"
    );
    assert!(d.held.is_empty());
    assert_eq!(
        victims(&snap.running, &snap.budgets, &draining(&[])),
        Drain::default()
    );
}

#[test]
fn a_services_replicas_go_only_as_its_budget_allows() {
    // Three healthy replicas, two on the draining provider; two must stay.
    let snap = pl::Snapshot {
        running: vec![
            alloc("team/llm-0", "a", 10, Some("team/llm")),
            alloc("team/llm-1", "a", 11, Some("team/llm")),
            alloc("team/llm-2", "b", 12, Some("team/llm")),
            alloc("team/batch", "a", 30, None),
        ],
        budgets: BTreeMap::from([("team/llm".to_owned(), 2)]),
        ..pl::Snapshot::default()
    };
    let d = victims(&snap.running, &snap.budgets, &draining(&["a"]));
    assert_eq!(evicted(&d), ["team/llm-0", "team/batch"]);
    assert_eq!(
        d.held,
        BTreeMap::from([("a".to_owned(), BTreeSet::from(["team/llm".to_owned()]))])
    );
    // Once llm-0 leaves (marked), its replacement not ready yet: llm-1 still waits.
    let mut next = snap.clone();
    next.running[0].evicting = true;
    next.running.retain(|r| r.job != "team/batch");
    let d = victims(&next.running, &next.budgets, &draining(&["a"]));
    assert!(d.evict.is_empty(), "{:?}", d.evict);
    // The replacement ready on b: now llm-1 may go.
    next.running.push(alloc("team/llm-3", "b", 40, Some("team/llm")));
    assert_eq!(
        evicted(&victims(&next.running, &next.budgets, &draining(&["a"]))),
        ["team/llm-1"]
    );
}

#[test]
fn a_replica_without_a_budget_key_is_not_held() {
    // Not ready (no key), or its service has no budget (key unknown): it goes.
    let snap = pl::Snapshot {
        running: vec![
            alloc("team/llm-0", "a", 10, None),
            alloc("team/web-0", "a", 11, Some("team/web")),
        ],
        ..pl::Snapshot::default()
    };
    assert_eq!(
        evicted(&victims(&snap.running, &snap.budgets, &draining(&["a"]))),
        ["team/llm-0", "team/web-0"]
    );
}

fn provider(name: &str, tenants: serde_json::Value, drain: bool) -> Arc<GpuProvider> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"mode": "Pull", "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP",
                     "region": "eu", "prices": [{"model": "H100", "pricePerGpuHour": "2"}],
                     "drain": drain, "tenants": tenants}
        }))
        .expect("provider"),
    )
}

fn live_job(ns: &str, name: &str, provider: &str, start: &str) -> Arc<ComputeJob> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}")},
            "spec": {"gpusPerWorker": 1, "maxPricePerGpuHour": "2",
                     "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}},
            "status": {"phase": "Running", "placement": {"attempt": 1, "provider": provider, "gpus": 1,
                       "pricePerGpuHour": "2", "placedTime": start, "workers": []}}
        }))
        .expect("job"),
    )
}

#[test]
fn an_evicting_tenant_policy_evicts_only_the_namespaces_it_no_longer_admits() {
    let vetted = BTreeMap::from([("gpufed.io/kyc".to_owned(), "verified".to_owned())]);
    let labels = |ns: &str| match ns {
        "vetted" => Some(vetted.clone()),
        "plain" => Some(BTreeMap::new()),
        _ => None,
    };
    let kyc = serde_json::json!({"namespaceSelector": {"matchLabels": {"gpufed.io/kyc": "verified"}},
                                 "excludedNamespaces": ["banned"], "evictRunning": true});
    let keep = serde_json::json!({"excludedNamespaces": ["plain"]});
    let providers = [
        provider("strict", kyc, false),
        provider("lenient", keep, false),
        provider("drains", serde_json::json!({}), true),
    ];
    let jobs = [
        live_job("vetted", "ok", "strict", "2026-01-01T00:00:00Z"),
        live_job("plain", "out", "strict", "2026-01-01T00:00:01Z"),
        live_job("banned", "out", "strict", "2026-01-01T00:00:02Z"),
        // Labels not known: a selector never evicts on a guess.
        live_job("unknown", "stays", "strict", "2026-01-01T00:00:03Z"),
        // A policy without evictRunning governs new placements only.
        live_job("plain", "stays", "lenient", "2026-01-01T00:00:04Z"),
        live_job("vetted", "drained", "drains", "2026-01-01T00:00:05Z"),
    ];
    let d = round_victims(&jobs, &providers, &BTreeMap::new(), &BTreeMap::new(), labels, 0);
    let got: Vec<(&str, &str, Leave)> = d
        .evict
        .iter()
        .map(|(j, p, w)| (j.as_str(), p.as_str(), *w))
        .collect();
    assert_eq!(
        got,
        [
            ("plain/out", "strict", Leave::Tenancy),
            ("banned/out", "strict", Leave::Tenancy),
            ("vetted/drained", "drains", Leave::Drain),
        ]
    );
    // The mark stands while the policy still refuses, and not once it admits again.
    assert!(tenancy_evicts(Some(&providers[0]), "plain", labels));
    assert!(
        tenancy_evicts(Some(&providers[0]), "unknown", labels),
        "not known: stands"
    );
    assert!(
        tenancy_evicts(None, "plain", labels),
        "provider not listed: stands"
    );
    assert!(!tenancy_evicts(Some(&providers[0]), "vetted", labels));
    assert!(
        !tenancy_evicts(Some(&providers[1]), "plain", labels),
        "no evictRunning"
    );
    // A malformed selector (In without values: its CEL rule dropped by a 1.20 server)
    // matches nothing; it must not evict everyone.
    let broken = serde_json::json!({"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]},
                                    "evictRunning": true});
    let broken = [provider("strict", broken, false)];
    let d = round_victims(&jobs, &broken, &BTreeMap::new(), &BTreeMap::new(), labels, 0);
    assert!(d.evict.is_empty(), "{:?}", d.evict);
    assert!(!tenancy_evicts(Some(&broken[0]), "plain", labels));
}

#[test]
fn a_drain_past_its_deadline_is_no_longer_held_by_budgets() {
    // Both replicas of a service that must keep both run on the draining provider.
    let mut p = (*provider("a", serde_json::json!({}), true)).clone();
    p.spec.drain_deadline = Some("1h".into());
    let start = "2026-01-01T00:00:00Z";
    let t0 = crate::time::parse(start).expect("time");
    p.status = Some(gpufed_api::provider::GpuProviderStatus {
        drain_start_time: Some(start.into()),
        ..Default::default()
    });
    let jobs = [
        live_job("team", "llm-0", "a", "2025-12-31T00:00:00Z"),
        live_job("team", "llm-1", "a", "2025-12-31T00:00:01Z"),
        live_job("team", "web-0", "b", "2025-12-31T00:00:02Z"),
        live_job("team", "web-1", "b", "2025-12-31T00:00:03Z"),
    ];
    let replicas = BTreeMap::from([
        ("team/llm-0".to_owned(), "team/llm".to_owned()),
        ("team/llm-1".to_owned(), "team/llm".to_owned()),
        ("team/web-0".to_owned(), "team/web".to_owned()),
        ("team/web-1".to_owned(), "team/web".to_owned()),
    ]);
    let budgets = BTreeMap::from([("team/llm".to_owned(), 2), ("team/web".to_owned(), 2)]);
    let none = |_: &str| None;
    let providers = [Arc::new(p.clone())];
    assert_eq!(p.spec.drain_deadline_at(Some(start)), Some(t0 + 3600));
    // Before the deadline: held, and said so.
    let d = round_victims(&jobs, &providers, &replicas, &budgets, none, t0 + 3599);
    assert!(d.evict.is_empty(), "{:?}", d.evict);
    assert_eq!(
        d.held,
        BTreeMap::from([("a".to_owned(), BTreeSet::from(["team/llm".to_owned()]))])
    );
    // From the deadline on: everything on a goes; b's service is not touched.
    let d = round_victims(&jobs, &providers, &replicas, &budgets, none, t0 + 3600);
    let got: Vec<(&str, Leave)> = d.evict.iter().map(|(j, _, w)| (j.as_str(), *w)).collect();
    assert_eq!(
        got,
        [
            ("team/llm-0", Leave::DrainOverdue),
            ("team/llm-1", Leave::DrainOverdue)
        ]
    );
    assert!(d.held.is_empty());
    // No clock yet (the provider controller has not written the start), no deadline, or
    // one that cannot be read: budgets hold, as without a deadline.
    for (start, dl) in [
        (None, Some("1h")),
        (Some(start), None),
        (Some("soon"), Some("1h")),
    ] {
        let mut q = p.clone();
        q.spec.drain_deadline = dl.map(Into::into);
        q.status.as_mut().expect("status").drain_start_time = start.map(Into::into);
        let d = round_victims(&jobs, &[Arc::new(q)], &replicas, &budgets, none, t0 + 99_999);
        assert!(d.evict.is_empty(), "{start:?} {dl:?}: {:?}", d.evict);
    }
}

#[test]
fn an_overdue_eviction_still_counts_against_the_budget() {
    // llm has three replicas, two on the overdue provider a, one on draining b (no
    // deadline). a's two go regardless; b's must then wait for replacements.
    let running = [
        alloc("team/llm-0", "a", 10, Some("team/llm")),
        alloc("team/llm-1", "a", 11, Some("team/llm")),
        alloc("team/llm-2", "b", 12, Some("team/llm")),
    ];
    let budgets = BTreeMap::from([("team/llm".to_owned(), 2)]);
    let d = victims_by(&running, &budgets, |r| match r.provider.as_str() {
        "a" => Some(Leave::DrainOverdue),
        _ => Some(Leave::Drain),
    });
    assert_eq!(evicted(&d), ["team/llm-0", "team/llm-1"]);
    assert_eq!(
        d.held,
        BTreeMap::from([("b".to_owned(), BTreeSet::from(["team/llm".to_owned()]))])
    );
}
