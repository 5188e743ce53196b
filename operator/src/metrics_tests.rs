//! The exposition's names and the gauges that are set whole each round.

#[test]
fn names_follow_conventions() {
    let text = super::dashboard_tests::exposition();
    assert!(text.contains("gpufed_placements_total 1"), "{text}");
    assert!(
        text.contains(r#"gpufed_reconcile_errors_total{controller="job",category="member"} 1"#),
        "{text}"
    );
    assert!(text.contains("gpufed_build_info{version="), "{text}");
    assert!(
        text.contains(r#"gpufed_reconcile_duration_seconds_count{controller="job"} 1"#),
        "{text}"
    );
}

#[test]
fn unplaced_jobs_are_counted_by_reason_and_an_emptied_reason_reads_zero() {
    let m = super::Metrics::new();
    m.set_unplaced(&[
        "InsufficientNodeResources",
        "InsufficientNodeResources",
        "NoProviderFits",
    ]);
    let text = m.encode();
    assert!(
        text.contains(r#"gpufed_unplaced_jobs{reason="InsufficientNodeResources"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gpufed_unplaced_jobs{reason="NoProviderFits"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gpufed_unplaced_jobs{reason="QuotaExceeded"} 0"#),
        "{text}"
    );
    m.set_unplaced(&[]);
    assert!(
        m.encode()
            .contains(r#"gpufed_unplaced_jobs{reason="InsufficientNodeResources"} 0"#)
    );
}

#[test]
fn excluded_inventory_is_counted_by_reason_and_provider() {
    use crate::mapping::sanitize::{Finding, Problem};
    let m = super::Metrics::new();
    let finding = |provider: &str, problem| Finding {
        provider: provider.into(),
        problem,
    };
    let rejected = || Problem::Rejected(gpufed_placement::SnapshotError::BadReputation("c".into()));
    m.set_excluded(&[
        finding(
            "a",
            Problem::DuplicateNode {
                node: "n".into(),
                copies: 3,
            },
        ),
        finding("b", Problem::NoGpus { node: "z".into() }),
        finding("c", rejected()),
        finding("c", rejected()),
    ]);
    let text = m.encode();
    for line in [
        r#"gpufed_placement_excluded_nodes{reason="duplicate_node"} 3"#,
        r#"gpufed_placement_excluded_nodes{reason="no_gpus"} 1"#,
        "gpufed_placement_excluded_providers 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // A later clean round reads 0, not the old count.
    m.set_excluded(&[]);
    assert!(
        m.encode()
            .contains(r#"gpufed_placement_excluded_nodes{reason="duplicate_node"} 0"#)
    );
}

#[test]
fn each_band_exports_the_longest_round_trip_it_allows() {
    let m = super::Metrics::new();
    let band = |model: &str, max_kernel_micros, round_trip_slack_ms| gpufed_trust::Band {
        model: model.into(),
        params: gpufed_trust::Params::u32(16, 4, 4, 8),
        min_kernel_micros: 1,
        max_kernel_micros,
        round_trip_slack_ms,
    };
    m.set_round_trip_limits(&gpufed_trust::Bands {
        bands: vec![
            band("NVIDIA H100 80GB HBM3", 1_500_000, 3000),
            band("NVIDIA GeForce RTX 4090", 2_000, 2500),
        ],
    });
    let text = m.encode();
    for line in [
        r#"gpufed_challenge_round_trip_limit_seconds{model="NVIDIA H100 80GB HBM3"} 4.5"#,
        r#"gpufed_challenge_round_trip_limit_seconds{model="NVIDIA GeForce RTX 4090"} 2.502"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn counters_alerts_read_with_increase_start_at_zero() {
    // `increase()` misses a series' first sample: one born at 1 never fires an alert.
    let text = super::Metrics::new().encode();
    for series in [
        r#"gpufed_evictions_total{cause="drain_deadline"} 0"#,
        r#"gpufed_challenges_total{result="TooSlow"} 0"#,
        r#"gpufed_challenges_total{result="WrongDigest"} 0"#,
        r#"gpufed_service_stalls_total{reason="ProgressDeadlineExceeded"} 0"#,
        r#"gpufed_service_stalls_total{reason="InvalidSpec"} 0"#,
        r#"gpufed_service_stalls_total{reason="InvalidTemplate"} 0"#,
        "gpufed_settlement_sign_errors_total 0",
        "gpufed_settlement_batches_withdrawn_total 0",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
}

#[test]
fn unreadable_verification_state_reads_zero_until_a_map_cannot_be_read() {
    // GpufedVerificationStateUnreadable compares it with 0: present from the start.
    let m = super::Metrics::new();
    assert!(m.encode().contains("\ngpufed_verification_unreadable_maps 0\n"));
    m.verification_unreadable_maps.set(2);
    assert!(m.encode().contains("\ngpufed_verification_unreadable_maps 2\n"));
}
