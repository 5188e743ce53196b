//! Journal stores that need no Kubernetes: a file (tools, tests) and memory (tests).
//! The operator keeps its journal in the hub's API server instead.

use std::path::PathBuf;

use gpufed_settlement::Journal;

use crate::error::ChainError;
use crate::settler::JournalStore;

/// A JSON file, replaced atomically (write, fsync, rename) on every save.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    /// Saves so far (tests count them).
    pub saves: u64,
}

impl FileStore {
    /// A store at `path` (created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            saves: 0,
        }
    }
}

impl JournalStore for FileStore {
    async fn load(&mut self) -> Result<Option<Journal>, ChainError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ChainError::Store(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ChainError::Store(format!("{}: {e}", self.path.display()))),
        }
    }

    async fn save(&mut self, journal: &Journal) -> Result<(), ChainError> {
        let bytes = serde_json::to_vec(journal).map_err(|e| ChainError::Store(e.to_string()))?;
        let tmp = self.path.with_extension("tmp");
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| ChainError::Store(e.to_string()))?
        .map_err(|e| ChainError::Store(format!("{}: {e}", self.path.display())))?;
        self.saves += 1;
        Ok(())
    }
}

/// In memory (shared by clones, so a "restarted" settler sees what the crashed one saved).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(std::sync::Arc<std::sync::Mutex<Option<Journal>>>);

impl JournalStore for MemoryStore {
    async fn load(&mut self) -> Result<Option<Journal>, ChainError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| ChainError::Store("poisoned".into()))?
            .clone())
    }

    async fn save(&mut self, journal: &Journal) -> Result<(), ChainError> {
        *self.0.lock().map_err(|_| ChainError::Store("poisoned".into()))? = Some(journal.clone());
        Ok(())
    }
}
