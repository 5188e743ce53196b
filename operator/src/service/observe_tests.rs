#![allow(clippy::unwrap_used)]
use super::*;
use crate::service::plan::rollout_tests::service;

fn job(name: &str, ns: &str, owner_uid: Option<&str>, label: Option<&str>) -> ComputeJob {
    let svc = service(1, "vllm", serde_json::json!({}));
    let spec = build::replica_spec(&svc);
    let mut j = build::replica(&svc, 0, &spec, "r1");
    j.metadata.name = Some(name.to_owned());
    j.metadata.namespace = Some(ns.to_owned());
    if let Some(owners) = j.metadata.owner_references.as_mut() {
        match owner_uid {
            Some(uid) => owners[0].uid = uid.to_owned(),
            None => owners.clear(),
        }
    }
    let labels = j.metadata.labels.get_or_insert_with(Default::default);
    match label {
        Some(l) => labels.insert(LABEL_SERVICE.to_owned(), l.to_owned()),
        None => labels.remove(LABEL_SERVICE),
    };
    j
}

#[test]
fn an_owned_job_without_the_service_label_is_no_replica_but_its_name_is_taken() {
    let svc = service(3, "vllm", serde_json::json!({}));
    let jobs = [
        job("llm-0", "team", Some("s1"), Some("llm")),
        // Ours, but its label was removed by hand, or changed.
        job("llm-1", "team", Some("s1"), None),
        job("llm-2", "team", Some("s1"), Some("other")),
        // Not ours, with a replica's name: taken.
        job("llm-3", "team", None, Some("llm")),
        job("llm-4", "team", Some("someone-else"), None),
        // Not a replica's name, or another namespace: neither.
        job("llm-a", "team", None, None),
        job("llm-5", "elsewhere", Some("s1"), Some("llm")),
    ];
    let (ours, taken) = replicas_and_taken(&svc, &jobs);
    let ours: Vec<String> = ours.iter().map(ResourceExt::name_any).collect();
    assert_eq!(ours, ["llm-0"]);
    assert_eq!(
        taken.into_iter().collect::<Vec<_>>(),
        ["llm-1", "llm-2", "llm-3", "llm-4"]
    );
}

/// The round the reviewer saw: `llm-1` lost its label; without counting its name as
/// taken, the plan created `llm-1` again (409, taken as success) every round.
#[test]
fn a_replacement_for_an_unlabelled_replica_gets_a_free_name() {
    let svc = service(2, "vllm", serde_json::json!({}));
    let spec = build::replica_spec(&svc);
    let rev = build::revision(&spec);
    let mut kept = build::replica(&svc, 0, &spec, &rev);
    kept.metadata.namespace = Some("team".into());
    let mut unlabelled = build::replica(&svc, 1, &spec, &rev);
    unlabelled.metadata.namespace = Some("team".into());
    if let Some(l) = unlabelled.metadata.labels.as_mut() {
        l.remove(LABEL_SERVICE);
    }
    let (ours, taken) = replicas_and_taken(&svc, &[kept, unlabelled]);
    let regions = super::super::retire::Regions::new();
    let mut p = super::super::plan::plan(&svc, &ours, &regions, false, 0);
    assert_eq!(p.create.len(), 1);
    super::super::plan::avoid_taken_names("llm", &mut p.create, &ours, &taken);
    assert_eq!(p.create[0].name_any(), "llm-2");
}
