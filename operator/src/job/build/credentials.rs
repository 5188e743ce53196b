//! Pure: a job's checkpoint credentials in its member cluster. The tenant names a Secret
//! of the job's namespace in `spec.checkpoint.credentialsSecret`; each attempt gets a copy
//! in its tenant namespace, [`MEMBER_SECRET`], that every container of every worker
//! receives twice: as environment variables (`envFrom`, for the usual
//! `AWS_ACCESS_KEY_ID`-style keys) and as files under [`MOUNT_PATH`] (for key files such
//! as a GCS service account's JSON), named by `GPUFED_CHECKPOINT_CREDENTIALS`. The copy
//! carries its attempt's number, so removing an ended attempt never removes the copy a
//! later attempt on the same provider wrote ([`super::super::credentials`]).

use std::collections::BTreeMap;

use gpufed_api::ComputeJobSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, PodSpec, Secret, SecretEnvSource, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::job::names;

/// The name of the copy in the tenant namespace, and of the pods' volume holding it.
pub const MEMBER_SECRET: &str = "gpufed-checkpoint";
/// Where each container finds the credentials as files.
pub const MOUNT_PATH: &str = "/var/run/secrets/gpufed/checkpoint";
/// The variable naming [`MOUNT_PATH`].
pub const PATH_VAR: &str = "GPUFED_CHECKPOINT_CREDENTIALS";

/// The name of the tenant's Secret, if the job has one.
pub fn secret_name(spec: &ComputeJobSpec) -> Option<&str> {
    spec.checkpoint.as_ref()?.credentials_secret.as_deref()
}

/// Why the template cannot take the credentials: a volume or a mount path of its own
/// where they go. Part of the template's checks ([`super::template_error`]).
pub fn conflict(spec: &ComputeJobSpec, template: &PodSpec) -> Option<String> {
    secret_name(spec)?;
    if let Some(i) = template
        .volumes
        .iter()
        .flatten()
        .position(|v| v.name == MEMBER_SECRET)
    {
        return Some(format!(
            "spec.template.spec.volumes[{i}].name: {MEMBER_SECRET} is reserved for the checkpoint credentials"
        ));
    }
    for (i, c) in template.containers.iter().enumerate() {
        let mounts = c.volume_mounts.iter().flatten().enumerate();
        for (j, m) in mounts {
            if m.mount_path.trim_end_matches('/') == MOUNT_PATH {
                return Some(format!(
                    "spec.template.spec.containers[{i}].volumeMounts[{j}].mountPath: {MOUNT_PATH} is reserved for the checkpoint credentials"
                ));
            }
        }
    }
    None
}

/// Gives every container of `pod` the credentials (nothing without a Secret).
pub fn mount(spec: &ComputeJobSpec, pod: &mut PodSpec) {
    if secret_name(spec).is_none() {
        return;
    }
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: MEMBER_SECRET.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(MEMBER_SECRET.into()),
            // Readable by the workers' user whatever it is (the profile forbids root).
            default_mode: Some(0o444),
            ..Default::default()
        }),
        ..Default::default()
    });
    for c in &mut pod.containers {
        c.env_from.get_or_insert_with(Vec::new).push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: MEMBER_SECRET.into(),
                optional: Some(false),
            }),
            ..Default::default()
        });
        c.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: PATH_VAR.into(),
            value: Some(MOUNT_PATH.into()),
            ..Default::default()
        });
        c.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
            name: MEMBER_SECRET.into(),
            mount_path: MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
}

/// The copy of the tenant's Secret `data` for attempt `attempt`, in tenant namespace `ns`,
/// labelled as the job's other objects (`labels`) and with its attempt.
pub fn member_secret(
    ns: &str,
    labels: &BTreeMap<String, String>,
    attempt: u32,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    let mut labels = labels.clone();
    labels.insert(names::LABEL_ATTEMPT.into(), attempt.to_string());
    // Its keys become every container's environment (`envFrom`): none may choose the GPUs
    // the container sees ([`gpufed_api::pod_security::RESERVED_ENV`]).
    let mut data = data;
    data.retain(|k, _| {
        let reserved = gpufed_api::pod_security::RESERVED_ENV.contains(&k.as_str());
        if reserved {
            tracing::warn!(namespace = %ns, key = %k, "checkpoint credentials key left out of the copy: it would choose the container's GPUs");
        }
        !reserved
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(MEMBER_SECRET.into()),
            namespace: Some(ns.into()),
            labels: Some(labels),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The attempt a copy was written for.
pub fn attempt_of(secret: &Secret) -> Option<u32> {
    secret
        .metadata
        .labels
        .as_ref()?
        .get(names::LABEL_ATTEMPT)?
        .parse()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec_with(secret: Option<&str>) -> ComputeJobSpec {
        serde_json::from_value(serde_json::json!({
            "workers": 1, "gpusPerWorker": 1, "maxPricePerGpuHour": "2",
            "checkpoint": {"uri": "s3://bucket/run/", "credentialsSecret": secret},
            "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}
        }))
        .unwrap()
    }

    fn pod() -> PodSpec {
        serde_json::from_value(serde_json::json!({
            "containers": [{"name": "w", "image": "i"}, {"name": "side", "image": "s"}]
        }))
        .unwrap()
    }

    #[test]
    fn every_container_gets_the_credentials_as_variables_and_files() {
        let mut p = pod();
        mount(&spec_with(Some("s3-creds")), &mut p);
        let v = p.volumes.as_ref().unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].secret.as_ref().unwrap().secret_name.as_deref(),
            Some(MEMBER_SECRET)
        );
        for c in &p.containers {
            let from = c.env_from.as_ref().unwrap();
            assert_eq!(from[0].secret_ref.as_ref().unwrap().name, MEMBER_SECRET);
            let env = c.env.as_ref().unwrap();
            assert!(
                env.iter()
                    .any(|e| e.name == PATH_VAR && e.value.as_deref() == Some(MOUNT_PATH))
            );
            let m = &c.volume_mounts.as_ref().unwrap()[0];
            assert_eq!((m.mount_path.as_str(), m.read_only), (MOUNT_PATH, Some(true)));
        }
    }

    #[test]
    fn without_a_secret_nothing_is_added() {
        let mut p = pod();
        mount(&spec_with(None), &mut p);
        assert_eq!(p, pod());
        assert_eq!(conflict(&spec_with(None), &p), None);
    }

    #[test]
    fn a_template_using_the_reserved_names_is_refused_naming_the_field() {
        let spec = spec_with(Some("s"));
        let mut p = pod();
        p.volumes = Some(vec![Volume {
            name: MEMBER_SECRET.into(),
            ..Default::default()
        }]);
        let e = conflict(&spec, &p).unwrap();
        assert!(e.starts_with("spec.template.spec.volumes[0].name"), "{e}");
        let mut p = pod();
        p.containers[1].volume_mounts = Some(vec![VolumeMount {
            name: "x".into(),
            mount_path: format!("{MOUNT_PATH}/"),
            ..Default::default()
        }]);
        let e = conflict(&spec, &p).unwrap();
        assert!(
            e.starts_with("spec.template.spec.containers[1].volumeMounts[0].mountPath"),
            "{e}"
        );
        assert_eq!(conflict(&spec, &pod()), None);
    }

    #[test]
    fn no_env_from_prefix_spells_the_gpus_with_a_credentials_key() {
        // `prefix: NVIDIA_` + a key `VISIBLE_DEVICES` (the copy keeps it: it is no
        // reserved name) would be NVIDIA_VISIBLE_DEVICES: the job is refused before
        // placement, naming the field (its `InvalidTemplate` condition).
        let mut spec = spec_with(Some("s3-creds"));
        spec.template.spec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "w", "image": "i"}],
            "initContainers": [{"name": "init", "image": "i",
                "envFrom": [{"prefix": "NVIDIA_", "secretRef": {"name": MEMBER_SECRET}}]}]
        }))
        .unwrap();
        let e = crate::job::build::template_error(&spec).unwrap();
        assert!(
            e.starts_with("spec.template.spec.initContainers[0].envFrom[0].prefix"),
            "{e}"
        );
        spec.template.spec.rest.remove("initContainers");
        assert_eq!(crate::job::build::template_error(&spec), None);
    }

    #[test]
    fn the_copy_carries_its_attempt() {
        let labels = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
        let data = BTreeMap::from([("AWS_ACCESS_KEY_ID".to_owned(), ByteString(b"k".to_vec()))]);
        let s = member_secret("gpufed-t", &labels, 3, data.clone());
        assert_eq!(attempt_of(&s), Some(3));
        assert_eq!(s.data.as_ref(), Some(&data));
        assert_eq!(s.metadata.namespace.as_deref(), Some("gpufed-t"));
        assert_eq!(s.metadata.labels.unwrap()["a"], "b");
        let mut chooses = data.clone();
        chooses.insert("NVIDIA_VISIBLE_DEVICES".to_owned(), ByteString(b"all".to_vec()));
        let s = member_secret("gpufed-t", &labels, 3, chooses);
        assert_eq!(s.data, Some(data), "no key chooses the containers' GPUs");
    }
}
