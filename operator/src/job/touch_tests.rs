//! Which jobs a provider's return wakes.
use super::*;

fn job(status: serde_json::Value, deleting: bool) -> ComputeJob {
    let mut meta = serde_json::json!({"name": "j", "namespace": "t", "uid": "u"});
    if deleting {
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z".into();
        meta["finalizers"] = serde_json::json!(["gpufed.io/member-cleanup"]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob", "metadata": meta,
        "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}},
        "status": status,
    }))
    .expect("job")
}

fn attempt(provider: &str, removed: bool) -> serde_json::Value {
    serde_json::json!({"attempt": 1, "provider": provider, "outcome": "ProviderLost", "gpuSeconds": 1,
        "pricePerGpuHour": "1.00", "endTime": "2026-12-01T00:00:00Z", "removed": removed})
}

#[test]
fn a_provider_wakes_jobs_with_work_left_on_it_only() {
    let live = job(
        serde_json::json!({"placement": {"attempt": 1, "provider": "a", "gpus": 1, "pricePerGpuHour": "1.00",
            "placedTime": "2026-12-01T00:00:00Z"}}),
        false,
    );
    assert!(touches_provider(&live, "a"));
    assert!(!touches_provider(&live, "b"));
    let fenced = job(serde_json::json!({"attempts": [attempt("a", false)]}), false);
    assert!(
        touches_provider(&fenced, "a"),
        "its lost attempt's pods are still there"
    );
    let clean = job(serde_json::json!({"attempts": [attempt("a", true)]}), false);
    assert!(!touches_provider(&clean, "a"), "nothing left there");
    let deleting = job(serde_json::json!({"attempts": [attempt("a", true)]}), true);
    assert!(
        touches_provider(&deleting, "a"),
        "its tenant namespace there goes"
    );
    assert!(!touches_provider(&job(serde_json::json!(null), true), "a"));
}
