//! Errors of the operator's controllers, with a category for metrics and Events.

/// What can go wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the hub's API server failed.
    #[error("hub API: {0}")]
    Hub(#[source] kube::Error),
    /// A member cluster could not be reached or refused a request.
    #[error("provider {provider}: {message}")]
    Member {
        /// The provider.
        provider: String,
        /// What failed.
        message: String,
    },
    /// A write lost a race with another writer (stale resourceVersion): a stale leader
    /// or a concurrent reconcile. Retried from fresh state.
    #[error("conflict writing {0}: retrying from fresh state")]
    Conflict(String),
    /// The object cannot be acted on until its spec changes.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Deletion waits for something to finish first (the finalizer stays).
    #[error("waiting: {0}")]
    Waiting(String),
    /// A value could not be (de)serialized.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Low-cardinality label for metrics (never an object name).
    pub fn category(&self) -> &'static str {
        match self {
            Error::Hub(_) => "hub_api",
            Error::Member { .. } => "member",
            Error::Conflict(_) => "conflict",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Finalizer(_) => "finalizer",
            Error::Waiting(_) => "waiting",
            Error::Json(_) => "serialization",
        }
    }

    /// Wraps a hub error, telling conflicts (409) apart.
    pub fn hub(what: &str, e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 409 => Error::Conflict(what.to_owned()),
            _ => Error::Hub(e),
        }
    }

    /// Wraps a member-cluster error.
    pub fn member(provider: &str, e: impl std::fmt::Display) -> Self {
        Error::Member {
            provider: provider.to_owned(),
            message: e.to_string(),
        }
    }
}

/// Result of the operator's fallible steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
