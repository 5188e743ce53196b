//! The simulator: reproducible, and no policy ever hands out a busy GPU.
#![allow(clippy::unwrap_used)]

use gpufed_placement::sim::{Outcome, Params, Policy, Trace, simulate, write_outputs};

fn small() -> Params {
    Params {
        providers: 6,
        nodes: 60,
        hours: 6,
        mtbf_hours: 4.0,
        ..Params::default()
    }
}

#[test]
fn same_seed_same_outcome_and_no_conflicts() {
    let p = small();
    let trace = Trace::new(&p);
    assert!(trace.jobs() > 50);
    for policy in [Policy::Ours, Policy::FirstFit, Policy::Spread] {
        let a = simulate(&trace, &p, policy, |_| {});
        let b = simulate(&Trace::new(&p), &p, policy, |_| {});
        assert_eq!(a.conflicts, 0, "{policy:?}");
        assert!(!a.started.is_empty());
        assert_eq!(
            (a.started, a.samples, a.cost, a.failovers),
            (b.started, b.samples, b.cost, b.failovers)
        );
    }
}

#[test]
fn outputs_are_written() {
    let p = Params { hours: 2, ..small() };
    let trace = Trace::new(&p);
    let outcomes: Vec<Outcome> = [Policy::Ours, Policy::Spread]
        .iter()
        .map(|&x| simulate(&trace, &p, x, |_| {}))
        .collect();
    let dir = std::env::temp_dir().join(format!("gpufed-sim-test-{}", std::process::id()));
    let table = write_outputs(&dir, &p, &outcomes).unwrap();
    assert!(table.contains("ours") && table.contains("spread"));
    let svg = std::fs::read_to_string(dir.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    let csv = std::fs::read_to_string(dir.join("timeseries.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + outcomes.iter().map(|o| o.samples.len()).sum::<usize>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
