use super::*;
use serde_json::json;

fn service(extra: Value) -> ComputeService {
    let mut v = json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm", "namespace": "team", "uid": "s1", "generation": 1,
                     "resourceVersion": "42"},
        "spec": {"replicas": 2, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                 "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm:1"}]}}}
    });
    if let (Some(spec), Value::Object(extra)) = (v["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    serde_json::from_value(v).expect("service")
}

fn hash(svc: &ComputeService) -> String {
    build::revision(&build::replica_spec(svc))
}

fn image(svc: &mut ComputeService, image: &str) {
    svc.spec.template.spec.containers[0]
        .0
        .insert("image".into(), image.into());
}

#[test]
fn the_template_fields_are_exactly_what_makes_a_revision() {
    let base = service(json!({}));
    // Each template field changes the replicas' revision, and the stored template.
    let changed = [
        json!({"template": {"spec": {"containers": [{"name": "server", "image": "vllm:2"}]}}}),
        json!({"gpusPerReplica": 2}),
        json!({"gpu": {"tier": "Datacenter"}}),
        json!({"maxPricePerGpuHour": "3.00"}),
        json!({"port": {"port": 9000}}),
        json!({"readinessProbe": {"httpGet": {"path": "/health", "port": 8000}}}),
        json!({"placement": {"regions": ["eu"]}}),
        json!({"spread": "Region"}),
        json!({"priority": 500}),
    ];
    assert_eq!(changed.len(), TEMPLATE_FIELDS.len());
    for (extra, field) in changed.into_iter().zip(TEMPLATE_FIELDS) {
        assert!(extra.get(field).is_some(), "{field} in {extra}");
        let svc = service(extra);
        assert_ne!(hash(&svc), hash(&base), "{field} must roll the replicas");
        assert_ne!(
            template(&svc.spec),
            template(&base.spec),
            "{field} must be stored"
        );
    }
    // The others scale or bound a rollout: no new revision, nothing stored.
    let others = json!({"replicas": 5, "rollout": {"maxSurge": 1},
                        "disruptionBudget": {"maxUnavailable": 1}, "revisionHistoryLimit": 3,
                        "paused": true, "minReadySeconds": 30});
    let svc = service(others.clone());
    assert_eq!(hash(&svc), hash(&base));
    assert_eq!(template(&svc.spec), template(&base.spec));
    // Every spec field is one or the other: a new field must be sorted into one list.
    let Value::Object(all) = serde_json::to_value(&svc.spec).expect("spec") else {
        panic!("spec is an object")
    };
    let readiness = service(json!({"readinessProbe": {"exec": {"command": ["true"]}}}));
    let with_probe = serde_json::to_value(&readiness.spec).expect("spec");
    let keys = all.keys().chain(with_probe.as_object().expect("spec").keys());
    for k in keys {
        assert!(
            TEMPLATE_FIELDS.contains(&k.as_str()) || others.get(k).is_some(),
            "spec.{k} is neither a template field nor a rollout bound"
        );
    }
}

fn revision(svc: &ComputeService, image_name: &str, number: i64) -> ControllerRevision {
    let mut s = svc.clone();
    image(&mut s, image_name);
    build(&s, &hash(&s), number)
}

#[test]
fn the_first_template_is_revision_one_and_a_kept_one_changes_nothing() {
    let svc = service(json!({}));
    let h = plan(&svc, &[], &hash(&svc), &BTreeSet::new());
    assert_eq!(h.number, 1);
    let rev = h.create.expect("created");
    assert_eq!(rev.revision, 1);
    assert_eq!(rev.name_any(), format!("llm-{}", hash(&svc)));
    assert_eq!(hash_of(&rev), Some(hash(&svc).as_str()));
    assert_eq!(stored_template(&rev), Some(&template(&svc.spec)));
    assert_eq!(rev.owner_references()[0].uid, "s1");
    assert_eq!(rev.labels()[LABEL_SERVICE], "llm");
    assert!(rev.annotations().is_empty());

    let again = plan(&svc, &[&rev], &hash(&svc), &BTreeSet::new());
    let nothing = History {
        number: 1,
        create: None,
        renumber: None,
        delete: vec![],
    };
    assert_eq!(again, nothing);
}

#[test]
fn a_new_template_takes_the_next_number_with_the_change_cause() {
    let mut svc = service(json!({}));
    let one = revision(&svc, "vllm:1", 1);
    image(&mut svc, "vllm:2");
    svc.metadata.annotations = Some(BTreeMap::from([(CHANGE_CAUSE.to_owned(), "vllm 2".to_owned())]));
    let h = plan(&svc, &[&one], &hash(&svc), &BTreeSet::new());
    assert_eq!(h.number, 2);
    let two = h.create.expect("created");
    assert_eq!(two.revision, 2);
    assert_eq!(two.annotations()[CHANGE_CAUSE], "vllm 2");
    assert!(h.renumber.is_none() && h.delete.is_empty());
}

#[test]
fn an_old_template_applied_again_is_renumbered_not_duplicated() {
    let svc = service(json!({}));
    let revs = [
        revision(&svc, "vllm:1", 1),
        revision(&svc, "vllm:2", 2),
        revision(&svc, "vllm:3", 3),
    ];
    let existing: Vec<&ControllerRevision> = revs.iter().collect();
    // Back on vllm:2 (an undo from 3).
    let mut back = svc.clone();
    image(&mut back, "vllm:2");
    let h = plan(&back, &existing, &hash(&back), &BTreeSet::new());
    assert_eq!(h.number, 4);
    assert_eq!(h.renumber.as_deref(), Some(revs[1].name_any().as_str()));
    assert!(h.create.is_none());
    assert_eq!(renumber_patch(&back, 4, None), json!({"revision": 4}));
    // Fenced by what the plan read; the change cause travels along.
    let mut caused = back.clone();
    caused.metadata.annotations = Some(BTreeMap::from([(CHANGE_CAUSE.to_owned(), "undo".to_owned())]));
    assert_eq!(
        renumber_patch(&caused, 4, Some("17")),
        json!({"revision": 4, "metadata": {"resourceVersion": "17", "annotations": {CHANGE_CAUSE: "undo"}}})
    );
    // Once renumbered, the next round has nothing to do.
    let mut renumbered = revs[1].clone();
    renumbered.revision = 4;
    let after = [&revs[0], &renumbered, &revs[2]];
    let h = plan(&back, &after, &hash(&back), &BTreeSet::new());
    assert_eq!((h.number, h.create, h.renumber), (4, None, None));
}

#[test]
fn old_revisions_beyond_the_limit_go_oldest_first_unless_replicas_run_them() {
    let svc = service(json!({"revisionHistoryLimit": 2}));
    let revs: Vec<ControllerRevision> = (1..=5).map(|n| revision(&svc, &format!("vllm:{n}"), n)).collect();
    let existing: Vec<&ControllerRevision> = revs.iter().collect();
    let mut current = svc.clone();
    image(&mut current, "vllm:5");
    let cur = hash(&current);
    // Current 5; keep 4 and 3; 1 and 2 go.
    let h = plan(&current, &existing, &cur, &BTreeSet::new());
    assert_eq!(h.delete, [revs[1].name_any(), revs[0].name_any()]);
    // A replica still runs vllm:1 (a rollout under way): it stays, and does not count.
    let running = BTreeSet::from([hash_of(&revs[0]).expect("hash").to_owned()]);
    let h = plan(&current, &existing, &cur, &running);
    assert_eq!(h.delete, [revs[1].name_any()]);
    // Limit 0: only the current one (and those in use) stay.
    let mut none = current.clone();
    none.spec.revision_history_limit = 0;
    let h = plan(&none, &existing, &cur, &running);
    let gone: BTreeSet<String> = h.delete.into_iter().collect();
    let want: BTreeSet<String> = [1, 2, 3].iter().map(|&i| revs[i].name_any()).collect();
    assert_eq!(gone, want);
}

#[test]
fn only_the_services_own_revisions_count() {
    let svc = service(json!({}));
    let mine = revision(&svc, "vllm:1", 1);
    let mut other_owner = revision(&svc, "vllm:2", 7);
    other_owner.metadata.owner_references.as_mut().expect("owner")[0].uid = "old-s1".into();
    let mut other_ns = revision(&svc, "vllm:3", 8);
    other_ns.metadata.namespace = Some("elsewhere".into());
    let mut other_svc = revision(&svc, "vllm:4", 9);
    other_svc
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert(LABEL_SERVICE.into(), "web".into());
    let all = [mine.clone(), other_owner, other_ns, other_svc];
    let ours = of(&svc, &all);
    assert_eq!(ours, [&mine]);
}

#[test]
fn a_rollback_replaces_each_changed_field_whole_and_removes_what_the_old_one_lacked() {
    let old = service(json!({}));
    let mut now = service(json!({
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
        "priority": 300,
        "replicas": 7,
    }));
    now.spec.template.metadata = serde_json::from_value(json!({"annotations": {"a": "b"}})).expect("meta");
    image(&mut now, "vllm:9");
    let target = template(&old.spec);
    let patch = rollback_patch(&now, &target).expect("a change");
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
            {"op": "add", "path": "/spec/template", "value": target["template"]},
            {"op": "remove", "path": "/spec/readinessProbe"},
            {"op": "add", "path": "/spec/priority", "value": 100},
        ])
    );
    // The whole template object is replaced: the annotation the old one lacked goes.
    assert!(target["template"].get("metadata").is_none());
    // Already on it: nothing to do.
    assert_eq!(rollback_patch(&old, &target), None);
}
