//! The worker pod template against the Pod Security Standard `restricted` profile.
//!
//! Members label every tenant namespace `pod-security.kubernetes.io/enforce=restricted`,
//! but API servers before 1.23 have no PodSecurity admission, and a provider may run
//! without it: the hub itself refuses a ComputeJob whose template asks for host access
//! or privileges, naming the field, before anything reaches a provider. Checked:
//! host namespaces, host ports, volume types, privileged containers, privilege
//! escalation, added capabilities (only `NET_BIND_SERVICE`), running as root, unconfined
//! seccomp, and unmasked `/proc`.

use serde_json::Value;

use crate::job::WorkerPodSpec;
use crate::schema_check::FieldError;

const BASE: &str = "spec.template.spec";
/// Volume types the restricted profile allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn err(errors: &mut Vec<FieldError>, path: String, message: &str) {
    errors.push(FieldError {
        path,
        message: format!("{message} (pod security `restricted`: jobs run on other people's clusters)"),
    });
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool) == Some(true)
}

/// Pod- and container-level `securityContext` fields shared by both.
fn security_context(ctx: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let Some(ctx) = ctx else { return };
    if ctx.get("runAsUser").and_then(Value::as_i64) == Some(0) {
        err(errors, format!("{path}.runAsUser"), "must not be 0 (root)");
    }
    if ctx.get("runAsNonRoot").and_then(Value::as_bool) == Some(false) {
        err(errors, format!("{path}.runAsNonRoot"), "must not be false");
    }
    if ctx.pointer("/seccompProfile/type").and_then(Value::as_str) == Some("Unconfined") {
        err(
            errors,
            format!("{path}.seccompProfile.type"),
            "must not be Unconfined",
        );
    }
}

/// Environment variables no container may set itself: the NVIDIA container toolkit reads
/// `NVIDIA_VISIBLE_DEVICES` from an unprivileged container's environment too (its default),
/// and a container's own value overrides the one the device plugin allocated — `all` would
/// give it every GPU of the node, other tenants' included.
pub const RESERVED_ENV: &[&str] = &["NVIDIA_VISIBLE_DEVICES"];

/// Every container (init and ephemeral ones too) of a worker template, with its path.
fn containers(spec: &WorkerPodSpec) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{BASE}.containers[{i}]"), Value::Object(c.0.clone())))
        .collect();
    for list in ["initContainers", "ephemeralContainers"] {
        for (i, c) in spec
            .rest
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push((format!("{BASE}.{list}[{i}]"), c.clone()));
        }
    }
    out
}

/// Whether an `envFrom` `prefix` could begin a name of [`RESERVED_ENV`]: with a key of the
/// Secret or ConfigMap it reads (the checkpoint credentials' keys are the tenant's), it
/// would set that variable. An empty prefix is no such prefix: the key alone would then
/// have to be the reserved name, and the keys the hub copies never are
/// (`member_secret`, and the agent's check of the copy).
pub fn reserved_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && RESERVED_ENV.iter().any(|r| r.starts_with(prefix))
}

/// Every container's variable of [`RESERVED_ENV`], or `envFrom` prefix that could make
/// one ([`reserved_prefix`]), with its field path. Not part of [`check`]: a template with
/// one is refused where pods are built (a running attempt's pods, made before this rule,
/// are left alone), and by a pull-mode agent.
pub fn reserved_env(spec: &WorkerPodSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (path, c) in containers(spec) {
        for (i, from) in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let prefix = from.get("prefix").and_then(Value::as_str).unwrap_or_default();
            if reserved_prefix(prefix) {
                err(
                    &mut errors,
                    format!("{path}.envFrom[{i}].prefix"),
                    "must not begin NVIDIA_VISIBLE_DEVICES: with a key of the Secret or ConfigMap it would choose the container's GPUs",
                );
            }
        }
        for (i, e) in c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(name) = e.get("name").and_then(Value::as_str)
                && RESERVED_ENV.contains(&name)
            {
                err(
                    &mut errors,
                    format!("{path}.env[{i}].name"),
                    "NVIDIA_VISIBLE_DEVICES is set by the device plugin for the GPUs allocated, never by the pod",
                );
            }
        }
    }
    errors
}

fn container(c: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let ctx = c.get("securityContext");
    let sc = format!("{path}.securityContext");
    if is_true(ctx.and_then(|s| s.get("privileged"))) {
        err(
            errors,
            format!("{sc}.privileged"),
            "privileged containers are refused",
        );
    }
    if is_true(ctx.and_then(|s| s.get("allowPrivilegeEscalation"))) {
        err(
            errors,
            format!("{sc}.allowPrivilegeEscalation"),
            "must not be true",
        );
    }
    let added = ctx
        .and_then(|s| s.pointer("/capabilities/add"))
        .and_then(Value::as_array);
    for (i, cap) in added.into_iter().flatten().enumerate() {
        if cap.as_str() != Some("NET_BIND_SERVICE") {
            err(
                errors,
                format!("{sc}.capabilities.add[{i}]"),
                "only NET_BIND_SERVICE may be added",
            );
        }
    }
    if ctx
        .and_then(|s| s.get("procMount"))
        .and_then(Value::as_str)
        .is_some_and(|m| m != "Default")
    {
        err(errors, format!("{sc}.procMount"), "must be Default");
    }
    security_context(ctx, &sc, errors);
    for (i, port) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if port
            .get("hostPort")
            .and_then(Value::as_i64)
            .is_some_and(|p| p != 0)
        {
            err(
                errors,
                format!("{path}.ports[{i}].hostPort"),
                "host ports are refused",
            );
        }
    }
}

/// Every violation of the profile in a worker template, with its field path.
pub fn check(spec: &WorkerPodSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(spec.rest.get(key)) {
            err(
                &mut errors,
                format!("{BASE}.{key}"),
                "host namespaces are refused",
            );
        }
    }
    security_context(
        spec.rest.get("securityContext"),
        &format!("{BASE}.securityContext"),
        &mut errors,
    );
    for (i, v) in spec
        .rest
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(fields) = v.as_object() else { continue };
        for kind in fields
            .keys()
            .filter(|k| *k != "name" && !ALLOWED_VOLUMES.contains(&k.as_str()))
        {
            err(
                &mut errors,
                format!("{BASE}.volumes[{i}].{kind}"),
                "volume type not allowed (configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret are)",
            );
        }
    }
    for (path, c) in containers(spec) {
        container(&c, &path, &mut errors);
    }
    errors
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(v: Value) -> WorkerPodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn paths(v: Value) -> Vec<String> {
        check(&spec(v)).into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn no_container_chooses_its_own_gpus() {
        let v = serde_json::json!({
            "containers": [{"name": "main", "image": "i"},
                           {"name": "side", "image": "i", "env": [{"name": "A", "value": "1"},
                                                                 {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}],
            "initContainers": [{"name": "init", "image": "i", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0"}]}]
        });
        let reserved: Vec<String> = reserved_env(&spec(v.clone()))
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            reserved,
            vec![
                "spec.template.spec.containers[1].env[1].name".to_owned(),
                "spec.template.spec.initContainers[0].env[0].name".to_owned()
            ]
        );
        assert!(
            paths(v).is_empty(),
            "not a spec error: running pods made before stay"
        );
    }

    #[test]
    fn no_env_from_prefix_can_spell_the_gpus() {
        // `prefix: NVIDIA_` + a credentials key `VISIBLE_DEVICES` would be
        // NVIDIA_VISIBLE_DEVICES.
        let v = serde_json::json!({
            "containers": [{"name": "main", "image": "i", "envFrom": [
                {"secretRef": {"name": "gpufed-checkpoint"}},
                {"prefix": "APP_", "configMapRef": {"name": "c"}},
                {"prefix": "NVIDIA_", "secretRef": {"name": "gpufed-checkpoint"}}]}],
            "initContainers": [{"name": "init", "image": "i", "envFrom": [
                {"prefix": "NVIDIA_VISIBLE_DEVICES", "secretRef": {"name": "gpufed-checkpoint"}}]}],
            "ephemeralContainers": [{"name": "dbg", "image": "i", "envFrom": [
                {"prefix": "N", "configMapRef": {"name": "c"}}]}]
        });
        let reserved: Vec<String> = reserved_env(&spec(v)).into_iter().map(|e| e.path).collect();
        assert_eq!(
            reserved,
            vec![
                "spec.template.spec.containers[0].envFrom[2].prefix".to_owned(),
                "spec.template.spec.initContainers[0].envFrom[0].prefix".to_owned(),
                "spec.template.spec.ephemeralContainers[0].envFrom[0].prefix".to_owned(),
            ],
            "no prefix and other prefixes are fine"
        );
        assert!(!reserved_prefix(""));
        assert!(!reserved_prefix("NVIDIA_VISIBLE_DEVICES_"));
        assert!(!reserved_prefix("nvidia_"), "names are case-sensitive");
    }

    #[test]
    fn a_plain_worker_passes() {
        let ok = serde_json::json!({
            "containers": [{"name": "main", "image": "i", "ports": [{"containerPort": 80}],
                "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                    "seccompProfile": {"type": "RuntimeDefault"}}}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
            "restartPolicy": "Never"
        });
        assert_eq!(paths(ok), Vec::<String>::new());
    }

    #[test]
    fn host_access_and_privileges_are_named() {
        let bad = serde_json::json!({
            "hostNetwork": true, "hostPID": false,
            "securityContext": {"runAsUser": 0},
            "containers": [{"name": "main", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": true,
                    "capabilities": {"add": ["SYS_ADMIN"]}, "procMount": "Unmasked",
                    "seccompProfile": {"type": "Unconfined"}}}],
            "initContainers": [{"name": "init", "image": "i", "securityContext": {"runAsNonRoot": false}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]
        });
        let got = paths(bad);
        for want in [
            "spec.template.spec.hostNetwork",
            "spec.template.spec.securityContext.runAsUser",
            "spec.template.spec.containers[0].ports[0].hostPort",
            "spec.template.spec.containers[0].securityContext.privileged",
            "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
            "spec.template.spec.containers[0].securityContext.capabilities.add[0]",
            "spec.template.spec.containers[0].securityContext.procMount",
            "spec.template.spec.containers[0].securityContext.seccompProfile.type",
            "spec.template.spec.initContainers[0].securityContext.runAsNonRoot",
            "spec.template.spec.volumes[0].hostPath",
        ] {
            assert!(got.contains(&want.to_owned()), "{want} missing from {got:?}");
        }
        assert!(
            !got.iter().any(|p| p.ends_with("hostPID")),
            "hostPID: false is fine"
        );
    }
}
