//! Every example is accepted and every invalid fixture refused, by the generated CRD
//! schema and by its CEL rules evaluated locally (API servers before 1.25 drop CEL
//! rules, so this is where they are tested), with an error that names the field.

use std::path::{Path, PathBuf};

use gpufed_api::{crd, fixture, schema_check};
use kube_cel::Validator;
use serde_json::Value;

fn repo() -> PathBuf {
    // The package's directory as cargo gives it at run time: a test binary built in a shared
    // target dir from another checkout still finds this checkout's files.
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir.display());
    files
}

/// The `openAPIV3Schema` of the CRD whose kind the object declares.
fn schema_for(object: &Value) -> Value {
    let kind = object["kind"].as_str().expect("object has a kind");
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("a gpufed kind");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("CRD has a schema")).expect("schema to JSON")
}

fn cel_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema_for(object);
    match Validator::new().validate(&schema, object, old) {
        Ok(()) => Vec::new(),
        // A rule at the root with `fieldPath: .spec` is reported by the API server as `spec`.
        Err(errors) => errors
            .iter()
            .map(|e| e.to_string().trim_start_matches('.').to_owned())
            .collect(),
    }
}

#[test]
fn examples_are_accepted_by_schema_and_cel() {
    let mut checked = 0;
    let files = yaml_files(&repo().join("examples"))
        .into_iter()
        .chain(yaml_files(&repo().join("examples/demo")));
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).expect("example parses");
            if object["apiVersion"] != "gpufed.io/v1alpha1" {
                continue;
            }
            let report = schema_check::check(&schema_for(&object), &object);
            assert!(
                report.errors.is_empty(),
                "{}: {:?}",
                file.display(),
                report.errors
            );
            assert!(
                report.pruned.is_empty(),
                "{}: unknown fields {:?}",
                file.display(),
                report.pruned
            );
            let cel = cel_errors(&object, None);
            assert!(cel.is_empty(), "{}: {cel:?}", file.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected at least 4 gpufed objects in examples/, found {checked}"
    );
}

#[test]
fn examples_deserialize_into_the_rust_types() {
    for file in yaml_files(&repo().join("examples"))
        .into_iter()
        .chain(yaml_files(&repo().join("examples/demo")))
    {
        let text = std::fs::read_to_string(&file).expect("read example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).expect("example parses");
            let result = match object["kind"].as_str() {
                Some("ComputeJob") => serde_json::from_value::<gpufed_api::ComputeJob>(object).err(),
                Some("GpuProvider") => serde_json::from_value::<gpufed_api::GpuProvider>(object).err(),
                Some("Stake") => serde_json::from_value::<gpufed_api::Stake>(object).err(),
                Some("ComputeService") => serde_json::from_value::<gpufed_api::ComputeService>(object).err(),
                Some("ComputeQuota") => serde_json::from_value::<gpufed_api::ComputeQuota>(object).err(),
                _ => None,
            };
            assert!(result.is_none(), "{}: {result:?}", file.display());
        }
    }
}

#[test]
fn invalid_fixtures_are_refused_naming_the_field() {
    for file in yaml_files(&repo().join("examples/invalid")) {
        let name = file.display();
        let text = std::fs::read_to_string(&file).expect("read fixture");
        let f = fixture::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let schema = schema_for(&f.object);
        let report = schema_check::check(&schema, &f.object);
        let cel = cel_errors(&f.object, f.old.as_ref());
        match f.rejected_by {
            fixture::Layer::Schema => {
                // The real API server (1.20) names an enum inside a list without its
                // index (`...matchExpressions.operator`): either spelling is the field.
                assert!(
                    report.errors.iter().any(
                        |e| e.path == f.expect || gpufed_api::check::without_indices(&e.path) == f.expect
                    ),
                    "{name}: schema must refuse {} but said {:?}",
                    f.expect,
                    report.errors
                );
            }
            fixture::Layer::Cel => {
                assert!(
                    report.errors.is_empty(),
                    "{name}: meant for CEL, but the schema refuses: {:?}",
                    report.errors
                );
                assert!(
                    cel.iter()
                        .any(|e| e.starts_with(&format!("{}: ", f.expect)) && e.contains(&f.expect)),
                    "{name}: CEL must refuse {} but said {cel:?}",
                    f.expect
                );
                if let Some(old) = &f.old {
                    assert!(
                        cel_errors(old, None).is_empty(),
                        "{name}: the stored object must be valid"
                    );
                }
            }
            fixture::Layer::Operator => {
                assert!(
                    report.errors.is_empty() && cel.is_empty(),
                    "{name}: meant for the operator's checks, but schema/CEL refuse: {:?} {cel:?}",
                    report.errors
                );
                let job: gpufed_api::ComputeJob =
                    serde_json::from_value(f.object.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
                let errs = gpufed_api::check::job_spec(&job.spec);
                assert!(
                    errs.iter().any(|e| e.path == f.expect),
                    "{name}: the operator must refuse {} but said {errs:?}",
                    f.expect
                );
            }
        }
    }
}

#[test]
fn every_cel_rule_compiles() {
    for crd in crd::all() {
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        let schema = serde_json::to_value(schema.expect("schema")).expect("json");
        let compiled = kube_cel::compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{}: {:?}",
            crd.spec.names.kind,
            compiled.compilation_errors()
        );
    }
}

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    for crd in crd::all() {
        let path = repo().join("crds").join(crd::file_name(&crd));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = crd::to_yaml(&crd).expect("render");
        assert!(
            committed == generated,
            "{} is stale: run `make crds`",
            path.display()
        );
    }
}

#[test]
fn crds_have_status_printer_columns_short_names_and_category() {
    for crd in crd::all() {
        let kind = &crd.spec.names.kind;
        assert!(
            crd.spec
                .names
                .categories
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == "gpufed")),
            "{kind}"
        );
        assert!(
            crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{kind}"
        );
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{kind}: status subresource"
        );
        let cols = v.additional_printer_columns.as_ref().expect("printer columns");
        assert!(cols.iter().any(|c| c.name == "Age") && cols.len() >= 4, "{kind}");
    }
}

/// The operator's Rust copy of the CEL rules refuses what CEL refuses, naming the same
/// field, and accepts every example.
#[test]
fn rust_rules_agree_with_cel_on_every_fixture() {
    use gpufed_api::{ComputeJob, GpuProvider, Stake, check};
    fn rust_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
        let errs = match object["kind"].as_str() {
            Some("ComputeJob") => {
                let new: ComputeJob = serde_json::from_value(object.clone()).expect("job");
                match old {
                    Some(o) => check::job_update(&serde_json::from_value(o.clone()).expect("old job"), &new),
                    None => check::job_spec(&new.spec),
                }
            }
            Some("GpuProvider") => check::provider_spec(
                &serde_json::from_value::<GpuProvider>(object.clone())
                    .expect("provider")
                    .spec,
            ),
            Some("ComputeService") => check::service_spec(
                &serde_json::from_value::<gpufed_api::ComputeService>(object.clone())
                    .expect("service")
                    .spec,
            ),
            Some("ComputeQuota") => check::quota_spec(
                &serde_json::from_value::<gpufed_api::ComputeQuota>(object.clone())
                    .expect("quota")
                    .spec,
            ),
            Some("Stake") => {
                let new: Stake = serde_json::from_value(object.clone()).expect("stake");
                let old: Option<Stake> = old.map(|o| serde_json::from_value(o.clone()).expect("old stake"));
                check::stake_spec(old.as_ref().map(|o| &o.spec), &new.spec)
            }
            other => panic!("unexpected kind {other:?}"),
        };
        errs.into_iter().map(|e| e.path).collect()
    }
    let mut cel_fixtures = 0;
    for file in yaml_files(&repo().join("examples/invalid")) {
        let f = fixture::parse(&std::fs::read_to_string(&file).expect("read")).expect("fixture");
        if f.rejected_by != fixture::Layer::Cel {
            continue;
        }
        cel_fixtures += 1;
        let errs = rust_errors(&f.object, f.old.as_ref());
        // The Rust rules may name a deeper field (`spec.prices[0].pricePerGpuHour`).
        let names = |p: &String| p == &f.expect || p.starts_with(&format!("{}[", f.expect));
        assert!(
            errs.iter().any(names),
            "{}: Rust rules said {errs:?}, want {}",
            file.display(),
            f.expect
        );
    }
    assert!(cel_fixtures >= 5, "only {cel_fixtures} CEL fixtures");
    for file in yaml_files(&repo().join("examples")) {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if object["apiVersion"] == "gpufed.io/v1alpha1" {
                assert!(rust_errors(&object, None).is_empty(), "{}", file.display());
            }
        }
    }
}

/// The job controller ends an attempt by applying a status without `placement`; the
/// 1.20 API server then removes the fields it owns there but leaves an emptied nested
/// object behind (and with it a `placement` missing its required fields, refused as
/// invalid). Every object nested in `placement` must therefore be atomic.
#[test]
fn objects_nested_in_a_placement_are_atomic_for_server_side_apply() {
    let job = serde_json::json!({"kind": "ComputeJob"});
    let schema = schema_for(&job);
    let placement = &schema["properties"]["status"]["properties"]["placement"]["properties"];
    let props = placement.as_object().expect("placement has properties");
    let nested: Vec<&String> = props
        .iter()
        .filter(|(_, p)| p["type"] == "object")
        .map(|(k, _)| k)
        .collect();
    assert!(nested.iter().any(|k| *k == "preempted"), "{nested:?}");
    for k in nested {
        assert_eq!(
            props[k]["x-kubernetes-map-type"], "atomic",
            "status.placement.{k} is not atomic"
        );
    }
}
