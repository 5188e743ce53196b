//! Our CRDs on a real API server: they install and become Established, the examples apply,
//! and the invalid fixtures are refused by the server's schema validation with their field
//! named. (CEL rules are not enforced before Kubernetes 1.25: `rejected-by: cel` fixtures are
//! checked only against a newer external cluster; the crds crate unit-tests those rules.)

mod common;

use std::time::Duration;

use gpufed_e2e::crds::{
    RejectedBy, create_manifest, install_crds, load_yaml_docs, parse_fixture, server_minor, yaml_files,
};
use gpufed_e2e::{FederationSpec, TestEnv};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::Value;

/// Creates namespaces a manifest names, if missing.
async fn ensure_namespace(client: &Client, doc: &Value) {
    if let Some(ns) = doc.pointer("/metadata/namespace").and_then(Value::as_str) {
        let object = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating namespace {ns}: {e}"),
        }
    }
}

/// Creates a manifest, retrying while discovery has not caught up with a new CRD; returns the
/// final result (an API refusal is returned at once).
async fn create(client: &Client, doc: &Value, ns: &str) -> Result<DynamicObject, gpufed_e2e::Error> {
    let mut tries = 0;
    loop {
        match create_manifest(client, doc, ns).await {
            Err(gpufed_e2e::Error::Kube(kube::Error::Api(e))) if e.code == 404 && tries < 50 => {}
            Err(gpufed_e2e::Error::Kube(kube::Error::Discovery(_))) if tries < 50 => {}
            other => return other,
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_install_examples_apply_and_invalid_fixtures_are_rejected() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let root = common::repo_root();
    let crd_files = yaml_files(&root.join("crds")).expect("crds/ readable");
    let examples = yaml_files(&root.join("examples")).expect("examples/ readable");
    let invalid = yaml_files(&root.join("examples/invalid")).expect("examples/invalid/ readable");
    assert!(!crd_files.is_empty(), "no CRD YAML in crds/*.yaml");
    assert!(!examples.is_empty(), "no examples in examples/*.yaml");
    assert!(
        !invalid.is_empty(),
        "no invalid fixtures in examples/invalid/*.yaml"
    );

    let env = TestEnv::start(FederationSpec::new("crds"))
        .await
        .expect("hub starts");
    let client = env.hub_client().await.expect("hub client");
    let names = install_crds(&client, &root.join("crds"), Duration::from_secs(60))
        .await
        .expect("CRDs install");
    assert!(names.len() >= crd_files.len(), "CRDs installed: {names:?}");
    let ns = common::namespace(&client, "examples").await;

    for file in &examples {
        for doc in load_yaml_docs(file).expect("example parses") {
            ensure_namespace(&client, &doc).await;
            let created = create(&client, &doc, &ns).await;
            assert!(
                created.is_ok(),
                "{} was refused: {:?}",
                file.display(),
                created.err()
            );
        }
    }

    let minor = server_minor(&client).await.expect("server version");
    let (mut schema_checked, mut cel_checked) = (0, 0);
    for file in &invalid {
        let fixture = parse_fixture(file).expect("fixture header");
        if fixture.rejected_by == RejectedBy::Operator {
            // Stored by the API server; the operator refuses it (crds/tests/manifests.rs).
            continue;
        }
        if fixture.rejected_by == RejectedBy::Cel && minor < 25 {
            eprintln!(
                "SKIPPED {} (CEL rule; this server is 1.{minor}, CEL needs 1.25+)",
                file.display()
            );
            continue;
        }
        let docs = load_yaml_docs(file).expect("fixture parses");
        let (stored, update) = match docs.as_slice() {
            [one] => (None, one.clone()),
            [first, second] => (Some(first.clone()), second.clone()),
            _ => panic!("{}: expected one or two documents", file.display()),
        };
        let fixture_ns = common::namespace(&client, "invalid").await;
        let mut doc = update;
        if let Some(stored) = stored {
            let mut stored = stored;
            stored["metadata"]["namespace"] = Value::from(fixture_ns.clone());
            let old = create(&client, &stored, &fixture_ns)
                .await
                .expect("stored object of a transition fixture");
            doc["metadata"]["resourceVersion"] =
                Value::from(old.metadata.resource_version.unwrap_or_default());
        }
        doc["metadata"]["namespace"] = Value::from(fixture_ns.clone());
        let result = if doc["metadata"].get("resourceVersion").is_some() {
            replace(&client, &doc, &fixture_ns).await
        } else {
            create(&client, &doc, &fixture_ns).await
        };
        match result {
            Err(gpufed_e2e::Error::Kube(kube::Error::Api(e))) => {
                assert!(
                    e.code == 422 || e.code == 400,
                    "{}: HTTP {} {}",
                    file.display(),
                    e.code,
                    e.message
                );
                assert!(
                    e.message.contains(&fixture.expect),
                    "{}: refusal does not name {:?}: {}",
                    file.display(),
                    fixture.expect,
                    e.message
                );
            }
            other => panic!("{} was not refused: {other:?}", file.display()),
        }
        match fixture.rejected_by {
            RejectedBy::Schema => schema_checked += 1,
            RejectedBy::Cel => cel_checked += 1,
            RejectedBy::Operator => {}
        }
    }
    eprintln!("invalid fixtures refused: {schema_checked} by schema, {cel_checked} by CEL");
    assert!(schema_checked > 0, "no `rejected-by: schema` fixture was checked");
}

async fn replace(client: &Client, doc: &Value, ns: &str) -> Result<DynamicObject, gpufed_e2e::Error> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("fixture object");
    let types = obj.types.clone().expect("apiVersion/kind");
    let gvk = kube::api::GroupVersionKind::try_from(&types).expect("gvk");
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let name = obj.metadata.name.clone().unwrap_or_default();
    Ok(api.replace(&name, &PostParams::default(), &obj).await?)
}

/// Guards the build fix for kubernetes#99804: built with Go ≥ 1.16, the 1.20 OpenAPI
/// validators took `""` for null, refusing empty strings in custom resources and
/// `default: ''` in CRDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_strings_in_custom_resources_and_crd_defaults_are_accepted() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = TestEnv::start(FederationSpec::new("empty-string"))
        .await
        .expect("hub starts");
    let client = env.hub_client().await.expect("hub client");
    let dir = std::env::temp_dir().join(format!("gpufed-empty-string-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: emptystrings.e2e.gpufed.io}
spec:
  group: e2e.gpufed.io
  names: {kind: EmptyString, plural: emptystrings}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              given: {type: string}
              defaulted: {type: string, default: ''}
"#;
    std::fs::write(dir.join("crd.yaml"), crd).expect("write CRD");
    let installed = install_crds(&client, &dir, Duration::from_secs(60)).await;
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    assert_eq!(
        installed.expect("a CRD with `default: ''` installs"),
        vec!["emptystrings.e2e.gpufed.io".to_owned()]
    );
    let ns = common::namespace(&client, "empty-string").await;
    let doc = serde_json::json!({
        "apiVersion": "e2e.gpufed.io/v1", "kind": "EmptyString",
        "metadata": { "name": "e" }, "spec": { "given": "" },
    });
    let created = create(&client, &doc, &ns)
        .await
        .expect("a custom resource with an empty string is accepted");
    assert_eq!(created.data["spec"]["given"], Value::from(""));
    assert_eq!(
        created.data["spec"]["defaulted"],
        Value::from(""),
        "default '' applied"
    );
}

/// The pull agent writes an Assignment's status with the resourceVersion it listed
/// (`gpufed_agent::sync::report`): on the real API server, an Assignment deleted and made
/// again under the same name meanwhile must refuse that write (server-side apply with
/// `metadata.resourceVersion` is a precondition), and take the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_s_status_goes_only_to_the_assignment_it_listed() {
    use gpufed_api::{Assignment, AssignmentStatus};
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = TestEnv::start(FederationSpec::new("asgn-rv"))
        .await
        .expect("hub starts");
    let client = env.hub_client().await.expect("hub client");
    install_crds(
        &client,
        &common::repo_root().join("crds"),
        Duration::from_secs(60),
    )
    .await
    .expect("CRDs install");
    let ns = common::namespace(&client, "asgn-rv").await;
    let api: Api<Assignment> = Api::namespaced(client.clone(), &ns);
    let body = |uid: &str| -> Assignment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "Assignment",
            "metadata": {"name": "gf-team-train-0000-a1"},
            "spec": {"jobUid": uid, "attempt": 1, "tenantNamespace": "gf-team-train-0000",
                     "namespace": {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": "gf-team-train-0000"}}}
        }))
        .expect("assignment")
    };
    let mut listed = None;
    for _ in 0..50 {
        match api.create(&PostParams::default(), &body("old-job")).await {
            Ok(a) => {
                listed = Some(a);
                break;
            }
            // Discovery of the new CRD may lag its Established condition a little.
            Err(kube::Error::Api(e)) if e.code == 404 => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("creating the assignment: {e}"),
        }
    }
    let listed = listed.expect("assignment created");
    api.delete(
        &listed.metadata.name.clone().unwrap_or_default(),
        &Default::default(),
    )
    .await
    .expect("deleted");
    let again = api
        .create(&PostParams::default(), &body("new-job"))
        .await
        .expect("made again");
    let status = AssignmentStatus {
        observed_generation: Some(1),
        ran_whole: true,
        ..Default::default()
    };
    gpufed_agent::sync::report(&api, &listed, &status)
        .await
        .expect("a stale write is left to the next round, not an error");
    let now = api.get("gf-team-train-0000-a1").await.expect("get");
    assert_eq!(now.spec.job_uid, "new-job");
    assert!(
        now.status.as_ref().is_none_or(|s| !s.ran_whole),
        "the old job's status reached the new Assignment: {:?}",
        now.status
    );
    gpufed_agent::sync::report(&api, &again, &status)
        .await
        .expect("written");
    let now = api.get("gf-team-train-0000-a1").await.expect("get");
    assert!(
        now.status.is_some_and(|s| s.ran_whole),
        "the listed object takes its status"
    );
}

/// A journal of thousands of jobs' positions and settled totals (each with 16
/// signatures) is far over a ConfigMap's 1 MiB: on the real API server it is stored with
/// that state in parts beside a small header, loads back whole, and a save of the same
/// journal writes no new part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_thousands_of_jobs_is_stored_in_parts() {
    use gpufed_chain::JournalStore;
    use gpufed_operator::settlement::store::{ConfigMapStore, HEADER};
    use k8s_openapi::api::core::v1::ConfigMap;
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = TestEnv::start(FederationSpec::new("journal-parts"))
        .await
        .expect("hub starts");
    let client = env.hub_client().await.expect("hub client");
    let ns = common::namespace(&client, "journal-parts").await;
    let mut positions = serde_json::Map::new();
    let mut settled = serde_json::Map::new();
    for i in 0..3000 {
        let uid = format!("{i:08}-0000-0000-0000-000000000000");
        let key = gpufed_settlement::position::attempt_key(&uid, 1, "provider-a");
        positions.insert(
            key.to_string(),
            serde_json::json!({"jobUid": uid, "meteredUntil": 1_700_000_000u64,
                               "cumulativeGpuSeconds": 691_200, "records": 288, "amount": 1_000_000_000u64}),
        );
        settled.insert(
            uid,
            serde_json::json!({"records": 288, "amount": 1_000_000_000u64, "signatures": vec!["5".repeat(88); 16]}),
        );
    }
    let header = serde_json::from_value(serde_json::json!({
        "batches": {}, "watermarks": {}, "positions": positions, "settled": settled,
        "nextSeq": 0, "nextBatch": 0, "chunkCount": 0, "recordCount": 0
    }))
    .expect("header");
    let journal = gpufed_settlement::Journal::from_chunks(header, Vec::new()).expect("journal");
    let mut store = ConfigMapStore::new(client.clone(), &ns);
    store.save(&journal).await.expect("a journal over 1 MiB is saved");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let header_len = cms
        .get(HEADER)
        .await
        .expect("header")
        .data
        .and_then(|d| d.values().next().map(String::len))
        .unwrap_or(0);
    assert!(
        header_len < 64 * 1024,
        "the header holds only the rest: {header_len} bytes"
    );
    let parts = || async {
        cms.list(&kube::api::ListParams::default().labels("gpufed.io/journal=state"))
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|c| c.metadata.name.unwrap_or_default())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let first = parts().await;
    assert!(first.len() > 4, "state parts: {first:?}");
    let mut reader = ConfigMapStore::new(client.clone(), &ns);
    let loaded = reader.load().await.expect("load").expect("a journal");
    assert_eq!(
        loaded
            .billing("00000007-0000-0000-0000-000000000000")
            .settled
            .signatures
            .len(),
        16
    );
    assert_eq!(
        loaded
            .billing("00002999-0000-0000-0000-000000000000")
            .settled
            .amount,
        1_000_000_000
    );
    reader.save(&loaded).await.expect("saved again");
    assert_eq!(
        parts().await,
        first,
        "unchanged parts keep their content and names"
    );
}
