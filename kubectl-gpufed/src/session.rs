//! I/O: the connection to the hub, built from kubectl's flags, and the few API calls the
//! commands make, with their errors turned into messages a user can act on.

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_api::serving::LABEL_SERVICE;
use gpufed_api::{ComputeJob, ComputeService, GpuProvider};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::cli::Global;
use crate::error::{Error, NotFoundKind, Result, root_cause};
use crate::submit::FIELD_MANAGER;
use crate::token::{TOKEN_NAMESPACE, TOKEN_SECRET_TYPE};

/// How long to wait for a TCP connection to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for the hub and the namespace commands work in.
#[derive(Clone)]
pub struct Session {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The API server URL (for messages).
    pub server: String,
}

/// The client configuration kubectl would use with these flags: `--kubeconfig` (else
/// `$KUBECONFIG`, `~/.kube/config`, in-cluster) and `--context`. Reads files only.
pub async fn config(g: &Global) -> Result<Config> {
    let options = KubeConfigOptions {
        context: g.context.clone(),
        ..Default::default()
    };
    let config = match (&g.kubeconfig, &g.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("{}: {}", path.display(), root_cause(&e))))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| Error::Kubeconfig(format!("{}: {}", path.display(), root_cause(&e))))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Kubeconfig(root_cause(&e)))?,
        (None, None) => Config::infer().await.map_err(|e| {
            Error::Kubeconfig(format!(
                "none found (pass --kubeconfig, set KUBECONFIG, or run in a cluster): {}",
                root_cause(&e)
            ))
        })?,
    };
    Ok(config)
}

impl Session {
    /// Builds the session (no request is sent yet).
    pub async fn connect(g: &Global) -> Result<Self> {
        let mut config = config(g).await?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(root_cause(&e)))?;
        Ok(Self {
            client,
            namespace,
            server,
        })
    }

    fn jobs(&self) -> Api<ComputeJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn list_error(&self, e: kube::Error, resource: &'static str) -> Error {
        match Error::not_found(&e) {
            Some(_) => Error::CrdsMissing {
                server: self.server.clone(),
                resource,
            },
            None => Error::from_kube(e, &self.server, format!("listing {resource}")),
        }
    }

    /// Every GpuProvider.
    pub async fn providers(&self) -> Result<Vec<GpuProvider>> {
        tracing::debug!(server = %self.server, "listing gpuproviders");
        Api::<GpuProvider>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| self.list_error(e, "gpuproviders.gpufed.io"))
    }

    /// A namespace's labels, or `None` when they cannot be read (a tenant may not be
    /// allowed to get namespaces): only providers' tenant selectors need them.
    pub async fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        match Api::<Namespace>::all(self.client.clone()).get(name).await {
            Ok(ns) => Some(ns.metadata.labels.unwrap_or_default()),
            Err(e) => {
                tracing::debug!(namespace = name, error = %e, "cannot read the namespace's labels");
                None
            }
        }
    }

    /// The ComputeJobs of the session's namespace, or of all namespaces.
    pub async fn list_jobs(&self, all_namespaces: bool) -> Result<Vec<ComputeJob>> {
        tracing::debug!(namespace = %self.namespace, all_namespaces, "listing computejobs");
        let api = if all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.jobs()
        };
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| self.list_error(e, "computejobs.gpufed.io"))
    }

    /// A read of `kind` `name` failed: not found (the object, or the resource: CRDs
    /// missing), else the API error.
    fn read_error(
        &self,
        e: kube::Error,
        kind: &'static str,
        resource: &'static str,
        name: &str,
        namespace: &str,
    ) -> Error {
        match Error::not_found(&e) {
            Some(NotFoundKind::Object) => Error::NotFound {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            Some(NotFoundKind::Resource) => Error::CrdsMissing {
                server: self.server.clone(),
                resource,
            },
            None => {
                let scope = if namespace.is_empty() {
                    String::new()
                } else {
                    format!("{namespace}/")
                };
                Error::from_kube(e, &self.server, format!("reading {kind} {scope}{name}"))
            }
        }
    }

    /// One ComputeJob of the session's namespace.
    pub async fn job(&self, name: &str) -> Result<ComputeJob> {
        self.jobs()
            .get(name)
            .await
            .map_err(|e| self.read_error(e, "computejob", "computejobs.gpufed.io", name, &self.namespace))
    }

    fn services(&self) -> Api<ComputeService> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// One ComputeService of the session's namespace.
    pub async fn service(&self, name: &str) -> Result<ComputeService> {
        self.services().get(name).await.map_err(|e| {
            self.read_error(
                e,
                "computeservice",
                "computeservices.gpufed.io",
                name,
                &self.namespace,
            )
        })
    }

    /// Merge-patches a ComputeService's spec (field manager `kubectl-gpufed`).
    pub async fn patch_service(&self, name: &str, patch: &serde_json::Value) -> Result<ComputeService> {
        self.patch_service_with(name, &Patch::Merge(patch)).await
    }

    /// Sends a JSON patch (RFC 6902) to a ComputeService (field manager `kubectl-gpufed`);
    /// a failed `test` operation is the server's 422 (an [`Error::Api`]).
    pub async fn json_patch_service(&self, name: &str, ops: &serde_json::Value) -> Result<ComputeService> {
        let patch: json_patch::Patch =
            serde_json::from_value(ops.clone()).map_err(|e| Error::Output(e.to_string()))?;
        self.patch_service_with(name, &Patch::<()>::Json(patch)).await
    }

    async fn patch_service_with<P: serde::Serialize + std::fmt::Debug>(
        &self,
        name: &str,
        patch: &Patch<P>,
    ) -> Result<ComputeService> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.services()
            .patch(name, &params, patch)
            .await
            .map_err(|e| match Error::not_found(&e) {
                Some(_) => self.read_error(
                    e,
                    "computeservice",
                    "computeservices.gpufed.io",
                    name,
                    &self.namespace,
                ),
                None => Error::from_kube(
                    e,
                    &self.server,
                    format!("patching computeservice {}/{name}", self.namespace),
                ),
            })
    }

    /// The ControllerRevisions labelled as `service`'s (its revision history).
    pub async fn service_revisions(&self, service: &str) -> Result<Vec<ControllerRevision>> {
        let selector = format!("{LABEL_SERVICE}={service}");
        Api::<ControllerRevision>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .map_err(|e| {
                let what = format!(
                    "listing the revisions of computeservice {}/{service}",
                    self.namespace
                );
                Error::from_kube(e, &self.server, what)
            })
    }

    /// Server-side applies `job` (field manager `kubectl-gpufed`) and returns the result.
    pub async fn apply_job(&self, job: &ComputeJob) -> Result<ComputeJob> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let what = format!("applying computejob {}/{name}", self.namespace);
        self.jobs()
            .patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(job))
            .await
            .map_err(|e| match Error::not_found(&e) {
                // A missing namespace is a 404 that names it: the server's message says so.
                Some(NotFoundKind::Resource) => Error::CrdsMissing {
                    server: self.server.clone(),
                    resource: "computejobs.gpufed.io",
                },
                _ => Error::from_kube(e, &self.server, what),
            })
    }

    /// One GpuProvider.
    pub async fn provider(&self, name: &str) -> Result<GpuProvider> {
        Api::<GpuProvider>::all(self.client.clone())
            .get(name)
            .await
            .map_err(|e| self.read_error(e, "gpuprovider", "gpuproviders.gpufed.io", name, ""))
    }

    /// Merge-patches a GpuProvider's spec (field manager `kubectl-gpufed`).
    pub async fn patch_provider(&self, name: &str, patch: &serde_json::Value) -> Result<GpuProvider> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        Api::<GpuProvider>::all(self.client.clone())
            .patch(name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| match Error::not_found(&e) {
                Some(_) => self.read_error(e, "gpuprovider", "gpuproviders.gpufed.io", name, ""),
                None => Error::from_kube(e, &self.server, format!("patching gpuprovider {name}")),
            })
    }

    fn token_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), TOKEN_NAMESPACE)
    }

    /// Creates a bootstrap-token Secret from its manifest; `false` when one of that name
    /// exists already (the caller draws another token).
    pub async fn create_token_secret(&self, manifest: &serde_json::Value) -> Result<bool> {
        let secret: Secret =
            serde_json::from_value(manifest.clone()).map_err(|e| Error::Output(e.to_string()))?;
        let name = secret.metadata.name.clone().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match self.token_secrets().create(&params, &secret).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::from_kube(
                e,
                &self.server,
                format!("creating secret {TOKEN_NAMESPACE}/{name}"),
            )),
        }
    }

    /// Deletes the bootstrap-token Secrets that match the label `selector`; returns the
    /// names deleted (one that vanished meanwhile, e.g. expired, is not counted).
    pub async fn delete_token_secrets(&self, selector: &str) -> Result<Vec<String>> {
        let api = self.token_secrets();
        let params = ListParams::default()
            .labels(selector)
            .fields(&format!("type={TOKEN_SECRET_TYPE}"));
        let secrets = api.list_metadata(&params).await.map_err(|e| {
            Error::from_kube(e, &self.server, format!("listing secrets in {TOKEN_NAMESPACE}"))
        })?;
        let mut deleted = Vec::new();
        for name in secrets.items.into_iter().filter_map(|s| s.metadata.name) {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => deleted.push(name),
                Err(e) if Error::not_found(&e).is_some() => {}
                Err(e) => {
                    return Err(Error::from_kube(
                        e,
                        &self.server,
                        format!("deleting secret {TOKEN_NAMESPACE}/{name}"),
                    ));
                }
            }
        }
        Ok(deleted)
    }
}
