//! Errors of the harness.

use std::path::PathBuf;

/// Everything that can go wrong while starting, driving or stopping a federation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes binary is missing from the binary directory.
    #[error(
        "{binary} not found in {dir}: build the control plane with `scripts/build-k8s.sh` \
         (make target `make k8s`) or point GPUFED_K8S_BIN at a directory holding \
         kube-apiserver, kube-scheduler and kube-controller-manager"
    )]
    MissingBinary {
        /// The binary that was looked for.
        binary: String,
        /// The directory searched.
        dir: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Generating certificates or keys failed.
    #[error("PKI generation failed: {0}")]
    Pki(#[from] rcgen::Error),
    /// A process could not be started.
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        /// The component name.
        name: String,
        /// The program path.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A cluster was asked to act after its processes were stopped and released.
    #[error("cluster {name} has been shut down")]
    ShutDown {
        /// The cluster name.
        name: String,
    },
    /// A component exited before it became ready.
    #[error("{name} exited early ({status}); log: {log}")]
    ExitedEarly {
        /// The component name.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
    },
    /// Something did not happen in time.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long was waited.
        seconds: u64,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A kubeconfig could not be read or turned into a client.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A YAML or JSON document could not be (de)serialized.
    #[error("{what}: {message}")]
    Serde {
        /// The document.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The run state file is missing or does not describe a running federation.
    #[error("run state: {0}")]
    State(String),
    /// A simulator command referred to something the simulator does not own.
    #[error("node simulation: {0}")]
    Simulation(String),
}

impl Error {
    /// Wraps an I/O error with what was being done and where.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
