#![allow(clippy::unwrap_used)]
use super::*;
use crate::service::build;
use crate::service::plan::plan;
use crate::service::plan::rollout_tests::{service, serving};
use crate::service::retire::Regions;

static NO_REGIONS: Regions = Regions::new();

/// A rollout of 64 replicas under the default maxSurge (100%) and one replica that
/// failed: 129 replica jobs, one more than the schema's `maxItems` — every status write
/// was refused (422) and the service's status froze.
#[test]
fn the_replica_list_never_exceeds_the_schemas_bound() {
    let old = service(64, "vllm:1", serde_json::json!({}));
    let new = service(64, "vllm:2", serde_json::json!({}));
    let (old_spec, new_spec) = (build::replica_spec(&old), build::replica_spec(&new));
    let (old_rev, new_rev) = (build::revision(&old_spec), build::revision(&new_spec));
    let mut world: Vec<ComputeJob> = (0..64)
        .map(|i| serving(build::replica(&old, i, &old_spec, &old_rev), true))
        .collect();
    world.extend((64..128).map(|i| serving(build::replica(&new, i, &new_spec, &new_rev), false)));
    let mut failed = serving(build::replica(&new, 128, &new_spec, &new_rev), false);
    if let Some(st) = failed.status.as_mut() {
        st.phase = Some(JobPhase::Failed);
    }
    world.push(failed);
    let p = plan(&new, &world, &NO_REGIONS, true, 0);
    let st = &p.status;
    assert_eq!(st.replica_status.len(), MAX_REPLICA_STATUS);
    assert_eq!(st.unlisted_replicas, Some(1));
    // The serving ones are all listed, in index order; the finished one is counted.
    let names: Vec<&str> = st.replica_status.iter().map(|r| r.name.as_str()).collect();
    let want: Vec<String> = (0..128).map(|i| format!("llm-{i}")).collect();
    assert_eq!(names, want);
    let json = serde_json::to_value(st).unwrap();
    assert_eq!(json["unlistedReplicas"], 1);
}

#[test]
fn serving_then_finished_then_retiring_replicas_are_listed() {
    let svc = service(2, "vllm:1", serde_json::json!({}));
    let spec = build::replica_spec(&svc);
    let rev = build::revision(&spec);
    let job = |i: u32| serving(build::replica(&svc, i, &spec, &rev), true);
    // 130 retiring (scaled away, waiting to be metered), one failed, two serving.
    let mut jobs: Vec<ComputeJob> = (0..130)
        .map(|i| {
            let mut j = job(i);
            j.spec.suspend = true;
            j
        })
        .collect();
    let mut failed = job(130);
    if let Some(st) = failed.status.as_mut() {
        st.phase = Some(JobPhase::Failed);
    }
    jobs.extend([failed, job(131), job(132)]);
    let refs: Vec<&ComputeJob> = jobs.iter().collect();
    let (list, unlisted) = replica_list(&refs, |j| j.spec.suspend);
    assert_eq!((list.len(), unlisted), (MAX_REPLICA_STATUS, Some(5)));
    let last: Vec<(&str, &str)> = list[124..]
        .iter()
        .map(|r| (r.name.as_str(), r.phase.as_str()))
        .collect();
    assert_eq!(
        last,
        [
            ("llm-124", "Retiring"),
            ("llm-130", "Failed"),
            ("llm-131", "Running"),
            ("llm-132", "Running")
        ]
    );
    // Under the bound: everything, nothing counted.
    let (list, unlisted) = replica_list(&refs[..3], |j| j.spec.suspend);
    assert_eq!((list.len(), unlisted), (3, None));
}
