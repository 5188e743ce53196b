use super::*;

fn placement(job: &str, nodes: &[&str]) -> pl::Placement {
    pl::Placement {
        job: job.into(),
        provider: "p".into(),
        model: "NVIDIA-H100-80GB-HBM3".into(),
        workers: nodes
            .iter()
            .map(|n| pl::WorkerPlacement {
                node: (*n).into(),
                gpus: vec![0],
            })
            .collect(),
        price: 1,
        evicts: Vec::new(),
    }
}

/// Node `fresh` passed at 95 s, `old` at 10 s, `new` never.
fn passed_at(_: &str, node: &str) -> Option<u64> {
    match node {
        "fresh" => Some(95_000),
        "old" => Some(10_000),
        _ => None,
    }
}

fn placements() -> Vec<pl::Placement> {
    vec![
        placement("on-fresh", &["fresh", "fresh"]),
        placement("on-old", &["fresh", "old", "old"]),
        placement("on-new", &["new"]),
        placement("any-gpus", &["old"]),
    ]
}

fn jobs(ps: &[pl::Placement]) -> Vec<&str> {
    ps.iter().map(|p| p.job.as_str()).collect()
}

#[test]
fn verified_only_work_on_nodes_not_passed_lately_waits_and_only_those_nodes_are_wanted() {
    let mut ps = placements();
    let verified_only = |id: &str| id != "any-gpus";
    let d = defer_stale(
        &mut ps,
        verified_only,
        passed_at,
        100_000,
        Duration::from_secs(60),
    );
    assert_eq!(jobs(&ps), ["on-fresh", "any-gpus"], "the rest waits");
    assert_eq!(
        d.nodes,
        [
            ("p".to_owned(), "old".to_owned()),
            ("p".to_owned(), "new".to_owned())
        ],
        "each stale node once, and `fresh` not at all"
    );
    assert_eq!(d.jobs.len(), 2);
    let (id, message) = &d.jobs[0];
    assert_eq!(id, "on-old");
    assert!(
        message.contains("once its node old passes a new challenge") && message.contains("60s"),
        "{message}"
    );
    // Exactly at the age limit still counts as lately.
    let mut ps = placements();
    let d = defer_stale(&mut ps, verified_only, passed_at, 70_000, Duration::from_secs(60));
    assert_eq!(jobs(&ps), ["on-fresh", "on-old", "any-gpus"]);
    assert_eq!(d.nodes, [("p".to_owned(), "new".to_owned())]);
}

#[test]
fn with_the_check_off_nothing_waits() {
    let mut ps = placements();
    let d = defer_stale(&mut ps, |_| true, passed_at, 100_000, Duration::ZERO);
    assert_eq!(d, Deferred::default());
    assert_eq!(ps, placements());
}

#[test]
fn several_stale_nodes_are_named_together() {
    let mut ps = vec![placement("gang", &["old", "new"])];
    let d = defer_stale(&mut ps, |_| true, passed_at, 100_000, Duration::from_secs(60));
    assert!(ps.is_empty());
    assert!(
        d.jobs[0]
            .1
            .contains("once its nodes new, old pass a new challenge"),
        "{:?}",
        d.jobs
    );
}
