//! What the hub observed of a job's provider and live attempt: the plan's input.

/// What a worker pod of the live attempt is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Not created yet, or not scheduled/started.
    Pending,
    /// Running.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or was killed.
    Failed,
}

/// A worker pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Worker rank.
    pub rank: u32,
    /// Phase.
    pub phase: PodPhase,
    /// When the pod's containers started running (Unix seconds, the earliest), if known.
    pub started: Option<i64>,
    /// When the pod finished (Unix seconds), if it has.
    pub finished: Option<i64>,
    /// Its node is gone or NotReady, or was unreachable past the provider's grace period.
    pub node_lost: bool,
    /// Its node is unreachable (`Ready` condition `Unknown`): waited for, or — with
    /// `node_lost` — counted lost past the provider's grace period.
    pub node_unreachable: bool,
    /// Its `Ready` condition, as its kubelet reports it.
    pub ready: bool,
    /// Its node's IP (`status.hostIP`).
    pub host_ip: Option<String>,
    /// The GPUs its node's device plugin says it holds (sorted; empty until published).
    pub gpu_uuids: Vec<String>,
    /// What it waits for while it does not run, as its scheduler or kubelet says
    /// (`Unschedulable: …`, `ImagePullBackOff: …`); for the record of an attempt that
    /// did not start in time.
    pub waiting: Option<String>,
}

/// What was observed of the job's provider and live attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// No live attempt.
    NoAttempt,
    /// The provider's heartbeat is older than its grace period (since `last_heartbeat`).
    ProviderLost {
        /// Unix seconds of the last heartbeat; billing stops there.
        last_heartbeat: i64,
    },
    /// The provider is within its grace period but did not answer now: wait.
    Unanswered,
    /// The provider's pull-mode agent reports but has not acted on the attempt's
    /// Assignment: wait as for [`Member::Unanswered`], but the start timeout runs (no pod
    /// of the gang exists as far as the hub knows).
    NotTakenUp,
    /// The attempt's pods (possibly fewer than the gang, while dispatching).
    Pods(Vec<PodView>),
    /// The member refused the attempt's objects for good, saying why: a pull-mode agent
    /// reported its own refusal or its API server's 400/422 on the attempt's Assignment
    /// (a push-mode dispatch's refusal reaches [`super::reject_dispatch`] instead).
    Rejected(String),
    /// The member forbade the attempt's objects (a pull-mode agent reported its API
    /// server's 403 that does not pass): ended after the grace period, as
    /// [`super::forbid_dispatch`] ends a push-mode dispatch's.
    Forbidden(String),
}
