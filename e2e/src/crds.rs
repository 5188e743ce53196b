//! Installing our CRDs on a (possibly old) API server, applying manifests, and reading the
//! invalid-fixture headers (`# expect: ...`, `# rejected-by: schema|cel`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

fn serde_err(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::Serde {
        what: what.display().to_string(),
        message: e.to_string(),
    }
}

/// The `*.yaml` / `*.yml` files of a directory, sorted (not recursive).
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(Error::io("listing", dir))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// All non-empty YAML documents of a file, as JSON values.
pub fn load_yaml_docs(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).map_err(|e| serde_err(path, e))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Removes every `x-kubernetes-validations` key (CEL rules), for servers older than 1.25:
/// 1.20 drops them silently on create and fails server-side apply with HTTP 500.
pub use gpufed_api::crd::strip_cel;

/// The server's minor version (e.g. 20), parsed leniently (`"20+"` → 20).
pub async fn server_minor(client: &Client) -> Result<u32> {
    let info = client.apiserver_version().await?;
    Ok(info
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0))
}

/// Creates (or replaces) every CRD found in the `*.yaml` files of `dir` with a plain create,
/// stripping CEL rules on servers older than 1.25, and waits until each is Established.
/// Returns the CRD names.
pub async fn install_crds(client: &Client, dir: &Path, timeout: Duration) -> Result<Vec<String>> {
    let strip = server_minor(client).await? < 25;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in yaml_files(dir)? {
        for mut doc in load_yaml_docs(&file)? {
            if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            if strip {
                strip_cel(&mut doc);
            }
            let crd: CustomResourceDefinition =
                serde_json::from_value(doc).map_err(|e| serde_err(&file, e))?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            // A loaded machine's etcd answers "request timed out" (500) now and then; the
            // write may or may not have happened, so try again (a 409 then replaces).
            let mut tries = 0;
            loop {
                match upsert(&api, &name, &crd).await {
                    Err(e) if transient(&e) && tries < 5 => {
                        tries += 1;
                        tracing::warn!(crd = %name, error = %e, tries, "CRD write failed; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    other => break other?,
                }
            }
            names.push(name);
        }
    }
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::State(format!("waiting for CRD {name}: {e}"))),
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("CRD {name} Established"),
                    seconds: timeout.as_secs(),
                });
            }
        }
    }
    Ok(names)
}

/// Creates `crd`, or replaces it when it exists.
async fn upsert(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    crd: &CustomResourceDefinition,
) -> kube::Result<()> {
    match api.create(&PostParams::default(), crd).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let mut crd = crd.clone();
            crd.metadata.resource_version = api.get(name).await?.metadata.resource_version;
            api.replace(name, &PostParams::default(), &crd).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Whether an API server error may pass by itself: server-side failures (etcd timeouts
/// come back as 500), throttling, and a conflict with a concurrent writer.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 409,
        _ => false,
    }
}

/// Creates one manifest (any kind the server knows) with a plain create; namespaced objects
/// without a namespace go to `default_namespace`.
pub async fn create_manifest(client: &Client, doc: &Value, default_namespace: &str) -> Result<DynamicObject> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| Error::Serde {
        what: "manifest".into(),
        message: e.to_string(),
    })?;
    let types = obj
        .types
        .clone()
        .ok_or_else(|| Error::State("manifest without apiVersion/kind".into()))?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| Error::State(e.to_string()))?;
    let (resource, caps) = pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_owned());
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    Ok(api.create(&PostParams::default(), &obj).await?)
}

/// Which validation layer must refuse an invalid fixture (the fixture format is defined
/// in `gpufed_api::fixture`).
pub use gpufed_api::fixture::Layer as RejectedBy;

/// An invalid example and what its header says about it.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The file.
    pub path: PathBuf,
    /// Text that must appear in the rejection (names the field).
    pub expect: String,
    /// The layer that must reject it.
    pub rejected_by: RejectedBy,
}

/// Reads `# expect:` and `# rejected-by:` from the header comments of a fixture.
pub fn parse_fixture(path: &Path) -> Result<Fixture> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
    let f = gpufed_api::fixture::parse(&text).map_err(|e| serde_err(path, e))?;
    Ok(Fixture {
        path: path.to_owned(),
        expect: f.expect,
        rejected_by: f.rejected_by,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn fixture_header_is_parsed_and_required() {
        let dir = std::env::temp_dir().join(format!("gpufed-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(
            &good,
            "# expect: spec.gpusPerWorker\n# rejected-by: schema\napiVersion: v1\n",
        )
        .unwrap();
        let f = parse_fixture(&good).unwrap();
        assert_eq!(
            (f.expect.as_str(), f.rejected_by),
            ("spec.gpusPerWorker", RejectedBy::Schema)
        );
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "# expect: x\napiVersion: v1\n").unwrap();
        assert!(parse_fixture(&bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn etcd_timeouts_and_throttling_are_retried_bad_requests_are_not() {
        let api = |code: u16, message: &str| {
            kube::Error::Api(kube::core::Status::failure(message, "").with_code(code).boxed())
        };
        assert!(transient(&api(500, "etcdserver: request timed out")));
        assert!(transient(&api(503, "unavailable")));
        assert!(transient(&api(429, "too many requests")));
        assert!(!transient(&api(422, "spec.versions: Invalid value")));
        assert!(!transient(&api(403, "forbidden")));
    }
}
