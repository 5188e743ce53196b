//! The format of the manifest fixtures in `examples/invalid/`: YAML whose header
//! comments say which field the rejection must name and which layer rejects it.
//!
//! ```yaml
//! # expect: spec.gpusPerWorker
//! # rejected-by: schema        (or `cel`: rules that API servers before 1.25 ignore;
//!                              or `operator`: only the operator's checks can say)
//! <object>                     (two documents: the stored object, then the update)
//! ```

use serde_json::Value;

/// Which validation layer must refuse a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The OpenAPI schema (types, bounds, patterns, enums, required, list keys).
    Schema,
    /// A CEL rule (`x-kubernetes-validations`).
    Cel,
    /// The operator's own checks (`gpufed_api::check`), e.g. pod security: the API server
    /// stores the object, the operator refuses to act on it (Stalled, InvalidSpec).
    Operator,
}

/// A parsed invalid-manifest fixture.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixture {
    /// The field the error must name, e.g. `spec.gpu.interconnect`.
    pub expect: String,
    /// The layer that must refuse it.
    pub rejected_by: Layer,
    /// For updates: the stored object the update is checked against.
    pub old: Option<Value>,
    /// The object that must be refused.
    pub object: Value,
}

/// Why a fixture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A header line is missing or wrong.
    #[error("fixture header: {0}")]
    Header(String),
    /// The YAML does not parse.
    #[error("fixture YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

fn header<'a>(text: &'a str, key: &str) -> Result<&'a str, FixtureError> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix('#')
                .map(str::trim)
                .and_then(|l| l.strip_prefix(key))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| FixtureError::Header(format!("missing `# {key} ...` line")))
}

/// Parses a fixture file's text.
pub fn parse(text: &str) -> Result<Fixture, FixtureError> {
    let expect = header(text, "expect:")?.to_owned();
    let rejected_by = match header(text, "rejected-by:")? {
        "schema" => Layer::Schema,
        "cel" => Layer::Cel,
        "operator" => Layer::Operator,
        other => {
            return Err(FixtureError::Header(format!(
                "rejected-by must be schema, cel or operator, not {other:?}"
            )));
        }
    };
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    let (old, object) = match docs.len() {
        1 => (None, docs.remove(0)),
        2 => {
            let object = docs.remove(1);
            (Some(docs.remove(0)), object)
        }
        n => {
            return Err(FixtureError::Header(format!(
                "expected 1 or 2 YAML documents, found {n}"
            )));
        }
    };
    Ok(Fixture {
        expect,
        rejected_by,
        old,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_and_documents() {
        let f = parse("# expect: spec.x\n# rejected-by: cel\na: 1\n---\na: 2\n").expect("parses");
        assert_eq!(f.expect, "spec.x");
        assert_eq!(f.rejected_by, Layer::Cel);
        assert_eq!(f.old, Some(serde_json::json!({"a": 1})));
        assert_eq!(f.object, serde_json::json!({"a": 2}));
    }

    #[test]
    fn refuses_a_fixture_without_header() {
        assert!(matches!(parse("a: 1\n"), Err(FixtureError::Header(_))));
        assert!(matches!(
            parse("# expect: x\n# rejected-by: maybe\na: 1\n"),
            Err(FixtureError::Header(_))
        ));
    }
}
