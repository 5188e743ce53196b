//! Errors the plugin reports; each is one line a user can act on, and every one ends the
//! process with a non-zero exit code.

/// Result type of the plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("{kind} {}{name} not found", scope(.namespace))]
    NotFound {
        /// Lower-case kind, e.g. `computejob`.
        kind: &'static str,
        /// Namespace searched (empty for a cluster-scoped kind).
        namespace: String,
        /// Name asked for.
        name: String,
    },
    /// No answer from the API server (connection refused, DNS, TLS, timeout).
    #[error("cannot reach the Kubernetes API server at {server}: {message}")]
    Unreachable {
        /// The server URL from the kubeconfig.
        server: String,
        /// The underlying cause.
        message: String,
    },
    /// A read while following a job, rollout or drain had no answer in time (a hung
    /// connection); retried like [`Error::Unreachable`].
    #[error("the Kubernetes API server did not answer within {seconds}s")]
    NoAnswer {
        /// How long the read waited.
        seconds: u64,
    },
    /// The API server does not serve the gpufed resources.
    #[error(
        "the API server at {server} does not serve {resource}: are the gpufed CRDs installed? (kubectl apply -f crds/)"
    )]
    CrdsMissing {
        /// The server URL.
        server: String,
        /// e.g. `computejobs.gpufed.io`.
        resource: &'static str,
    },
    /// The API server refused a request.
    #[error("{what}: {message}")]
    Api {
        /// What was attempted, e.g. `applying computejob team/x`.
        what: String,
        /// The server's message.
        message: String,
        /// The HTTP status code, when the server answered with one: waits retry a 5xx or
        /// 429 ([`Error::is_transient`]) rather than end on it.
        code: Option<u16>,
    },
    /// A command-line flag has a value the API would refuse.
    #[error("invalid {flag}: {message}")]
    Flag {
        /// The flag, e.g. `--min-memory`.
        flag: String,
        /// What is wrong with it.
        message: String,
    },
    /// `provider token`: bootstrap tokens are for pull-mode providers only.
    #[error(
        "gpuprovider {provider} has spec.mode {mode}: bootstrap tokens are for pull-mode agents (spec.mode: Pull)"
    )]
    NotPullMode {
        /// The provider's name.
        provider: String,
        /// Its `spec.mode`.
        mode: String,
    },
    /// The kubeconfig cannot be read or has no usable context.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// Output could not be written or encoded.
    #[error("output: {0}")]
    Output(String),
    /// `submit --wait`: the job ended unsuccessfully.
    #[error("computejob {job} failed: {message}")]
    JobFailed {
        /// `namespace/name`.
        job: String,
        /// The Ready or Failed condition's message.
        message: String,
    },
    /// `bill --verify`: the operator namespace holds no settlement journal.
    #[error("no settlement journal in {namespace}: is settlement enabled (--solana-rpc on the operator)?")]
    NoJournal {
        /// The operator namespace searched.
        namespace: String,
    },
    /// `bill --verify`: the Solana RPC node failed or could not be reached.
    #[error("Solana RPC at {url}: {message}")]
    Chain {
        /// The `--solana-rpc` URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// `bill --verify`: settled records do not match the chain (the report says which).
    #[error("{failed} of {settled} settled usage records of computejob {job} failed verification on chain")]
    VerificationFailed {
        /// `namespace/name`.
        job: String,
        /// Records that failed.
        failed: u64,
        /// Settled records checked.
        settled: u64,
    },
    /// `rollout status`: the operator reports the service stuck (`Stalled=True`).
    #[error("computeservice {service} rollout is stuck ({reason}): {message}")]
    RolloutStuck {
        /// `namespace/name`.
        service: String,
        /// The `Stalled` reason.
        reason: String,
        /// The `Stalled` message.
        message: String,
    },
    /// `rollout status --timeout`: the rollout had not ended at the deadline.
    #[error("gave up waiting for computeservice {service} after {seconds}s: {last}")]
    RolloutTimeout {
        /// `namespace/name`.
        service: String,
        /// The timeout.
        seconds: u64,
        /// The last state seen.
        last: String,
    },
    /// `provider drain --timeout`: work still ran on the provider at the deadline.
    #[error(
        "gave up waiting for gpuprovider {provider} to drain after {seconds}s (the drain goes on): {last}"
    )]
    DrainTimeout {
        /// The provider.
        provider: String,
        /// The timeout.
        seconds: u64,
        /// The last state seen.
        last: String,
    },
    /// `provider drain`: `spec.drain` was unset while waiting.
    #[error("gpuprovider {provider} is no longer draining (spec.drain was set to false)")]
    DrainCancelled {
        /// The provider.
        provider: String,
    },
    /// `rollout history --revision` / `rollout undo`: no such revision, or none to go
    /// back to.
    #[error(transparent)]
    Revision(#[from] crate::history::PickError),

    /// `rollout pause|resume`: the service already is (or is not) paused.
    #[error("computeservice {service} is {}", if *.paused { "already paused" } else { "not paused" })]
    PauseUnchanged {
        /// `namespace/name`.
        service: String,
        /// Whether it is paused.
        paused: bool,
    },

    /// `rollout undo`: the service kept changing while it was patched.
    #[error(
        "computeservice {service} changed {tries} times while rolling back; nothing was changed, run it again"
    )]
    UndoConflict {
        /// `namespace/name`.
        service: String,
        /// Attempts made.
        tries: u32,
    },

    /// `submit --wait`: the job, seen before, was gone at the next read: its
    /// `ttlSecondsAfterFinished` deleted it as soon as it finished.
    #[error(
        "computejob {job} was deleted by its ttlSecondsAfterFinished ({ttl}s) before its outcome was read (last phase {phase})"
    )]
    DeletedByTtl {
        /// `namespace/name`.
        job: String,
        /// Its `spec.ttlSecondsAfterFinished`.
        ttl: u32,
        /// The last phase seen.
        phase: String,
    },
    /// `submit --wait --timeout`: the job was still running at the deadline.
    #[error("gave up waiting for computejob {job} after {seconds}s (phase {phase})")]
    WaitTimeout {
        /// `namespace/name`.
        job: String,
        /// The timeout.
        seconds: u64,
        /// The last phase seen.
        phase: String,
    },
}

/// `namespace/`, or nothing for a cluster-scoped object.
fn scope(namespace: &str) -> String {
    if namespace.is_empty() {
        String::new()
    } else {
        format!("{namespace}/")
    }
}

/// The innermost cause of an error, e.g. `Connection refused (os error 111)`, prefixed by
/// the outermost message when they differ.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let (outer, inner) = (e.to_string(), cause.to_string());
    if outer == inner || outer.contains(&inner) {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}

impl Error {
    /// Classifies a client error of a request that is about `what`: refusals by the
    /// server become [`Error::Api`], everything else [`Error::Unreachable`].
    pub fn from_kube(e: kube::Error, server: &str, what: impl Into<String>) -> Self {
        match e {
            kube::Error::Api(status) => Error::Api {
                what: what.into(),
                code: Some(status.code),
                message: if status.message.is_empty() {
                    format!("HTTP {} {}", status.code, status.reason)
                } else {
                    status.message
                },
            },
            kube::Error::SerdeError(err) => Error::Api {
                what: what.into(),
                message: format!("unexpected response: {err}"),
                code: None,
            },
            other => Error::Unreachable {
                server: server.to_owned(),
                message: root_cause(&other),
            },
        }
    }

    /// Whether a read that failed so may succeed when tried again: the hub did not answer,
    /// or answered that it is overloaded or failing (HTTP 5xx, 429 Too Many Requests), as
    /// an API server does while it restarts or behind a busy load balancer. A refusal
    /// (4xx) stays one however often it is asked.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::NoAnswer { .. } => true,
            Error::Api { code: Some(code), .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }

    /// A 404 on a list or get: `None` if the error is something else; the CRDs are missing
    /// when the server names no object in its answer.
    pub fn not_found(e: &kube::Error) -> Option<NotFoundKind> {
        match e {
            // A path nobody serves (CRD not installed) answers a plain-text 404 that the
            // client wraps without a reason: the code decides.
            kube::Error::Api(s) if s.code == 404 || s.is_not_found() => {
                let names_object = s.details.as_ref().is_some_and(|d| !d.name.is_empty());
                Some(if names_object {
                    NotFoundKind::Object
                } else {
                    NotFoundKind::Resource
                })
            }
            _ => None,
        }
    }
}

/// What a 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFoundKind {
    /// The named object does not exist.
    Object,
    /// The resource type itself is unknown to the server.
    Resource,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, name: Option<&str>) -> kube::Error {
        let mut s = kube::core::Status::failure("nope", reason).with_code(code);
        if let Some(name) = name {
            s = s.with_details(serde_json::from_value(serde_json::json!({ "name": name })).unwrap());
        }
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn not_found_tells_objects_from_resources() {
        assert_eq!(
            Error::not_found(&status(404, "NotFound", Some("x"))),
            Some(NotFoundKind::Object)
        );
        assert_eq!(
            Error::not_found(&status(404, "NotFound", None)),
            Some(NotFoundKind::Resource)
        );
        assert_eq!(Error::not_found(&status(403, "Forbidden", None)), None);
        // What kube-client makes of the API server's plain-text "404 page not found".
        assert_eq!(
            Error::not_found(&status(404, "Failed to parse error data", None)),
            Some(NotFoundKind::Resource)
        );
    }

    #[test]
    fn server_failures_are_transient_refusals_are_not() {
        let api = |code| Error::from_kube(status(code, "x", None), "https://h", "reading");
        for code in [500, 502, 503, 504, 429] {
            assert!(api(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 409, 422] {
            assert!(!api(code).is_transient(), "{code}");
        }
        let away = Error::Unreachable {
            server: "https://h".into(),
            message: "refused".into(),
        };
        assert!(away.is_transient());
        assert!(!Error::Output("x".into()).is_transient());
    }

    #[test]
    fn messages_name_what_failed() {
        let e = Error::from_kube(status(403, "Forbidden", None), "https://h", "listing jobs");
        assert_eq!(e.to_string(), "listing jobs: nope");
        let nf = Error::NotFound {
            kind: "computejob",
            namespace: "team".into(),
            name: "x".into(),
        };
        assert_eq!(nf.to_string(), "computejob team/x not found");
        let cluster_scoped = Error::NotFound {
            kind: "gpuprovider",
            namespace: String::new(),
            name: "p".into(),
        };
        assert_eq!(cluster_scoped.to_string(), "gpuprovider p not found");
    }
}
