//! Validation of an object against a CRD's OpenAPI v3 schema, the way the API server
//! does it: defaults first, then types, bounds, patterns, enums, required fields and
//! list-map keys, each error naming the field. CEL rules are not evaluated here.
//!
//! Used to check manifests without a cluster (tests, the kubectl plugin). Unknown
//! fields are not errors: the API server prunes them, so they are reported apart.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// One schema violation, with the path of the field (e.g. `spec.prices[0].model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the offending field.
    pub path: String,
    /// What is wrong, in the API server's words where it has them.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Result of a schema check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Violations: the API server would refuse the object.
    pub errors: Vec<FieldError>,
    /// Fields the schema does not know: the API server would drop them silently.
    pub pruned: Vec<String>,
}

/// Checks `object` against `schema` (a CRD version's `openAPIV3Schema`). `metadata` and
/// the type header are left to the API server's own checks.
pub fn check(schema: &Value, object: &Value) -> Report {
    let mut report = Report::default();
    let object = apply_defaults(schema, object);
    if let (Some(props), Some(obj)) = (schema.get("properties"), object.as_object()) {
        for (key, value) in obj {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.get(key) {
                Some(sub) => walk(sub, value, key, &mut report),
                None => report.pruned.push(key.clone()),
            }
        }
        required(schema, obj, "", &mut report);
    }
    report
}

/// Returns `object` with the schema's defaults applied, as the API server does before
/// validating: a missing property gets its `default`, recursively.
pub fn apply_defaults(schema: &Value, object: &Value) -> Value {
    let mut out = object.clone();
    match (&mut out, schema.get("properties")) {
        (Value::Object(map), Some(Value::Object(props))) => {
            for (key, sub) in props {
                match map.get(key) {
                    Some(v) => {
                        let v = apply_defaults(sub, v);
                        map.insert(key.clone(), v);
                    }
                    None => {
                        if let Some(d) = sub.get("default") {
                            map.insert(key.clone(), apply_defaults(sub, d));
                        }
                    }
                }
            }
        }
        (Value::Array(items), _) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items.iter_mut() {
                    *item = apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
    out
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn err(report: &mut Report, path: &str, message: String) {
    report.errors.push(FieldError {
        path: path.to_owned(),
        message,
    });
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &Value, path: &str, report: &mut Report) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            err(
                report,
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}",
                    ty(schema)
                ),
            );
        }
        return;
    }
    let expected = ty(schema);
    let actual = type_name(value);
    let type_ok = expected.is_empty()
        || expected == actual
        || (expected == "number" && actual == "integer")
        || (expected == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0));
    if !type_ok {
        err(
            report,
            path,
            format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
        );
        return;
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        err(
            report,
            path,
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        );
    }
    match value {
        Value::String(s) => string(schema, s, path, report),
        Value::Number(n) => number(schema, n.as_f64().unwrap_or(f64::NAN), value, path, report),
        Value::Array(items) => array(schema, items, path, report),
        Value::Object(map) => object(schema, map, path, report),
        _ => {}
    }
}

fn ty(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn limit(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn string(schema: &Value, s: &str, path: &str, report: &mut Report) {
    let len = s.chars().count() as f64;
    if let Some(max) = limit(schema, "maxLength").filter(|m| len > *m) {
        err(report, path, format!("Too long: may not be longer than {max}"));
    }
    if let Some(min) = limit(schema, "minLength").filter(|m| len < *m) {
        err(
            report,
            path,
            format!("Invalid value: \"{s}\": {path} in body should be at least {min} chars long"),
        );
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => err(
                report,
                path,
                format!("Invalid value: \"{s}\": {path} in body should match '{pattern}'"),
            ),
            Err(e) => err(
                report,
                path,
                format!("schema pattern {pattern:?} does not compile: {e}"),
            ),
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") && !looks_like_rfc3339(s) {
        err(
            report,
            path,
            format!("Invalid value: \"{s}\": {path} in body must be of type date-time"),
        );
    }
}

fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && (s.ends_with('Z') || s.ends_with('z') || s[19..].contains(['+', '-']))
}

fn number(schema: &Value, n: f64, value: &Value, path: &str, report: &mut Report) {
    if let Some(min) = limit(schema, "minimum").filter(|m| n < *m) {
        err(
            report,
            path,
            format!("Invalid value: {value}: {path} in body should be greater than or equal to {min}"),
        );
    }
    if let Some(max) = limit(schema, "maximum").filter(|m| n > *m) {
        err(
            report,
            path,
            format!("Invalid value: {value}: {path} in body should be less than or equal to {max}"),
        );
    }
}

fn array(schema: &Value, items: &[Value], path: &str, report: &mut Report) {
    let n = items.len() as f64;
    if let Some(max) = limit(schema, "maxItems").filter(|m| n > *m) {
        err(
            report,
            path,
            format!("Too many: {n}: must have at most {max} items"),
        );
    }
    if let Some(min) = limit(schema, "minItems").filter(|m| n < *m) {
        err(
            report,
            path,
            format!("Invalid value: {n}: {path} in body should have at least {min} items"),
        );
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{path}[{i}]"), report);
        }
    }
    let keys: Vec<&str> = match schema.get("x-kubernetes-list-map-keys") {
        Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
        _ => return,
    };
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let key: Vec<String> = keys
            .iter()
            .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
            .collect();
        if !seen.insert(key.clone()) {
            err(
                report,
                &format!("{path}[{i}]"),
                format!("Duplicate value: {{{}}}", key.join(", ")),
            );
        }
    }
}

fn object(schema: &Value, map: &serde_json::Map<String, Value>, path: &str, report: &mut Report) {
    if let Some(max) = limit(schema, "maxProperties").filter(|m| map.len() as f64 > *m) {
        err(
            report,
            path,
            format!("Too many: {}: must have at most {max} items", map.len()),
        );
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, value) in map {
        let sub_path = join(path, key);
        match (props.and_then(|p| p.get(key)), additional) {
            (Some(sub), _) | (None, Some(sub)) => walk(sub, value, &sub_path, report),
            (None, None) if preserve => {}
            (None, None) => report.pruned.push(sub_path),
        }
    }
    required(schema, map, path, report);
}

fn required(schema: &Value, map: &serde_json::Map<String, Value>, path: &str, report: &mut Report) {
    if let Some(Value::Array(req)) = schema.get("required") {
        for key in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                err(report, &join(path, key), "Required value".to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["n"], "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 8},
            "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "list": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "map",
                     "x-kubernetes-list-map-keys": ["k"],
                     "items": {"type": "object", "properties": {"k": {"type": "string"}}}}
        }}}})
    }

    fn paths(r: &Report) -> Vec<&str> {
        r.errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn valid_object_passes_and_defaults_apply() {
        let obj = json!({"spec": {"n": 3, "name": "abc"}});
        assert_eq!(check(&schema(), &obj), Report::default());
        assert_eq!(apply_defaults(&schema(), &obj)["spec"]["mode"], "A");
    }

    #[test]
    fn each_violation_names_its_field() {
        let r = check(
            &schema(),
            &json!({"spec": {"n": 0, "mode": "C", "name": "ABCDEFG"}}),
        );
        assert_eq!(paths(&r), ["spec.mode", "spec.n", "spec.name", "spec.name"]);
        assert!(
            r.errors[1].message.contains("greater than or equal to 1"),
            "{}",
            r.errors[1]
        );
        let r = check(&schema(), &json!({"spec": {"n": "two"}}));
        assert!(r.errors[0].message.contains("must be of type integer"));
        let r = check(&schema(), &json!({"spec": {}}));
        assert_eq!(
            r.errors,
            [FieldError {
                path: "spec.n".into(),
                message: "Required value".into()
            }]
        );
    }

    #[test]
    fn list_maps_refuse_duplicate_keys_and_unknown_fields_are_pruned() {
        let r = check(
            &schema(),
            &json!({"spec": {"n": 1, "extra": 1, "list": [{"k": "a"}, {"k": "a"}]}}),
        );
        assert_eq!(paths(&r), ["spec.list[1]"]);
        assert_eq!(r.pruned, ["spec.extra"]);
    }
}
