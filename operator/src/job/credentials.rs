//! I/O: a job's checkpoint credentials ([`super::build::credentials`]). The tenant's
//! Secret is read from the hub while the job waits for placement and again for each
//! attempt's objects, so a rotated Secret reaches the next attempt. The operator reads it
//! only where the tenant let it (docs/api.md#checkpoint-credentials): no permission is a
//! clear wait, never a crash loop. The copy an ended attempt wrote in a member is removed
//! with the attempt.

use std::collections::BTreeMap;

use gpufed_api::ComputeJob;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use super::build::credentials::{MEMBER_SECRET, attempt_of, secret_name};
use crate::error::{Error, Result};

/// What reading a job's credentials found.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// The job names no Secret.
    NotNeeded,
    /// The Secret's data.
    Data(BTreeMap<String, ByteString>),
    /// Why they cannot be used until the tenant acts (the job says so and waits).
    Unavailable(String),
}

/// Pure: what a GET of the tenant's Secret `ns/name` means for the job.
pub fn judge(ns: &str, name: &str, got: std::result::Result<Secret, kube::Error>) -> Result<Read> {
    let field = "spec.checkpoint.credentialsSecret";
    match got {
        Ok(s) => match s.type_.as_deref() {
            None | Some("Opaque") => Ok(Read::Data(s.data.unwrap_or_default())),
            // A service account token or a bootstrap token copied to a provider would hand
            // the provider a credential of the hub itself.
            Some(other) => Ok(Read::Unavailable(format!(
                "Secret {ns}/{name} ({field}) is of type {other}: only Opaque Secrets are copied to providers"
            ))),
        },
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Read::Unavailable(format!(
            "Secret {ns}/{name} ({field}) does not exist"
        ))),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(Read::Unavailable(format!(
            "the operator may not read Secret {ns}/{name} ({field}): let it get that Secret in {ns} \
             (a Role with resourceNames [{name}] bound to the operator's ServiceAccount, see \
             docs/api.md#checkpoint-credentials)"
        ))),
        // The hub away or overloaded heals by itself: retried with backoff.
        Err(e) => Err(Error::hub("checkpoint credentials Secret", e)),
    }
}

/// Reads `job`'s checkpoint credentials from the hub.
pub async fn read(hub: &Client, job: &ComputeJob) -> Result<Read> {
    let Some(name) = secret_name(&job.spec) else {
        return Ok(Read::NotNeeded);
    };
    let ns = job.namespace().unwrap_or_default();
    let got = Api::<Secret>::namespaced(hub.clone(), &ns).get(name).await;
    judge(&ns, name, got)
}

/// Removes the member copy in `ns` if an attempt up to `attempt` wrote it (a later live
/// attempt's copy stays). Idempotent; the copy is deleted only as it was read.
pub async fn remove_copy(member: &Client, ns: &str, attempt: u32) -> std::result::Result<(), kube::Error> {
    let api = Api::<Secret>::namespaced(member.clone(), ns);
    let Some(copy) = api.get_opt(MEMBER_SECRET).await? else {
        return Ok(());
    };
    if attempt_of(&copy).is_none_or(|a| a > attempt) {
        return Ok(());
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: copy.uid(),
            resource_version: copy.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(MEMBER_SECRET, &dp).await {
        Ok(_) => Ok(()),
        // Gone, or rewritten by a later attempt meanwhile: either way not this one's.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("m", "r").with_code(code).boxed())
    }

    fn secret(type_: Option<&str>) -> Secret {
        Secret {
            type_: type_.map(str::to_owned),
            data: Some(BTreeMap::from([("K".to_owned(), ByteString(b"v".to_vec()))])),
            ..Default::default()
        }
    }

    #[test]
    fn an_opaque_secret_is_copied() {
        for t in [None, Some("Opaque")] {
            let Read::Data(d) = judge("team", "s3", Ok(secret(t))).unwrap() else {
                panic!("not data")
            };
            assert_eq!(d["K"].0, b"v");
        }
    }

    #[test]
    fn missing_forbidden_or_a_token_waits_naming_the_field() {
        let cases = [
            (
                Ok(secret(Some("kubernetes.io/service-account-token"))),
                "only Opaque",
            ),
            (Err(api_error(404)), "does not exist"),
            (Err(api_error(403)), "may not read"),
        ];
        for (got, says) in cases {
            let Read::Unavailable(m) = judge("team", "s3", got).unwrap() else {
                panic!("not unavailable")
            };
            assert!(m.contains(says) && m.contains("team/s3"), "{m}");
            assert!(m.contains("spec.checkpoint.credentialsSecret"), "{m}");
        }
    }

    #[test]
    fn a_hub_error_is_retried_not_a_wait() {
        assert!(judge("team", "s3", Err(api_error(500))).is_err());
    }
}
