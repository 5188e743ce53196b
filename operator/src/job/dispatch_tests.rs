#![allow(clippy::unwrap_used)]

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn namespace(labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some("gf-x".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn two_tenants_jobs_can_share_a_tenant_namespace_name() {
    // Why dispatch checks whose the namespace is: cut to fit and told apart by 32 bits
    // only, these two jobs of different tenants get the same name.
    let a = names::tenant_namespace(
        "team",
        "a-llama-70b-finetune-run-with-long-descriptive-name-x32582",
    );
    let b = names::tenant_namespace(
        "team-a",
        "llama-70b-finetune-run-with-long-descriptive-name-v69719",
    );
    assert_eq!(a, b);
    assert_eq!(
        a,
        "gf-team-a-llama-70b-finetune-run-with-long-descriptive-15d41fe9"
    );
}

#[test]
fn a_namespace_another_job_holds_is_not_applied_into() {
    let theirs = namespace(&[(names::LABEL_JOB_UID, "uid-a")]);
    assert_eq!(taken_by(Some(&theirs), "uid-b"), Some("uid-a"));
    assert_eq!(taken_by(Some(&theirs), "uid-a"), None, "its own");
    assert_eq!(taken_by(None, "uid-b"), None, "not there yet: created");
    assert_eq!(taken_by(Some(&namespace(&[])), "uid-b"), None, "names no job");
    // Answered as a 403 that does not pass: the attempt ends after the grace period and
    // the job is kept off the provider, the message saying why.
    let e = taken_error("gf-x", "uid-a");
    assert!(crate::error::is_forbidden(&e));
    let kube::Error::Api(s) = &e else { panic!("{e}") };
    assert!(
        s.message.starts_with(TAKEN) && s.message.contains("uid-a") && s.message.contains("gf-x"),
        "{}",
        s.message
    );
}
