//! Pure: whether a service's spec can be acted on. The CEL rules (which API servers
//! before 1.25 drop) and the replica job's own checks, as the job controller would make
//! them, so that no replica is created only to wait refused.
//!
//! While paused, replicas are kept with the template in effect (the latest revision), not
//! the spec's: a held template that is invalid is reported, but stops nothing until the
//! service resumes; the template in effect is what must be valid for replacements.

use gpufed_api::ComputeService;
use gpufed_api::check;
use gpufed_api::job::ComputeJobSpec;
use kube::ResourceExt;

use super::plan::Paused;

/// Reason of a spec the operator refuses.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// A refusal: the `Stalled` reason and its message, naming the field.
pub type Refusal = (&'static str, String);

/// What is wrong with a service's spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checked {
    /// Nothing is created or retired while this holds: a name no hub Service or label can
    /// carry, an invalid rollout or disruption budget, or a template — the spec's, or while
    /// paused the one in effect — no replica can be built from.
    pub blocking: Option<Refusal>,
    /// Paused only: the spec's held template is invalid. Replicas are still kept with the
    /// template in effect; the service says so (`Stalled`) until the spec is fixed.
    pub held: Option<Refusal>,
}

/// Service fields that act at once, paused or not: no part of the replica template.
fn acts_now(path: &str) -> bool {
    path.starts_with("spec.rollout") || path.starts_with(gpufed_api::disruption::FIELD)
}

/// The first error of a replica job spec, as the job controller would refuse each replica.
fn replica_error(spec: &ComputeJobSpec) -> Option<Refusal> {
    check::job_spec(spec)
        .into_iter()
        .next()
        .map(|e| (INVALID_SPEC, e.to_string()))
        .or_else(|| {
            // Named as the service's fields: the replica's probe is the service's.
            let e = crate::job::build::template_error(spec)?.replacen(
                "spec.serving.readinessProbe",
                "spec.readinessProbe",
                1,
            );
            Some((crate::job::plan::INVALID_TEMPLATE, e))
        })
}

/// Checks `svc`, whose spec asks for replicas of `spec`, with `paused` the template in
/// effect while `spec.paused`.
pub fn check(svc: &ComputeService, spec: &ComputeJobSpec, paused: Option<&Paused>) -> Checked {
    let name = gpufed_api::service::name_error(&svc.name_any()).map(|e| (INVALID_SPEC, e));
    let errors = check::service_spec(&svc.spec);
    let first = |mut it: std::vec::IntoIter<gpufed_api::schema_check::FieldError>| {
        it.next().map(|e| (INVALID_SPEC, e.to_string()))
    };
    match paused {
        None => Checked {
            blocking: name
                .or_else(|| first(errors.into_iter()))
                .or_else(|| replica_error(spec)),
            held: None,
        },
        Some(p) => {
            let (now, template): (Vec<_>, Vec<_>) = errors.into_iter().partition(|e| acts_now(&e.path));
            Checked {
                blocking: name
                    .or_else(|| first(now.into_iter()))
                    .or_else(|| replica_error(&p.spec)),
                held: first(template.into_iter()).or_else(|| replica_error(spec)),
            }
        }
    }
}
