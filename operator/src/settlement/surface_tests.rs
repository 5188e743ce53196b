use std::collections::BTreeMap;

use gpufed_chain::RoundReport;

use super::*;

fn reasons(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(p, w)| ((*p).into(), (*w).into())).collect()
}

#[test]
fn a_payout_problem_is_told_when_new_or_changed_and_hourly_not_every_round() {
    let mut told = PayoutTold::default();
    let missing = reasons(&[("a", "account missing")]);
    assert_eq!(
        told.due(&missing, 0),
        vec![("a".into(), "account missing".into())]
    );
    assert!(told.due(&missing, 30).is_empty(), "same reason next round: quiet");
    // Not read this round (the node did not answer), back the next: still quiet.
    assert!(told.due(&BTreeMap::new(), 60).is_empty());
    assert!(told.due(&missing, 90).is_empty());
    // Another reason is told at once, and a second provider on its own.
    let frozen = reasons(&[("a", "account frozen"), ("b", "no wallet")]);
    assert_eq!(told.due(&frozen, 120).len(), 2);
    assert!(told.due(&frozen, 120 + RETELL_SECS - 1).is_empty());
    assert_eq!(
        told.due(&frozen, 120 + RETELL_SECS).len(),
        2,
        "again after an hour"
    );
    // Fixed for over an hour, then back with the same reason: its Event expired, told.
    let later = 120 + 3 * RETELL_SECS;
    assert!(told.due(&BTreeMap::new(), later).is_empty());
    assert_eq!(told.due(&frozen, later + 1).len(), 2);
}

#[test]
fn the_message_says_the_records_wait_and_why() {
    let m = payout_message("payout account X is frozen, so it cannot receive tokens");
    assert!(m.starts_with("payout account X is frozen"), "{m}");
    assert!(m.contains("nothing is lost"), "{m}");
}

#[test]
fn a_round_sets_the_settlement_metrics_and_a_paused_one_keeps_the_unpaid_count() {
    let m = Metrics::new();
    let report = RoundReport {
        unpaid: vec!["a".into(), "b".into()],
        unpaid_reasons: reasons(&[("a", "x"), ("b", "y")]),
        withdrawn: vec![(3, "it pays provider \"a\": x".into())],
        sign_errors: vec![(4, "no escrow".into()), (5, "too big".into())],
        backlog: 7,
        ..Default::default()
    };
    record(&m, &report);
    record(&m, &report);
    let paused = RoundReport {
        paused: Some("no history".into()),
        ..Default::default()
    };
    record(&m, &paused);
    let text = m.encode();
    for line in [
        "gpufed_settlement_unpaid_providers 2",
        "gpufed_settlement_sign_errors_total 4",
        "gpufed_settlement_batches_withdrawn_total 2",
        "gpufed_settlement_backlog_records 0",
        "gpufed_settlement_paused 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    record(&m, &RoundReport::default());
    assert!(m.encode().contains("gpufed_settlement_unpaid_providers 0"));
}
