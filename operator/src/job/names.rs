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
/// Label: hub name of the job, as [`job_name_label`] fits it into a label value. Code
/// that needs the job reads [`hub_job_name`] (or matches [`LABEL_JOB_UID`]), never this
/// label alone: a long name does not fit.
pub const LABEL_JOB_NAME: &str = "gpufed.io/job-name";
/// Annotation: the job's full hub name, set where [`LABEL_JOB_NAME`] could not hold it.
pub const ANNOTATION_JOB_NAME: &str = "gpufed.io/job-name";
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

/// Longest DNS-1123 label (a namespace's name) and longest label value.
const MAX_LABEL: usize = 63;
/// `-` and the 8 hex digits of [`short_hash`].
const HASH_SUFFIX: usize = 9;

/// Truncates to `max` bytes, trimming the separators a name may not end with (a cut
/// after a dot or dash would leave one).
fn trunc(s: &str, max: usize) -> &str {
    let end = s
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|e| *e <= max)
        .last()
        .unwrap_or(0);
    s[..end].trim_end_matches(['-', '.', '_'])
}

/// How every tenant namespace's name begins (a pull-mode agent takes no other).
pub const TENANT_PREFIX: &str = "gf-";

/// The tenant namespace of a job in a member cluster: `gf-<ns>-<name>-<hash>`, ≤ 63 chars.
///
/// A ComputeJob's name is a DNS subdomain (up to 253 characters, dots allowed), a
/// namespace's a DNS-1123 label: whatever is not `[a-z0-9-]` becomes `-`, and the hash of
/// the unchanged namespace and name keeps `a.b` and `a-b` apart. A name that is already
/// a label yields the same namespace as before this rule, so running jobs keep theirs.
pub fn tenant_namespace(job_namespace: &str, job_name: &str) -> String {
    let hash = short_hash(&[job_namespace, job_name]);
    let base: String = format!("{TENANT_PREFIX}{job_namespace}-{job_name}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    format!("{}-{hash}", trunc(&base, MAX_LABEL - HASH_SUFFIX))
}

/// Whether `v` is a valid label value: ≤ 63 characters of `[A-Za-z0-9-_.]`, beginning
/// and ending with an alphanumeric (or empty).
pub fn is_label_value(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    v.len() <= MAX_LABEL
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(v.chars().next())
        && alnum(v.chars().last())
}

/// The value of [`LABEL_JOB_NAME`]: the name itself when it is a valid label value (every
/// ComputeJob name of up to 63 characters is), else its first characters and a hash of
/// the whole name, `<head>-<hash>` (≤ 63). The API server refuses an object whose label
/// value is longer, so without this a long-named job could never be dispatched.
pub fn job_name_label(job_name: &str) -> String {
    if is_label_value(job_name) {
        return job_name.to_owned();
    }
    let hash = short_hash(&[job_name]);
    let cleaned: String = job_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let head = trunc(
        cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()),
        MAX_LABEL - HASH_SUFFIX,
    );
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// The hub name of the job a member object of ours belongs to: [`ANNOTATION_JOB_NAME`]
/// where dispatch set it (the label could not hold the name), else [`LABEL_JOB_NAME`].
pub fn hub_job_name<K: kube::Resource>(obj: &K) -> Option<&str> {
    let meta = obj.meta();
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_JOB_NAME))
        .or_else(|| meta.labels.as_ref()?.get(LABEL_JOB_NAME))
        .map(String::as_str)
}

/// A worker pod's name: `<name>-a<attempt>-w<rank>`, ≤ 63 chars (a DNS subdomain, as
/// the job's name is; a cut never leaves a label ending in `.` or `-`).
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

    /// A DNS-1123 label, as a namespace's name must be.
    fn is_dns_label(s: &str) -> bool {
        s.len() <= 63
            && !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    /// A DNS subdomain, as a pod's name must be.
    fn is_dns_subdomain(s: &str) -> bool {
        s.len() <= 253 && s.split('.').all(is_dns_label)
    }

    /// The longest ComputeJob name there can be: 253 characters, dotted.
    fn longest_name(fill: char) -> String {
        let label = std::iter::repeat_n(fill, 62).collect::<String>();
        let name = [label.as_str(); 4].join(".") + ".z";
        assert_eq!(name.len(), 253);
        name
    }

    #[test]
    fn every_valid_job_name_gives_valid_member_names() {
        for name in [
            longest_name('a'),
            "a.b".to_owned(),
            "x".repeat(64),
            format!("{}.{}", "a".repeat(50), "b"),
        ] {
            let ns = tenant_namespace("team", &name);
            assert!(is_dns_label(&ns), "{ns}");
            let label = job_name_label(&name);
            assert!(is_label_value(&label) && !label.is_empty(), "{label}");
            for attempt in [1, 4_294_967_295] {
                let pod = pod_name(&name, attempt, 511);
                assert!(is_dns_subdomain(&pod) && pod.len() <= 63, "{pod}");
            }
        }
        // A cut right after a dot leaves no label ending in `.`.
        let cut_at_dot = format!("{}.{}", "a".repeat(52), "b".repeat(20));
        assert!(is_dns_subdomain(&pod_name(&cut_at_dot, 1, 0)));
    }

    #[test]
    fn distinct_job_names_give_distinct_member_names() {
        let pairs = [
            ("a.b".to_owned(), "a-b".to_owned()),
            (longest_name('a'), longest_name('a').replacen('a', "b", 1)),
            (format!("{}-1", "x".repeat(70)), format!("{}-2", "x".repeat(70))),
        ];
        for (a, b) in pairs {
            assert_ne!(tenant_namespace("team", &a), tenant_namespace("team", &b));
            assert_ne!(job_name_label(&a), job_name_label(&b));
        }
    }

    #[test]
    fn names_that_already_fit_are_unchanged() {
        // The namespace format before names with dots or over 63 characters were handled.
        assert_eq!(tenant_namespace("team", "train"), "gf-team-train-c9426b29");
        assert_eq!(job_name_label("train"), "train");
        let at_limit = "t".repeat(63);
        assert_eq!(job_name_label(&at_limit), at_limit);
        assert_eq!(job_name_label("a.b"), "a.b", "dots are fine in a label value");
        assert_eq!(pod_name("train", 2, 0), "train-a2-w0");
    }

    #[test]
    fn the_hub_job_is_read_from_the_annotation_before_the_label() {
        use k8s_openapi::api::core::v1::Pod;
        let long = "x".repeat(80);
        let mut pod = Pod::default();
        pod.metadata.labels = Some([(LABEL_JOB_NAME.to_owned(), job_name_label(&long))].into());
        assert_ne!(hub_job_name(&pod), Some(long.as_str()));
        pod.metadata.annotations = Some([(ANNOTATION_JOB_NAME.to_owned(), long.clone())].into());
        assert_eq!(hub_job_name(&pod), Some(long.as_str()));
        pod.metadata.annotations = None;
        pod.metadata.labels = Some([(LABEL_JOB_NAME.to_owned(), "train".to_owned())].into());
        assert_eq!(
            hub_job_name(&pod),
            Some("train"),
            "pods dispatched before the annotation"
        );
    }
}
