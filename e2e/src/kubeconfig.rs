//! Kubeconfig files for the test clusters, and clients built from kubeconfig files.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::CertFiles;
use crate::{Error, Result};

fn b64_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(Error::io("reading", path))?;
    Ok(STANDARD.encode(bytes))
}

/// Writes a kubeconfig for `server` with the CA and client certificate embedded, so the file
/// can be copied (or put into a Secret) on its own.
pub fn write_kubeconfig(
    path: &Path,
    cluster: &str,
    server: &str,
    ca_cert: &Path,
    client: &CertFiles,
    user: &str,
) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    \
         client-key-data: {key}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {cluster}\n",
        ca = b64_file(ca_cert)?,
        cert = b64_file(&client.cert)?,
        key = b64_file(&client.key)?,
    );
    std::fs::write(path, text).map_err(Error::io("writing", path))
}

/// Builds a client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let err = |message: String| Error::Kubeconfig {
        path: path.to_owned(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}
