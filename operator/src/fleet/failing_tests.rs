use super::*;

fn streak(first: i64, last: i64, probes: u32) -> Failing {
    Failing {
        term: 1,
        first,
        last,
        probes,
        cycle: 15,
    }
}

#[test]
fn a_streak_counts_up_to_now_while_its_probes_keep_failing() {
    // Probes every 5 s, 10 s member timeout: a cycle of 15 s.
    let f = streak(100, 160, 13);
    assert_eq!(f.observed(160), 60, "at the latest failed probe");
    assert_eq!(
        f.observed(170),
        70,
        "between two probes (or while a reconcile that failed after probing waits for its retry): still counting"
    );
    assert_eq!(f.observed(175), 75, "one cycle past the latest failed probe");
    assert_eq!(
        f.observed(600),
        75,
        "no probe ran for longer than a cycle (the hub down): the streak stops counting"
    );
}

#[test]
fn a_single_failed_probe_is_no_span() {
    let f = streak(100, 100, 1);
    assert_eq!(f.observed(100), 0);
    assert_eq!(f.observed(110), 0, "not even within its cycle");
    assert_eq!(f.observed(10_000), 0);
    let two = streak(100, 105, 2);
    assert_eq!(two.observed(110), 10);
    assert_eq!(
        two.observed(10_000),
        20,
        "two probes: up to a cycle past the second"
    );
}

#[test]
fn a_clock_behind_the_streak_counts_nothing_negative() {
    let f = streak(100, 130, 4);
    assert_eq!(f.observed(90), 0);
    let f = Failing {
        cycle: -5,
        ..streak(100, 130, 4)
    };
    assert_eq!(f.observed(500), 30, "a negative cycle is none");
}
