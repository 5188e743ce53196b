//! Run directories and their `state.json`: what a run started, and reaping runs whose owner died.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FederationSpec;
use crate::process::ProcessRecord;
use crate::{Error, Result};

/// Name of the run state file in a run directory.
pub const STATE_FILE: &str = "state.json";

/// Where runs live: `$GPUFED_RUN`, default `/tmp/gpufed-e2e`.
pub fn run_root() -> PathBuf {
    std::env::var_os("GPUFED_RUN")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/tmp/gpufed-e2e"), PathBuf::from)
}

/// One cluster in the run state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// API server URL.
    pub server: String,
    /// Admin kubeconfig path.
    pub kubeconfig: PathBuf,
}

/// What a run directory's `state.json` records: enough for `down` to stop exactly these
/// processes and for `status` to report on them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// The process that owns the federation (the test or the `serve` supervisor).
    pub owner: Option<ProcessRecord>,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Clusters, hub first.
    pub clusters: Vec<ClusterInfo>,
    /// Every etcd and Kubernetes process of the run.
    pub processes: Vec<ProcessRecord>,
    /// Seconds from start until every API server was ready and simulators were running.
    pub ready_seconds: f64,
    /// What was started.
    pub spec: FederationSpec,
}

impl RunState {
    /// Reads `dir/state.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
        serde_json::from_str(&text).map_err(|e| Error::Serde {
            what: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Writes `run_dir/state.json` atomically.
    pub fn write(&self) -> Result<()> {
        let path = self.run_dir.join(STATE_FILE);
        let tmp = self.run_dir.join(".state.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Serde {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(Error::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("renaming", &path))
    }
}

/// Stops the processes of earlier runs under `root` whose owner died without cleaning up
/// (e.g. a test binary killed by a timeout); returns the names of what was stopped. Runs
/// whose owner is alive (another test, a `gpufed-e2e up` supervisor) are left alone.
pub fn reap_orphaned_runs(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut stopped = Vec::new();
    for dir in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let Ok(state) = RunState::read(&dir) else { continue };
        if state.owner.as_ref().is_some_and(ProcessRecord::is_alive) {
            continue;
        }
        let names = crate::process::stop_records(&state.processes, Duration::from_secs(10));
        if !names.is_empty() {
            tracing::warn!(run_dir = %dir.display(), ?names, "stopped processes of an orphaned run");
        }
        stopped.extend(names);
    }
    stopped
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::process::ManagedProcess;

    #[test]
    fn processes_of_a_run_whose_owner_died_are_stopped() {
        let root = std::env::temp_dir().join(format!("gpufed-reap-{}", std::process::id()));
        let dir = root.join("orphan");
        std::fs::create_dir_all(&dir).unwrap();
        let mut sleeper = ManagedProcess::spawn(
            "sleeper",
            Path::new("/bin/sleep"),
            &["30".into()],
            &dir.join("log"),
        )
        .unwrap();
        let mut dead_owner = crate::process::record_of(std::process::id(), "owner").unwrap();
        dead_owner.start_ticks += 1; // not this process any more: its owner is gone
        let state = RunState {
            owner: Some(dead_owner),
            run_dir: dir.clone(),
            clusters: Vec::new(),
            processes: vec![sleeper.record().clone()],
            ready_seconds: 0.0,
            spec: FederationSpec::new("orphan"),
        };
        state.write().unwrap();
        assert_eq!(reap_orphaned_runs(&root), vec!["sleeper".to_owned()]);
        assert!(!sleeper.record().is_alive());
        sleeper.stop(Duration::from_secs(1)); // reap the zombie
        std::fs::remove_dir_all(&root).unwrap();
    }
}
