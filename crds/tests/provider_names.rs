//! Every field that names a `GpuProvider` takes any name a provider can have (a DNS
//! subdomain up to 253 characters: `dc1.example.com`, a 64-character name), and the status
//! amounts the operator sums take any `u64` of base units. Narrower, no Stake could back
//! such a provider, and the API server would refuse every status write of a job placed on
//! it (or that has cost more than 12 whole digits) — the job's status would never change
//! again.

#![allow(clippy::unwrap_used)]

use gpufed_api::formats::format_decimal;
use gpufed_api::{crd, schema_check};
use serde_json::{Value, json};

fn schema(kind: &str) -> Value {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let schema = crd.spec.versions[0].schema.as_ref().unwrap();
    serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap()
}

fn errors(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap();
    schema_check::check(&schema(kind), object)
        .errors
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

/// Names a provider may have that a DNS label may not.
fn names() -> Vec<String> {
    vec![
        "dc1.example.com".to_owned(),
        "a".repeat(64),
        format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        ),
    ]
}

fn stake(provider: &str) -> Value {
    json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Stake", "metadata": {"name": "s"},
        "spec": {
            "provider": provider, "amount": "5000",
            "depositSignature": "mLidkuVKnRyjP2WPBg8Y4ErK9pGSSxY6BVScJy9uUxcJnTPkyRFA6CAFjF1YveCHK1ATbQgdM9mwZgikp4Wzxrxk",
            "stakerWallet": "Hor8gjxoVwL2gMaW98Ya25Kqb4D1vShSy78PH9ttc2pX"
        }
    })
}

fn job(provider: &str, cost: &str) -> Value {
    let attempt = json!({
        "attempt": 1, "provider": provider, "outcome": "Failed", "gpuSeconds": 10,
        "pricePerGpuHour": "1", "endTime": "2026-01-01T00:00:00Z"
    });
    json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "j", "namespace": "team"},
        "spec": {
            "gpusPerWorker": 1, "maxPricePerGpuHour": "1",
            "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
            "placement": {"providers": [provider], "preferredProviders": [provider]}
        },
        "status": {
            "placement": {
                "attempt": 2, "provider": provider, "gpus": 1, "pricePerGpuHour": "1",
                "placedTime": "2026-01-01T00:00:00Z"
            },
            "attempts": [attempt],
            "archived": {"attempts": 1, "gpuSeconds": 1, "cost": cost, "providers": [provider]},
            "usage": {"gpuSeconds": 1, "cost": cost},
            "billing": {"records": 1, "settledRecords": 1, "settledAmount": cost},
            "endpoint": {"provider": provider, "ready": false}
        }
    })
}

#[test]
fn any_provider_name_is_accepted_wherever_a_provider_is_named() {
    for name in names() {
        assert!(name.len() <= 253);
        assert_eq!(errors(&stake(&name)), Vec::<String>::new(), "{name}");
        assert_eq!(errors(&job(&name, "1")), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn what_no_provider_can_be_named_is_still_refused() {
    let too_long = format!("{}.{}", "a".repeat(63), "b".repeat(190));
    for bad in ["Dc1", "dc1..example", "-dc1", "dc1.", too_long.as_str()] {
        let errs = errors(&stake(bad));
        assert!(
            errs.iter().any(|e| e.starts_with("spec.provider")),
            "{bad}: {errs:?}"
        );
        let errs = errors(&job(bad, "1"));
        assert!(
            errs.iter().any(|e| e.starts_with("spec.placement.providers")),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn any_sum_of_costs_fits_the_job_status() {
    for micros in [1_000_000_000_000_000_000, u64::MAX] {
        let cost = format_decimal(micros);
        assert_eq!(errors(&job("a", &cost)), Vec::<String>::new(), "{cost}");
    }
    let errs = errors(&job("a", "1.1234567"));
    assert!(
        errs.iter().any(|e| e.starts_with("status.usage.cost")),
        "{errs:?}"
    );
}
