use super::*;

const HOUR: u64 = 3_600_000;

fn rounds() -> Rounds {
    Rounds::new(HOUR, 5_000)
}

fn judged(next_due_ms: u64, passed: bool) -> NodeSchedule {
    NodeSchedule {
        judged: true,
        next_due_ms,
        passed,
        ..NodeSchedule::default()
    }
}

#[test]
fn rounds_start_at_multiples_of_the_interval_on_the_fleet_clock() {
    let r = rounds();
    assert_eq!(r.start_of(10 * HOUR), 10 * HOUR);
    assert_eq!(r.start_of(10 * HOUR + 1), 10 * HOUR);
    assert_eq!(r.start_of(11 * HOUR - 1), 10 * HOUR);
    assert_eq!(r.next_after(10 * HOUR), 11 * HOUR);
    assert_eq!(r.next_after(11 * HOUR - 1), 11 * HOUR);
    assert_eq!(r.until_next(11 * HOUR - 250), 250);
    assert!(r.crossed(11 * HOUR - 1, 11 * HOUR));
    assert!(!r.crossed(11 * HOUR, 12 * HOUR - 1));
    // Zero is no period: one millisecond, no division by zero.
    assert_eq!(Rounds::new(0, 0).next_after(7), 8);
}

#[test]
fn nodes_that_joined_at_different_times_are_next_challenged_together() {
    let r = rounds();
    // Two nodes join an hour apart, at odd times, and each is challenged at once.
    let (a, b) = (10 * HOUR + 1_234, 10 * HOUR + 2_998_000);
    for t in [a, b] {
        assert_eq!(r.decide(&NodeSchedule::default(), t), Some(Why::Join));
        assert_eq!(r.issued_at(Why::Join, t), t);
    }
    // Both are due at the same instant: the next round.
    assert_eq!(r.next_due(a), r.next_due(b));
    let due = r.next_due(a);
    assert_eq!(r.decide(&judged(due, true), due - 1), None);
    assert_eq!(r.decide(&judged(due, true), due), Some(Why::Round));
}

#[test]
fn a_round_challenge_issued_late_runs_on_the_rounds_clock() {
    let r = rounds();
    let round = 11 * HOUR;
    // Within the grace: its own clock (the hub's spread over the fleet).
    assert_eq!(r.issued_at(Why::Round, round + 1_200), round + 1_200);
    // Later (the member was unreachable, the report withheld): the node lost the time.
    assert_eq!(r.issued_at(Why::Round, round + 60_000), round + 5_000);
    // Not a round's: its own clock.
    assert_eq!(r.issued_at(Why::Changed, round + 60_000), round + 60_000);
    // A node away for several rounds is challenged in the current one.
    assert_eq!(
        r.decide(&judged(8 * HOUR, true), round + 60_000),
        Some(Why::Round)
    );
}

#[test]
fn a_challenge_between_rounds_gives_way_to_the_round() {
    let r = rounds();
    let round = 11 * HOUR;
    let open = |issued, why| NodeSchedule {
        open: Some((issued, why)),
        ..judged(round, true)
    };
    // Opened just before the round (a join, a change, a wanted verdict): replaced by it.
    for why in [Why::Join, Why::Changed, Why::Wanted] {
        assert_eq!(r.decide(&open(round - 1, why), round - 1), None);
        assert_eq!(
            r.decide(&open(round - 1, why), round),
            Some(Why::Round),
            "{why:?}"
        );
    }
    // A round's own challenge runs to its end, even past the next round's start.
    assert_eq!(r.decide(&open(round, Why::Round), round + HOUR + 1), None);
    // Opened after the round started: continues.
    assert_eq!(r.decide(&open(round + 1, Why::Changed), round + 2), None);
}

#[test]
fn only_a_node_in_good_standing_is_challenged_between_rounds() {
    let r = rounds();
    let now = 11 * HOUR + 600_000;
    let due = 12 * HOUR;
    let changed = |passed| NodeSchedule {
        changed: true,
        ..judged(due, passed)
    };
    let wanted = |passed| NodeSchedule {
        wanted: true,
        ..judged(due, passed)
    };
    assert_eq!(r.decide(&changed(true), now), Some(Why::Changed));
    assert_eq!(r.decide(&wanted(true), now), Some(Why::Wanted));
    // A node that failed cannot pick its own time by changing its report.
    assert_eq!(r.decide(&changed(false), now), None);
    assert_eq!(r.decide(&wanted(false), now), None);
    assert_eq!(r.decide(&changed(false), due), Some(Why::Round));
    assert_eq!(r.decide(&judged(due, true), now), None);
}

#[test]
fn a_verdict_counts_until_the_next_rounds_should_be_judged() {
    let r = rounds();
    let timeout = 120_000;
    // From a round: to the next round's start, its grace and the timeout.
    assert_eq!(r.valid_until(11 * HOUR, timeout), 12 * HOUR + 5_000 + timeout);
    // A join late in the round counts as long, not an hour more.
    assert_eq!(r.valid_until(12 * HOUR - 1, timeout), 12 * HOUR + 5_000 + timeout);
    assert_eq!(Why::Round.label(), "round");
    assert_eq!(Why::Wanted.label(), "wanted");
}

#[test]
fn only_a_round_proves_a_gpu_and_a_failure_unproves_it() {
    let set = |u: &[&str]| {
        u.iter()
            .map(|s| (*s).to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    // A join proves nothing, whatever passed.
    assert!(proven_after(Why::Join, ["GPU-1", "GPU-2"], &set(&[])).is_empty());
    // The round proves what passed it, and only that.
    let proven = proven_after(Why::Round, ["GPU-1", "GPU-2"], &set(&[]));
    assert_eq!(proven, set(&["GPU-1", "GPU-2"]));
    // Between rounds: a new GPU is not proven yet; one that failed (not among the passed)
    // is no longer; the rest stay.
    let proven = proven_after(Why::Changed, ["GPU-1", "GPU-3"], &proven);
    assert_eq!(proven, set(&["GPU-1"]));
    assert_eq!(proven_after(Why::Wanted, ["GPU-1"], &proven), set(&["GPU-1"]));
    assert_eq!(proven_after(Why::Round, ["GPU-3"], &proven), set(&["GPU-3"]));
}

#[test]
fn a_node_whose_round_began_under_the_previous_leader_is_resumed_at_once_on_its_own_clock() {
    let r = rounds();
    let round = 11 * HOUR;
    let resumed = NodeSchedule {
        resumed: true,
        ..NodeSchedule::default()
    };
    // Not judged by this leader: at once, even a minute past the round's grace, and
    // named for what it is.
    assert_eq!(r.decide(&resumed, round + 60_000), Some(Why::Resumed));
    assert_eq!(r.issued_at(Why::Resumed, round + 60_000), round + 60_000);
    assert_eq!(Why::Resumed.label(), "resumed");
    // Like a join it proves nothing new (the round's other nodes answered earlier), and
    // a GPU proven before stays proven when it passes.
    let proven = ["GPU-1".to_owned()].into_iter().collect();
    assert_eq!(proven_after(Why::Resumed, ["GPU-1", "GPU-2"], &proven), proven);
    // Once open, the next round replaces it like any challenge between rounds.
    let open = NodeSchedule {
        open: Some((round + 60_000, Why::Resumed)),
        ..resumed
    };
    assert_eq!(r.decide(&open, round + 61_000), None);
    assert_eq!(r.decide(&open, round + HOUR), Some(Why::Round));
}
