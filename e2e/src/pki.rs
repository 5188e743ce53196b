//! Self-signed PKI for one test cluster: a CA, the API server's serving certificate
//! (SAN 127.0.0.1), client certificates for the admin, the scheduler and the
//! controller-manager, and a service-account signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{Error, Result};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
}

/// All PKI files of one cluster.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    /// The cluster CA certificate (also the client CA of the API server).
    pub ca_cert: PathBuf,
    /// The CA private key (lets the controller-manager sign CSRs).
    pub ca_key: PathBuf,
    /// The API server's serving certificate.
    pub serving: CertFiles,
    /// `system:masters` client certificate used in the admin kubeconfig.
    pub admin: CertFiles,
    /// Client certificate of `system:kube-scheduler`.
    pub scheduler: CertFiles,
    /// Client certificate of `system:kube-controller-manager`.
    pub controller_manager: CertFiles,
    /// Service-account signing key (private).
    pub sa_key: PathBuf,
    /// Service-account verification key (public).
    pub sa_pub: PathBuf,
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io("writing", path))
}

fn leaf(
    dir: &Path,
    stem: &str,
    common_name: &str,
    organization: Option<&str>,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    ca: &Issuer<'_, KeyPair>,
) -> Result<CertFiles> {
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        params.distinguished_name.push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    let files = CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    write(&files.cert, &cert.pem())?;
    write(&files.key, &key.serialize_pem())?;
    Ok(files)
}

impl ClusterPki {
    /// Generates a fresh PKI for the cluster `cluster` into `dir` (created if needed).
    pub fn generate(dir: &Path, cluster: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("gpufed-e2e-{cluster}-ca"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        write(&ca_cert_path, &ca_cert.pem())?;
        write(&ca_key_path, &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_sans = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
        ]
        .map(String::from)
        .to_vec();
        let serving = leaf(
            dir,
            "apiserver",
            "kube-apiserver",
            None,
            serving_sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        )?;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let admin = leaf(
            dir,
            "admin",
            "gpufed-e2e-admin",
            Some("system:masters"),
            vec![],
            client.clone(),
            &issuer,
        )?;
        let scheduler = leaf(
            dir,
            "scheduler",
            "system:kube-scheduler",
            None,
            vec![],
            client.clone(),
            &issuer,
        )?;
        let controller_manager = leaf(
            dir,
            "controller-manager",
            "system:kube-controller-manager",
            None,
            vec![],
            client,
            &issuer,
        )?;

        let sa = KeyPair::generate()?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        write(&sa_key, &sa.serialize_pem())?;
        write(&sa_pub, &sa.public_key_pem())?;
        Ok(Self {
            ca_cert: ca_cert_path,
            ca_key: ca_key_path,
            serving,
            admin,
            scheduler,
            controller_manager,
            sa_key,
            sa_pub,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn generates_all_files_as_pem() {
        let dir = std::env::temp_dir().join(format!("gpufed-pki-test-{}", std::process::id()));
        let pki = ClusterPki::generate(&dir, "t").unwrap();
        for f in [&pki.ca_cert, &pki.serving.cert, &pki.admin.cert] {
            assert!(
                std::fs::read_to_string(f)
                    .unwrap()
                    .starts_with("-----BEGIN CERTIFICATE-----")
            );
        }
        assert!(
            std::fs::read_to_string(&pki.sa_pub)
                .unwrap()
                .contains("PUBLIC KEY")
        );
        assert!(
            std::fs::read_to_string(&pki.admin.key)
                .unwrap()
                .contains("PRIVATE KEY")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
