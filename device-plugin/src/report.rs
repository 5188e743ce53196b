//! The signed inventory report of this node. Its wire format, signing and verification
//! live in `gpufed_trust::report` (the operator checks reports with the same code); here
//! a report is built from the discovered inventory, and the node key is kept on disk.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
pub use gpufed_trust::report::{
    InventoryReport, ReportError, ReportGpu, SIGNING_CONTEXT, SignedReport, VerifiedReport, sign, verify,
};

use crate::inventory::Inventory;

/// The report of an inventory (no challenge answer).
pub fn of_inventory(node: &str, nonce: &str, issued_at: u64, inv: &Inventory) -> InventoryReport {
    InventoryReport {
        node: node.to_owned(),
        nonce: nonce.to_owned(),
        issued_at,
        driver_version: inv.driver_version.clone(),
        cuda_version: inv.cuda_version.clone(),
        simulated: inv.simulated,
        gpus: inv
            .gpus
            .iter()
            .map(|g| ReportGpu {
                uuid: g.uuid.clone(),
                model: g.name.clone(),
                memory_mib: g.memory_mib,
                compute_capability: g.compute_capability.to_string(),
                serial: g.serial.clone(),
            })
            .collect(),
        challenge: None,
    }
}

/// A node key file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// I/O on the key file.
    #[error("node key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not base64 of 32 bytes.
    #[error("node key {0} is not base64 of a 32-byte ed25519 seed")]
    Malformed(String),
}

/// Loads the node key (base64 of the 32-byte seed), creating it with mode 0600 if missing.
///
/// The key appears at `path` whole or not at all: it is written and synced under a
/// temporary name first, then linked into place (a link, not a rename, so that of two
/// processes creating it at once the second loads the first's key instead of replacing
/// it). An empty file at `path` — what a crash between create and write left before this
/// rule — is taken for a missing key: no report was ever signed with it.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            tracing::warn!(path = %path.display(), "node key file is empty (an interrupted creation): creating the key");
            std::fs::remove_file(path).map_err(io)?;
            create_key(path)
        }
        Ok(text) => {
            let seed: [u8; 32] = B64
                .decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| KeyFileError::Malformed(path.display().to_string()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path),
        Err(e) => Err(io(e)),
    }
}

fn create_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let seed: [u8; 32] = rand::random();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Random, not the pid: every container's pid may be 1, and two plugin pods of one node
    // (a rollout's overlap) share the key's directory.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(B64.encode(seed).as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Some(dir) = dir {
                // The new name is durable only once its directory is.
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "report_tests.rs"]
mod tests;
