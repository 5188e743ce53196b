use serde_json::json;

use super::*;

/// Service `llm` (uid s1) running `image`.
fn service(image: &str) -> ComputeService {
    serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm", "namespace": "team", "uid": "s1", "resourceVersion": "7"},
        "spec": {"replicas": 2, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                 "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": image}]}}}
    }))
    .expect("service")
}

/// The revision the operator records for `image` as number `n`, `n` hours before
/// 1_800_000_000.
fn recorded(image: &str, n: i64, cause: Option<&str>) -> ControllerRevision {
    let mut svc = service(image);
    if let Some(c) = cause {
        svc.metadata.annotations = Some([(history::CHANGE_CAUSE.to_owned(), c.to_owned())].into());
    }
    let mut r = history::build(&svc, &current_hash(&svc), n);
    r.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 - 3600 * n).expect("time"),
    ));
    r
}

fn three() -> Vec<ControllerRevision> {
    // Recorded out of order on purpose: listed by number.
    vec![
        recorded("vllm:3", 3, Some("bad image")),
        recorded("vllm:1", 1, None),
        recorded("vllm:2", 2, Some("vllm 2")),
    ]
}

#[test]
fn history_lists_revisions_in_order_and_marks_the_current_template() {
    let svc = service("vllm:3");
    let revs = three();
    let e = entries(&svc, &revs);
    let numbers: Vec<(i64, bool)> = e.iter().map(|e| (e.revision, e.current)).collect();
    assert_eq!(numbers, [(1, false), (2, false), (3, true)]);
    let out = render("llm", &e, 1_800_000_000);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "computeservice.gpufed.io/llm");
    assert!(lines[1].starts_with("REVISION"), "{out}");
    assert!(
        lines[2].starts_with("1 ") && lines[2].ends_with("<none>"),
        "{out}"
    );
    assert!(lines[2].contains(&e[0].hash) && lines[2].contains("60m"), "{out}");
    assert!(lines[3].ends_with("vllm 2"), "{out}");
    assert!(
        lines[4].starts_with("3 (current)") && lines[4].ends_with("bad image"),
        "{out}"
    );
    // Another service's revisions are not listed.
    let mut other = recorded("vllm:9", 9, None);
    other.metadata.owner_references.as_mut().expect("owner")[0].uid = "s2".into();
    assert_eq!(entries(&svc, &[other]), []);
    assert!(render("llm", &[], 0).contains("no revisions recorded yet"));
}

#[test]
fn undo_goes_back_to_the_previous_template_by_default() {
    let svc = service("vllm:3");
    let e = entries(&svc, &three());
    let Undo::Patch { to, patch } = undo(&svc, &e, None).expect("undo") else {
        panic!("a patch")
    };
    assert_eq!(to, 2);
    let ops = patch.as_array().expect("ops");
    assert_eq!(
        ops[0],
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"})
    );
    assert_eq!(ops[1]["path"], "/spec/template");
    assert_eq!(ops[1]["value"]["spec"]["containers"][0]["image"], "vllm:2");
    assert_eq!(ops.len(), 2, "only the template differs: {patch}");
}

#[test]
fn undo_to_a_revision_or_to_the_current_one() {
    let svc = service("vllm:3");
    let e = entries(&svc, &three());
    let Ok(Undo::Patch { to: 1, patch }) = undo(&svc, &e, Some(1)) else {
        panic!("to 1")
    };
    assert_eq!(patch[1]["value"]["spec"]["containers"][0]["image"], "vllm:1");
    assert_eq!(undo(&svc, &e, Some(3)), Ok(Undo::AlreadyCurrent { to: 3 }));
    assert_eq!(undo(&svc, &e, Some(5)), Err(PickError::NotFound(5)));
    assert_eq!(
        PickError::NotFound(5).to_string(),
        "unable to find specified revision 5 in history"
    );
}

#[test]
fn undo_after_an_unrecorded_change_restores_the_last_recorded_template() {
    // vllm:4 applied, not yet recorded by the operator: undo goes back to 3.
    let svc = service("vllm:4");
    let e = entries(&svc, &three());
    assert!(e.iter().all(|e| !e.current));
    let Ok(Undo::Patch { to: 3, .. }) = undo(&svc, &e, None) else {
        panic!("back to 3")
    };
}

#[test]
fn undo_without_another_revision_says_why() {
    let svc = service("vllm:1");
    assert_eq!(undo(&svc, &[], None), Err(PickError::NoHistory("llm".into())));
    let only = [recorded("vllm:1", 1, None)];
    let e = entries(&svc, &only);
    assert_eq!(undo(&svc, &e, None), Err(PickError::NoPrevious("llm".into())));
    let mut empty = recorded("vllm:0", 2, None);
    empty.data = Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(json!({})));
    let e = entries(&svc, &[only[0].clone(), empty]);
    assert_eq!(undo(&svc, &e, None), Err(PickError::Empty(2)));
}

/// `rollout undo` retries a patch refused because the service changed meanwhile: a real
/// API server answers a failed `test` of the resourceVersion with a generic 422 (the path
/// is only in `details.causes`), so a 422 while the resourceVersion moved is a conflict —
/// unless its message is the schema's refusal, which planning again would only repeat.
#[test]
fn a_generic_422_after_the_version_moved_is_an_undo_conflict_a_schema_refusal_is_not() {
    let mut before = service("vllm:1");
    before.metadata.generation = Some(3);
    before.metadata.resource_version = Some("7".into());
    let mut status_written = before.clone();
    status_written.metadata.resource_version = Some("8".into());
    let mut spec_changed = status_written.clone();
    spec_changed.metadata.generation = Some(4);
    let generic = "the server rejected our request due to an error in our request";
    let schema = "ComputeService.gpufed.io \"llm\" is invalid: spec.port.port: Invalid value: 0";
    let test_failed = "testing value /metadata/resourceVersion failed: test failed";

    // The test failed on a real API server: only the generic message comes back.
    assert!(undo_conflict(Some(422), generic, &before, &status_written));
    assert!(undo_conflict(Some(422), generic, &before, &spec_changed));
    assert!(undo_conflict(Some(422), test_failed, &before, &status_written));
    // Nothing moved: the refusal is the answer, whatever it says.
    assert!(!undo_conflict(Some(422), generic, &before, &before));
    // The schema refuses the template: reported, even though a status write moved the
    // resourceVersion meanwhile.
    assert!(!undo_conflict(Some(422), schema, &before, &status_written));
    assert!(!undo_conflict(Some(422), schema, &before, &before));
    assert!(
        undo_conflict(Some(422), schema, &before, &spec_changed),
        "the spec changed"
    );
    assert!(undo_conflict(
        Some(409),
        "the object has been modified",
        &before,
        &status_written
    ));
    // Other refusals are never retried, whatever changed.
    for code in [Some(400), Some(403), Some(404), None] {
        assert!(
            !undo_conflict(code, test_failed, &before, &spec_changed),
            "{code:?}"
        );
    }
}
