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
    }
}

fn draining(p: &[&str]) -> BTreeSet<String> {
    p.iter().map(|s| (*s).to_owned()).collect()
}

fn evicted(d: &Drain) -> Vec<&str> {
    d.evict.iter().map(|(j, _)| j.as_str()).collect()
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
