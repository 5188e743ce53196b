use super::*;
use crate::fixtures::{failed_over, job};

/// Succeeded on provider-b (1800 s at 1.8), settled in full, after 30 attempts archived.
fn finished(name: &str, ns: &str) -> ComputeJob {
    job(
        name,
        ns,
        Some(serde_json::json!({
            "phase": "Succeeded",
            "attempts": [{"attempt": 31, "provider": "provider-b", "outcome": "Succeeded",
                          "message": "done", "gpuSeconds": 1800,
                          "pricePerGpuHour": "1.8", "endTime": "2026-01-01T02:00:00Z"}],
            "archived": {"attempts": 30, "gpuSeconds": 1000, "cost": "0.5", "providers": ["provider-c"]},
            "usage": {"gpuSeconds": 2800, "cost": "1.4"},
            "billing": {"records": 31, "settledRecords": 31, "settledAmount": "1.4"},
        })),
    )
}

#[test]
fn namespaces_sum_their_jobs_cost_and_settlement() {
    let jobs = [
        failed_over("train", "team-a"),
        finished("sweep", "team-a"),
        job("queued", "team-b", None),
    ];
    let r = report(&jobs, By::Namespace);
    let a = &r.rows[0];
    assert_eq!(
        (a.name.as_str(), a.jobs, a.live, a.attempts, a.gpu_seconds),
        ("team-a", 2, 1, 33, 13_600)
    );
    assert_eq!(
        (
            a.cost.as_str(),
            a.settled_amount.as_deref(),
            a.unsettled_amount.as_deref()
        ),
        ("8.2", Some("6.4"), Some("1.8"))
    );
    let b = &r.rows[1];
    assert_eq!(
        (b.name.as_str(), b.jobs, b.attempts, b.cost.as_str()),
        ("team-b", 1, 0, "0")
    );
    assert_eq!(
        (r.total.jobs, r.total.gpu_seconds, r.total.cost.as_str()),
        (3, 13_600, "8.2")
    );
    let text = render(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "header, two namespaces, total: {text}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        ["team-a", "2", "1", "33", "3.78", "8.2", "6.4", "1.8"],
        "{text}"
    );
    assert!(lines[3].starts_with("TOTAL"), "{text}");
    let json = serde_json::to_value(&r).expect("JSON");
    assert_eq!(json["by"], "namespace");
    assert_eq!(json["rows"][0]["unsettledAmount"], "1.8");
}

#[test]
fn providers_get_their_attempts_and_archived_ones_stand_apart() {
    let jobs = [failed_over("train", "team-a"), finished("sweep", "team-b")];
    let r = report(&jobs, By::Provider);
    let names: Vec<&str> = r.rows.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["(archived)", "provider-a", "provider-b"]);
    let a = &r.rows[1];
    assert_eq!(
        (a.jobs, a.live, a.attempts, a.gpu_seconds, a.cost.as_str()),
        (1, 0, 1, 7200, "5")
    );
    let b = &r.rows[2];
    // train's live attempt (3600 s at 1.8) and sweep's last (1800 s at 1.8).
    assert_eq!(
        (b.jobs, b.live, b.attempts, b.gpu_seconds, b.cost.as_str()),
        (2, 1, 2, 5400, "2.7")
    );
    assert_eq!((r.rows[0].attempts, r.rows[0].cost.as_str()), (30, "0.5"));
    assert_eq!(
        r.total.settled_amount, None,
        "settlement is per job, not per provider"
    );
    // The provider view adds up to what the namespaces were billed.
    let by_ns = report(&jobs, By::Namespace);
    assert_eq!(r.total.cost, by_ns.total.cost);
    assert_eq!(r.total.gpu_seconds, by_ns.total.gpu_seconds);
    let text = render(&r);
    assert!(text.starts_with("PROVIDER "), "{text}");
    let cells: Vec<&str> = text
        .lines()
        .nth(2)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        cells,
        ["provider-a", "1", "0", "1", "2.00", "5", "-", "-"],
        "{text}"
    );
}

#[test]
fn one_row_has_no_total_and_no_jobs_no_rows() {
    let r = report(&[finished("sweep", "team-a")], By::Namespace);
    assert_eq!(render(&r).lines().count(), 2);
    let empty = report(&[], By::Provider);
    assert!(empty.rows.is_empty());
    assert_eq!((empty.total.jobs, empty.total.cost.as_str()), (0, "0"));
}

/// Running its second attempt after a first of `u64::MAX` GPU-seconds and archived ones:
/// a cost of 10^19 base units, as the operator saturates huge ones.
fn huge(name: &str) -> ComputeJob {
    job(
        name,
        "team-a",
        Some(serde_json::json!({
            "phase": "Running",
            "attempts": [{"attempt": 4, "provider": "provider-a", "outcome": "ProviderLost",
                          "message": "lost", "gpuSeconds": u64::MAX,
                          "pricePerGpuHour": "1000", "endTime": "2026-01-01T02:00:00Z"}],
            "archived": {"attempts": 3, "gpuSeconds": u64::MAX, "cost": "10000000000000",
                         "providers": ["provider-c"]},
            "placement": {"attempt": 5, "provider": "provider-b", "gpus": 8, "pricePerGpuHour": "1.8",
                          "workers": [], "placedTime": "2026-01-01T03:00:00Z"},
            "usage": {"gpuSeconds": u64::MAX, "cost": "10000000000000"},
        })),
    )
}

#[test]
fn sums_saturate_instead_of_overflowing() {
    let jobs = [huge("a"), huge("b")];
    let max = format_decimal(u64::MAX);
    assert_eq!(max, "18446744073709.551615");
    // 2 × 10^19 base units is past u64::MAX: the sum stops there.
    let r = report(&jobs, By::Namespace);
    let a = &r.rows[0];
    assert_eq!(
        (a.cost.as_str(), a.gpu_seconds, a.attempts),
        (max.as_str(), u64::MAX, 10)
    );
    assert_eq!(a.unsettled_amount.as_deref(), Some(max.as_str()));
    assert_eq!(
        (r.total.cost.as_str(), r.total.gpu_seconds),
        (max.as_str(), u64::MAX)
    );
    assert!(render(&r).contains(&max), "{}", render(&r));

    let r = report(&jobs, By::Provider);
    let names: Vec<&str> = r.rows.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["(archived)", "provider-a", "provider-b"]);
    for row in &r.rows[..2] {
        assert_eq!(
            (row.cost.as_str(), row.gpu_seconds),
            (max.as_str(), u64::MAX),
            "{}",
            row.name
        );
    }
    // The live attempt has nothing left to meter beyond the saturated finished ones.
    assert_eq!((r.rows[2].gpu_seconds, r.rows[2].cost.as_str()), (0, "0"));
    assert_eq!(
        (r.total.cost.as_str(), r.total.gpu_seconds),
        (max.as_str(), u64::MAX)
    );
}
