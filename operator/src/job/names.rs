//! Deterministic names and labels of member-side objects, so that a retried dispatch
//! applies the same objects instead of creating new ones.

use sha2::{Digest, Sha256};

/// Label: UID of the hub ComputeJob.
pub const LABEL_JOB_UID: &str = "gpufed.io/job-uid";
/// Label: attempt number.
pub const LABEL_ATTEMPT: &str = "gpufed.io/attempt";
/// Label: worker rank.
pub const LABEL_RANK: &str = "gpufed.io/rank";
/// Label: hub namespace of the job.
pub const LABEL_JOB_NAMESPACE: &str = "gpufed.io/job-namespace";
/// Label: hub name of the job.
pub const LABEL_JOB_NAME: &str = "gpufed.io/job-name";
/// Finalizer on hub ComputeJobs: member-side cleanup runs before deletion completes.
pub const FINALIZER: &str = "gpufed.io/member-cleanup";

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Truncates to `max` bytes of a DNS label, trimming trailing dashes.
fn trunc(s: &str, max: usize) -> &str {
    let end = s
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|e| *e <= max)
        .last()
        .unwrap_or(0);
    s[..end].trim_end_matches('-')
}

/// The tenant namespace of a job in a member cluster: `gf-<ns>-<name>-<hash>`, ≤ 63 chars.
pub fn tenant_namespace(job_namespace: &str, job_name: &str) -> String {
    let hash = short_hash(&[job_namespace, job_name]);
    let base = format!("gf-{job_namespace}-{job_name}");
    format!("{}-{hash}", trunc(&base, 63 - 9))
}

/// A worker pod's name: `<name>-a<attempt>-w<rank>`, ≤ 63 chars.
pub fn pod_name(job_name: &str, attempt: u32, rank: u32) -> String {
    let suffix = format!("-a{attempt}-w{rank}");
    format!("{}{suffix}", trunc(job_name, 63 - suffix.len()))
}

/// Name of the headless Service that gives gang members stable DNS names.
pub const GANG_SERVICE: &str = "gang";

/// A worker's host name inside the gang (`w<rank>`), resolvable as
/// `w<rank>.gang.<namespace>.svc`.
pub fn worker_host(rank: u32) -> String {
    format!("w{rank}")
}

/// `uid/attempt`, the key that identifies an attempt's pods in a member cluster.
pub fn attempt_key(uid: &str, attempt: u32) -> String {
    format!("{uid}/{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_bounded() {
        assert_eq!(tenant_namespace("team", "job"), tenant_namespace("team", "job"));
        assert_ne!(
            tenant_namespace("team", "job-a"),
            tenant_namespace("team-job", "a")
        );
        let long = "x".repeat(200);
        assert!(tenant_namespace(&long, &long).len() <= 63);
        assert!(pod_name(&long, 10, 511).len() <= 63);
        assert_eq!(pod_name("train", 2, 0), "train-a2-w0");
        assert!(pod_name(&long, 1, 1).ends_with("-a1-w1"));
    }
}
