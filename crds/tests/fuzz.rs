//! Hostile specs: every example manifest, mutated at random (values replaced by other
//! types, huge or odd strings, keys removed or added), goes through the generated schema,
//! the CEL rules (evaluated locally, as 1.20 API servers drop them) and the operator's own
//! checks. Nothing may panic, and every refusal must name a field and say why.

use std::path::PathBuf;

use gpufed_api::{check, crd, schema_check};
use kube_cel::Validator;
use proptest::prelude::*;
use serde_json::{Map, Value};

static EXAMPLES: std::sync::LazyLock<Vec<Value>> = std::sync::LazyLock::new(examples);
static SCHEMAS: std::sync::LazyLock<std::collections::BTreeMap<String, Value>> =
    std::sync::LazyLock::new(|| {
        crd::all()
            .into_iter()
            .map(|c| (c.spec.names.kind.clone(), schema_for(&c.spec.names.kind)))
            .collect()
    });

fn examples() -> Vec<Value> {
    // The package's directory as cargo gives it at run time: a test binary built in a shared
    // target dir from another checkout still finds this checkout's files.
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if v["apiVersion"] == "gpufed.io/v1alpha1" {
                out.push(v);
            }
        }
    }
    out
}

fn schema_for(kind: &str) -> Value {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("a gpufed kind");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("schema JSON")
}

/// JSON pointers of every value under `spec`.
fn paths(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            paths(
                v,
                format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| paths(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// One mutation: which value (index into the paths, modulo), what to do, with what.
#[derive(Debug, Clone)]
enum Op {
    Replace(usize, Value),
    Remove(usize),
    Insert(usize, String, Value),
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        "\\PC{0,40}".prop_map(Value::from),
        "[0-9a-zA-Z.\\-:/]{0,24}".prop_map(Value::from),
        (1usize..5000).prop_map(|n| Value::from("x".repeat(n))),
        Just(Value::Array(Vec::new())),
        Just(Value::Object(Map::new())),
        prop::collection::vec("[a-z]{1,8}".prop_map(Value::from), 0..40).prop_map(Value::Array),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), leaf()).prop_map(|(i, v)| Op::Replace(i, v)),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => (any::<usize>(), "[a-zA-Z]{1,12}", leaf()).prop_map(|(i, k, v)| Op::Insert(i, k, v)),
    ]
}

fn mutate(object: &mut Value, op: &Op) {
    let mut all = Vec::new();
    paths(&object["spec"], "/spec".into(), &mut all);
    let at = |i: &usize| all[*i % all.len()].clone();
    match op {
        Op::Replace(i, v) => {
            if let Some(slot) = object.pointer_mut(&at(i)) {
                *slot = v.clone();
            }
        }
        Op::Remove(i) => {
            let p = at(i);
            let Some((parent, key)) = p.rsplit_once('/') else {
                return;
            };
            match object.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>()
                        && i < a.len()
                    {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
        Op::Insert(i, k, v) => {
            if let Some(Value::Object(m)) = object.pointer_mut(&at(i)) {
                m.insert(k.clone(), v.clone());
            }
        }
    }
}

fn named(path: &str, message: &str, input: &Value) {
    assert!(
        !path.trim().is_empty() && !message.trim().is_empty(),
        "refusal without a field or a reason ({path:?}: {message:?}) for {input}"
    );
}

/// The operator's own checks, where the object still deserializes into its Rust type.
fn rust_checks(object: &Value) {
    let errors = match object["kind"].as_str() {
        Some("ComputeJob") => serde_json::from_value::<gpufed_api::ComputeJob>(object.clone())
            .map(|j| check::job_spec(&j.spec))
            .unwrap_or_default(),
        Some("ComputeService") => serde_json::from_value::<gpufed_api::ComputeService>(object.clone())
            .map(|s| check::service_spec(&s.spec))
            .unwrap_or_default(),
        Some("GpuProvider") => serde_json::from_value::<gpufed_api::GpuProvider>(object.clone())
            .map(|p| check::provider_spec(&p.spec))
            .unwrap_or_default(),
        Some("Stake") => serde_json::from_value::<gpufed_api::Stake>(object.clone())
            .map(|s| check::stake_spec(None, &s.spec))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for e in errors {
        named(&e.path, &e.message, object);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_are_refused_with_a_reason_or_accepted_never_a_panic(
        pick in any::<usize>(),
        ops in prop::collection::vec(op(), 1..4),
    ) {
        let mut object = EXAMPLES[pick % EXAMPLES.len()].clone();
        for o in &ops {
            mutate(&mut object, o);
        }
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let schema = &SCHEMAS[&kind];
        let report = schema_check::check(schema, &object);
        for e in &report.errors {
            named(&e.path, &e.message, &object);
        }
        if report.errors.is_empty() {
            // What the schema admits reaches CEL and the operator's checks.
            if let Err(errors) = Validator::new().validate(schema, &object, None) {
                for e in errors {
                    let text = e.to_string();
                    named(&text, &text, &object);
                }
            }
            rust_checks(&object);
        }
    }
}
