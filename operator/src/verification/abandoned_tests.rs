#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use gpufed_api::{ComputeJob, GpuProvider};

use super::*;

const T0: i64 = 1_800_000_000;

fn job(uid: &str, attempts: &[(u32, &str, &str, i64)]) -> ComputeJob {
    let attempts: Vec<serde_json::Value> = attempts
        .iter()
        .map(|(n, provider, outcome, end)| {
            serde_json::json!({"attempt": n, "provider": provider, "outcome": outcome, "gpuSeconds": 1,
                "message": "provider silent past its grace period",
                "pricePerGpuHour": "1.00", "endTime": crate::time::format(*end)})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": format!("job-{uid}"), "namespace": "team", "uid": uid},
        "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}},
        "status": {"attempts": attempts},
    }))
    .unwrap()
}

fn provider(name: &str, reachable: Option<bool>) -> Arc<GpuProvider> {
    let conditions: Vec<serde_json::Value> = reachable
        .map(|r| {
            serde_json::json!({"type": "Reachable", "status": if r { "True" } else { "False" },
                "reason": "r", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"})
        })
        .into_iter()
        .collect();
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc", "key": "kubeconfig"},
                     "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                     "prices": [{"model": "H100", "pricePerGpuHour": "2"}], "heartbeatGracePeriod": "60s",
                     "resourceName": "gpufed.io/gpu"},
            "status": {"conditions": conditions},
        }))
        .unwrap(),
    )
}

#[test]
fn only_the_provider_s_lost_attempts_make_evidence_dated_by_the_last() {
    let jobs = [
        job(
            "a",
            &[(1, "p", "ProviderLost", T0), (2, "q", "Succeeded", T0 + 50)],
        ),
        job(
            "b",
            &[(1, "p", "NodeLost", T0 + 5), (2, "p", "ProviderLost", T0 + 20)],
        ),
        job(
            "c",
            &[(1, "q", "ProviderLost", T0 + 30), (2, "p", "Failed", T0 + 40)],
        ),
    ];
    let e = evidence("p", &jobs, |_| true).unwrap();
    assert_eq!(e.kind, "abandoned-job");
    assert_eq!(e.provider, "p");
    let attempts: Vec<(&str, u32)> = e.jobs.iter().map(|j| (j.uid.as_str(), j.attempt)).collect();
    assert_eq!(
        attempts,
        [("a", 1), ("b", 2)],
        "ProviderLost on p only (NodeLost is hardware)"
    );
    assert_eq!(e.observed_at, crate::time::format(T0 + 20));
    assert_eq!(e.jobs[0].name, "job-a");
    assert_eq!(e.jobs[0].namespace, "team");
    // The same attempts, in any order, make the same document.
    let reversed: Vec<ComputeJob> = jobs.iter().rev().cloned().collect();
    assert_eq!(evidence("p", &reversed, |_| true).unwrap().hash(), e.hash());
    // Attempts not attributable are left out; none left: no evidence.
    let later = evidence("p", &jobs, |end| end > T0).unwrap();
    assert_eq!(later.jobs.len(), 1);
    assert!(evidence("p", &jobs, |_| false).is_none());
    assert!(evidence("q2", &jobs, |_| true).is_none());
}

#[test]
fn the_fleet_is_lost_at_large_when_most_of_more_than_one_provider_is() {
    let fleet = |states: &[Option<bool>]| -> Vec<Arc<GpuProvider>> {
        states
            .iter()
            .enumerate()
            .map(|(i, r)| provider(&format!("p{i}"), *r))
            .collect()
    };
    let lost = |states: &[Option<bool>]| fleet_lost(fleet(states).iter().map(AsRef::as_ref));
    assert!(
        lost(&[Some(false)]),
        "a lone provider's loss cannot be told from the hub's"
    );
    assert!(!lost(&[Some(true)]));
    assert!(!lost(&[Some(false), Some(true)]));
    assert!(lost(&[Some(false), Some(false)]));
    assert!(
        !lost(&[Some(false), Some(false), Some(true), Some(true)]),
        "half is not most"
    );
    assert!(lost(&[
        Some(false),
        Some(false),
        Some(false),
        Some(true),
        Some(true)
    ]));
    assert!(
        !lost(&[Some(false), Some(true), None]),
        "unjudged providers are not counted"
    );
    assert!(lost(&[Some(false), None, None]), "one judged: cannot tell");
}

#[test]
fn attempts_near_a_fleet_wide_loss_or_before_the_watch_or_stale_are_not_attributable() {
    let w = LossWatch::default();
    assert!(!w.attributable(T0, T0), "nothing watched yet");
    let healthy = || {
        vec![
            provider("a", Some(true)),
            provider("b", Some(false)),
            provider("c", Some(true)),
        ]
    };
    w.look(T0, healthy);
    assert!(
        w.attributable(T0 + 10, T0 + 20),
        "one provider of three lost: its doing"
    );
    assert!(
        !w.attributable(T0 - 1, T0 + 20),
        "ended before this process watched"
    );
    assert!(
        !w.attributable(T0 + 10, T0 + 10 + FRESH_SECS + 1),
        "too old to judge now"
    );
    // The hub loses everyone at T0+1000..T0+1100.
    let all_lost = || {
        vec![
            provider("a", Some(false)),
            provider("b", Some(false)),
            provider("c", Some(false)),
        ]
    };
    w.look(T0 + 1_000, all_lost);
    w.look(T0 + 1_100, all_lost);
    w.look(T0 + 1_200, healthy);
    let now = T0 + 1_300;
    for end in [T0 + 1_000 - MARGIN_SECS, T0 + 1_050, T0 + 1_100 + MARGIN_SECS] {
        assert!(
            !w.attributable(end, now),
            "ended at {end}: near the fleet-wide loss"
        );
    }
    assert!(w.attributable(T0 + 1_100 + MARGIN_SECS + 1, T0 + 1_500));
    // A second look in the same second reads nothing.
    w.look(T0 + 1_200, || panic!("read the providers twice in one second"));
    // A new term: what was watched before counts no more.
    w.forget();
    assert!(!w.attributable(T0 + 1_100 + MARGIN_SECS + 1, T0 + 1_500));
}
