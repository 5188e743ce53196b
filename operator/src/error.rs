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
    /// A member's API server refused a request as malformed or invalid (HTTP 400
    /// BadRequest, 422 Invalid): sending it again gets the same answer, so the caller
    /// reports it instead of retrying.
    #[error("provider {provider}: refused: {message}")]
    Rejected {
        /// The provider.
        provider: String,
        /// The API server's answer.
        message: String,
    },
    /// A member's API server forbade a request (HTTP 403) for lack of a permission or by
    /// an admission policy, not for a passing reason (an exhausted quota, a namespace
    /// being deleted): it heals only when the provider changes what it grants, so the
    /// job controller ends an attempt still forbidden after a grace period.
    #[error("provider {provider}: forbidden: {message}")]
    Forbidden {
        /// The provider.
        provider: String,
        /// The API server's answer.
        message: String,
    },
    /// A pull-mode agent that reports has not acted on an attempt's Assignment (its
    /// current generation): waited for as a silent member is, except that the attempt's
    /// start timeout runs, so an agent that never takes the attempt up does not hold it
    /// and its GPUs for good.
    #[error("provider {provider}: {message}")]
    NotTakenUp {
        /// The provider.
        provider: String,
        /// What the agent has not done.
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
            Error::Member { .. } | Error::NotTakenUp { .. } => "member",
            Error::Rejected { .. } => "member_rejected",
            Error::Forbidden { .. } => "member_forbidden",
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

    /// Wraps a member API server's error, telling refusals that retrying cannot heal
    /// (400, 422: [`Error::Rejected`]) apart from the rest ([`Error::Member`]).
    /// A 403 that is not passing is [`Error::Forbidden`].
    pub fn member_api(provider: &str, e: &kube::Error) -> Self {
        let message = crate::member::error_chain(e);
        let provider = provider.to_owned();
        if is_refusal(e) {
            Error::Rejected { provider, message }
        } else if is_forbidden(e) {
            Error::Forbidden { provider, message }
        } else {
            Error::Member { provider, message }
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

/// Whether a member API server's answer refuses a write as malformed or invalid (HTTP 400
/// BadRequest, 422 Invalid): the same write gets the same answer. The one rule for push
/// mode ([`Error::member_api`]) and the pull-mode agent (its `Rejected` reason).
pub fn is_refusal(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 400 || s.code == 422)
}

/// Whether a member API server's answer forbids a write (HTTP 403) for a reason that does
/// not pass by itself: the caller's identity lacks a permission (RBAC) or an admission
/// policy (Pod Security) refuses the object. Two 403s do pass: a namespace's quota is
/// used up (its pods end, or the operator recreates the quota) and a namespace is being
/// deleted (a new attempt's namespace follows); those are retried as any failure is.
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && forbids_for_good(&s.message))
}

/// Whether a 403's `message` forbids for a reason that does not pass ([`is_forbidden`]).
pub fn forbids_for_good(message: &str) -> bool {
    !message.contains("exceeded quota") && !message.contains("because it is being terminated")
}

/// The API server's answer in an `ApplyFailed` message of a pull-mode agent older than
/// the `Forbidden` reason, when that answer is a 403 that does not pass: such an agent
/// wrote kube's whole error, `ApiError: <message>: Forbidden (Status { .. code: 403 .. })`.
/// Read so, a member that forbids an attempt's objects ends it after the grace period
/// whatever the agent's version, instead of holding its GPUs while the agent retries.
pub fn legacy_forbidden(apply_failed: &str) -> Option<&str> {
    let rest = apply_failed.strip_prefix("ApiError: ")?;
    let (answer, status) = rest.split_once(": Forbidden (")?;
    (status.contains("code: 403") && forbids_for_good(answer)).then_some(answer)
}

/// Result of the operator's fallible steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            Status::failure("Pod \"x\" is invalid: spec.containers[0].name", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_refusals_that_cannot_heal_are_rejections() {
        for (code, reason) in [(422, "Invalid"), (400, "BadRequest")] {
            match Error::member_api("p", &api(code, reason)) {
                Error::Rejected { provider, message } => {
                    assert_eq!(provider, "p");
                    assert!(message.contains("is invalid"), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        for (code, reason) in [
            (409, "Conflict"),
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
        ] {
            assert!(
                matches!(Error::member_api("p", &api(code, reason)), Error::Member { .. }),
                "{code}"
            );
        }
    }

    fn status(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, "Forbidden").with_code(code).boxed())
    }

    #[test]
    fn a_missing_permission_is_forbidden_but_a_full_quota_or_a_closing_namespace_is_not() {
        let rbac = "secrets \"gpufed-checkpoint\" is forbidden: User \"system:serviceaccount:gpufed:hub\" \
                    cannot patch resource \"secrets\" in API group \"\" in the namespace \"t-x\"";
        let psa = "pods \"w0\" is forbidden: violates PodSecurity \"restricted:latest\"";
        for message in [rbac, psa] {
            match Error::member_api("p", &status(403, message)) {
                Error::Forbidden { provider, message: m } => {
                    assert_eq!(provider, "p");
                    assert!(m.contains(message), "the API server's answer: {m}");
                }
                other => panic!("{message}: {other:?}"),
            }
        }
        for passing in [
            "pods \"w0\" is forbidden: exceeded quota: gpufed, requested: nvidia.com/gpu=1",
            "pods \"w0\" is forbidden: unable to create new content in namespace t-x because it is being terminated",
        ] {
            assert!(
                matches!(
                    Error::member_api("p", &status(403, passing)),
                    Error::Member { .. }
                ),
                "{passing}"
            );
        }
        assert_eq!(
            Error::member_api("p", &status(403, rbac)).category(),
            "member_forbidden"
        );
    }
}
