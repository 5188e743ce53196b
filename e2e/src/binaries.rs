//! Locating the Kubernetes and etcd binaries.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The Kubernetes version the harness is built for.
pub const K8S_VERSION: &str = "1.20.2";

/// Paths of the binaries one control plane needs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `kube-apiserver`.
    pub apiserver: PathBuf,
    /// `kube-scheduler`.
    pub scheduler: PathBuf,
    /// `kube-controller-manager`.
    pub controller_manager: PathBuf,
    /// `etcd` (Debian's `etcd-server`).
    pub etcd: PathBuf,
}

/// The directory searched for the Kubernetes binaries: `$GPUFED_K8S_BIN`, else
/// `${GPUFED_CACHE:-$HOME/.cache/gpufed}/k8s-1.20.2/bin`.
pub fn k8s_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GPUFED_K8S_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    cache_root().join(format!("k8s-{K8S_VERSION}/bin"))
}

/// `${GPUFED_CACHE:-$HOME/.cache/gpufed}`: where the scripts cache what they build.
pub fn cache_root() -> PathBuf {
    std::env::var_os("GPUFED_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache/gpufed")
        })
}

fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            binary: name.to_owned(),
            dir: dir.to_owned(),
        })
    }
}

impl Binaries {
    /// Finds all binaries, failing with a message that says how to build them.
    ///
    /// etcd is looked for in the Kubernetes binary directory first, then at `$GPUFED_ETCD`,
    /// then `/usr/bin/etcd`.
    pub fn locate() -> Result<Self> {
        let dir = k8s_bin_dir();
        let etcd = std::env::var_os("GPUFED_ETCD")
            .map(PathBuf::from)
            .into_iter()
            .chain([dir.join("etcd"), PathBuf::from("/usr/bin/etcd")])
            .find(|p| p.is_file())
            .ok_or_else(|| Error::MissingBinary {
                binary: "etcd".into(),
                dir: PathBuf::from("/usr/bin"),
            })?;
        Ok(Self {
            apiserver: find(&dir, "kube-apiserver")?,
            scheduler: find(&dir, "kube-scheduler")?,
            controller_manager: find(&dir, "kube-controller-manager")?,
            etcd,
        })
    }
}
