//! The GPUs waiting for a reset, kept in a small JSON file on the node so that a plugin
//! restart (an OOM kill, a DaemonSet rollout, a crash) does not serve them healthy again:
//! every GPU starts healthy, and a fault that needs a reset is never reported twice (an
//! XID event fires once; only a DBE still shows in the volatile ECC count at start).
//!
//! The file names the boot it was written in (`/proc/sys/kernel/random/boot_id`): a
//! reboot resets every GPU, so a file of another boot is discarded. It is rewritten (a
//! temporary file, then a rename: a crash never leaves half a file) each time a GPU starts
//! or stops waiting; a failed write is logged and the plugin goes on. A wait saved with a
//! volatile uncorrected ECC count above zero keeps it: a GPU reset while the plugin was
//! down (`nvidia-smi -r` wants NVML clients stopped) reads lower at the next start, which
//! ends the wait. A provider who resets a GPU without rebooting, when the plugin cannot see
//! the reset (no ECC count saved, or no trace in the counters), deletes the GPU's entry
//! (or the file) and restarts the plugin's pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::health::{HealthBook, Wait};

/// The file's name inside `--state-dir`.
pub const FILE_NAME: &str = "reset-waits.json";

/// Where Linux gives the current boot's id.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// One GPU's saved wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    /// The fault that needs the reset.
    pub cause: String,
    /// When the wait began (Unix seconds), for the people reading the file and the logs.
    pub since_unix: u64,
    /// Whether the GPU answering NVML again ends the wait (it fell off the bus).
    #[serde(default)]
    pub answering_ends: bool,
    /// The volatile uncorrected ECC count when the wait was saved, if above zero: a
    /// restarted plugin that reads it lower has seen the reset (one done while it was
    /// down). Absent in files of older plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_total: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    boot_id: String,
    waiting: BTreeMap<String, Saved>,
}

/// The saved waits of `text` if it was written in boot `boot_id`; `Ok(None)` for another
/// boot (the GPUs were reset by the reboot).
pub fn parse(text: &str, boot_id: &str) -> Result<Option<BTreeMap<String, Saved>>, serde_json::Error> {
    let body: Body = serde_json::from_str(text)?;
    Ok((body.boot_id.trim() == boot_id.trim()).then_some(body.waiting))
}

/// The file's text for `waiting` in boot `boot_id`.
pub fn render(boot_id: &str, waiting: &BTreeMap<String, Saved>) -> String {
    let body = Body {
        boot_id: boot_id.trim().to_owned(),
        waiting: waiting.clone(),
    };
    // A map of strings and numbers always serializes.
    serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"
}

/// The saved waits, kept in step with a [`HealthBook`].
#[derive(Debug, Clone, Default)]
pub struct ResetFile {
    /// The file; `None`: in memory only.
    path: Option<PathBuf>,
    boot_id: String,
    saved: BTreeMap<String, Saved>,
}

impl ResetFile {
    /// Kept in memory only (a restart forgets the waits).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The file at `path`, for the running boot. Without a readable boot id nothing tells
    /// a reboot from a restart, so the waits are kept in memory only (logged).
    pub fn open(path: PathBuf) -> Self {
        match std::fs::read_to_string(BOOT_ID) {
            Ok(id) => Self::for_boot(Some(path), id.trim().to_owned()),
            Err(e) => {
                tracing::warn!(file = %BOOT_ID, error = %e,
                    "no boot id: GPUs waiting for a reset are not kept across plugin restarts");
                Self::in_memory()
            }
        }
    }

    /// The file at `path` (`None`: in memory) for boot `boot_id`.
    pub fn for_boot(path: Option<PathBuf>, boot_id: String) -> Self {
        Self {
            path,
            boot_id,
            saved: BTreeMap::new(),
        }
    }

    /// Reads the file and puts its waits back into `book` (each logged); returns the GPUs
    /// restored. A missing file, another boot's or an unreadable one restores nothing.
    /// Entries of GPUs the book does not know (left out of discovery this time) are kept
    /// in the file.
    pub fn load(&mut self, book: &mut HealthBook) -> Vec<String> {
        let Some(path) = &self.path else { return Vec::new() };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the GPUs waiting for a reset");
                return Vec::new();
            }
        };
        match parse(&text, &self.boot_id) {
            Ok(Some(saved)) => self.saved = saved,
            Ok(None) => {
                tracing::info!(file = %path.display(), "GPUs waiting for a reset were saved before a reboot: discarded (a reboot resets them)");
                return Vec::new();
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "unreadable file of GPUs waiting for a reset: ignored");
                return Vec::new();
            }
        }
        self.restore(book)
    }

    /// Puts the saved waits into `book`; returns the GPUs restored.
    fn restore(&self, book: &mut HealthBook) -> Vec<String> {
        let mut restored = Vec::new();
        for (uuid, s) in &self.saved {
            let wait = Wait {
                cause: s.cause.clone(),
                answering_ends: s.answering_ends,
                ecc_total: s.ecc_total,
            };
            if book.restore_wait(uuid, &wait) {
                tracing::warn!(gpu = %uuid, cause = %s.cause, since_unix = s.since_unix,
                    "GPU still waits for a reset seen before the plugin restarted: unhealthy until reset evidence");
                restored.push(uuid.clone());
            }
        }
        restored
    }

    /// What the file should hold after `book`'s changes (`None`: unchanged). A GPU keeps
    /// the time its wait began; GPUs the book does not know keep their entries.
    pub fn next(&self, book: &HealthBook, now_unix: u64) -> Option<BTreeMap<String, Saved>> {
        let mut next: BTreeMap<String, Saved> = self
            .saved
            .iter()
            .filter(|(u, _)| book.health(u).is_none())
            .map(|(u, s)| (u.clone(), s.clone()))
            .collect();
        for (uuid, w) in book.waits() {
            let since_unix = self.saved.get(&uuid).map_or(now_unix, |s| s.since_unix);
            next.insert(
                uuid,
                Saved {
                    cause: w.cause,
                    since_unix,
                    answering_ends: w.answering_ends,
                    ecc_total: w.ecc_total,
                },
            );
        }
        (next != self.saved).then_some(next)
    }

    /// Brings the file in step with `book`, writing it when a wait began or ended.
    pub fn sync(&mut self, book: &HealthBook, now_unix: u64) {
        let Some(next) = self.next(book, now_unix) else {
            return;
        };
        self.saved = next;
        if let Some(path) = &self.path
            && let Err(e) = write_atomically(path, &render(&self.boot_id, &self.saved))
        {
            // Serving goes on: only a restart before the next successful write loses it.
            tracing::error!(file = %path.display(), error = %e,
                "cannot save the GPUs waiting for a reset: a plugin restart would serve them healthy");
        }
    }
}

/// Writes `text` to a temporary file next to `path`, syncs it, then renames it over
/// `path`: a reader sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[path = "resetfile_tests.rs"]
mod tests;
