//! Which GPUs each pod of a node holds, as the node's device plugin publishes it: the
//! Node annotation [`ANNOTATION`], JSON `{"<namespace>/<pod>": ["GPU-…", …]}`, taken from
//! kubelet's PodResources (kubelet is the authority on what it handed to which container).
//!
//! The hub reads it to put the GPU UUIDs of each worker into a job's placement and bills,
//! and to catch a provider whose nodes hand one GPU to two pods. It comes from a member
//! cluster, so parsing is bounded and never trusts a value: bad entries are dropped one
//! by one, and a text that is too large or not the expected shape is an error the caller
//! reports, not a panic.

use std::collections::{BTreeMap, BTreeSet};

/// Node annotation holding the allocations (JSON).
pub const ANNOTATION: &str = "gpufed.io/gpu-allocations";
/// Largest annotation text read, bytes (a node with 16 GPUs, one per pod, needs ~6 KiB).
pub const MAX_TEXT: usize = 64 * 1024;
/// Most pods read from one node.
pub const MAX_PODS: usize = 256;
/// Most GPUs read for one pod (the CRD's bound on a worker's UUID list).
pub const MAX_GPUS_PER_POD: usize = 16;
/// Longest GPU UUID accepted (NVML's are 40 characters).
pub const MAX_UUID: usize = 64;

/// `namespace/pod` → the GPU UUIDs it holds (sorted, distinct).
pub type Allocations = BTreeMap<String, Vec<String>>;

/// Why an annotation could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationsError {
    /// Over [`MAX_TEXT`].
    #[error("gpu-allocations annotation is {0} bytes, over the {MAX_TEXT}-byte limit")]
    TooLarge(usize),
    /// Not a JSON object of string arrays.
    #[error("gpu-allocations annotation is not a JSON object of string lists: {0}")]
    Malformed(String),
}

/// The key of a pod in [`Allocations`].
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn valid_uuid(u: &str) -> bool {
    !u.is_empty() && u.len() <= MAX_UUID && u.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

fn valid_key(k: &str) -> bool {
    // namespace (≤63) + '/' + pod name (≤253)
    k.len() <= 317
        && k.split_once('/')
            .is_some_and(|(ns, pod)| !ns.is_empty() && !pod.is_empty())
}

/// The annotation text of `allocations` (what the device plugin writes).
pub fn encode(allocations: &Allocations) -> String {
    serde_json::to_string(allocations).unwrap_or_else(|_| "{}".to_owned())
}

/// Reads an annotation: pods past [`MAX_PODS`], invalid keys or UUIDs, and UUIDs past
/// [`MAX_GPUS_PER_POD`] per pod are dropped; each pod's list comes back sorted and distinct.
pub fn parse(text: &str) -> Result<Allocations, AllocationsError> {
    if text.len() > MAX_TEXT {
        return Err(AllocationsError::TooLarge(text.len()));
    }
    let raw: BTreeMap<String, Vec<String>> =
        serde_json::from_str(text).map_err(|e| AllocationsError::Malformed(e.to_string()))?;
    Ok(raw
        .into_iter()
        .filter(|(k, _)| valid_key(k))
        .take(MAX_PODS)
        .map(|(k, ids)| {
            let ids: BTreeSet<String> = ids.into_iter().filter(|u| valid_uuid(u)).collect();
            (k, ids.into_iter().take(MAX_GPUS_PER_POD).collect())
        })
        .collect())
}

/// GPUs listed for more than one pod, with the pods holding each: kubelet never does
/// this, so it means a lying or broken node.
pub fn shared_gpus(allocations: &Allocations) -> BTreeMap<String, Vec<String>> {
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pod, ids) in allocations {
        for id in ids {
            holders.entry(id.clone()).or_default().push(pod.clone());
        }
    }
    holders.retain(|_, pods| pods.len() > 1);
    holders
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_the_plugin_writes() {
        let a = Allocations::from([
            (
                pod_key("t-1", "w-0"),
                vec!["GPU-a".to_owned(), "GPU-b".to_owned()],
            ),
            (pod_key("t-2", "w-0"), vec!["GPU-c".to_owned()]),
        ]);
        assert_eq!(parse(&encode(&a)).unwrap(), a);
        assert!(shared_gpus(&a).is_empty());
    }

    #[test]
    fn hostile_entries_are_dropped_and_the_rest_kept() {
        let long = "G".repeat(MAX_UUID + 1);
        let many: Vec<String> = (0..40).map(|i| format!("GPU-{i:02}")).collect();
        let text = serde_json::json!({
            "ns/ok": ["GPU-b", "GPU-a", "GPU-a", "", long, "has space", "a,b"],
            "no-slash": ["GPU-x"],
            "/empty-ns": ["GPU-y"],
            "ns/many": many,
        })
        .to_string();
        let a = parse(&text).unwrap();
        assert_eq!(a["ns/ok"], vec!["GPU-a", "GPU-b"]);
        assert_eq!(a["ns/many"].len(), MAX_GPUS_PER_POD);
        assert_eq!(a.len(), 2, "{a:?}");
    }

    #[test]
    fn wrong_shapes_and_huge_texts_are_errors_that_say_why() {
        for bad in ["", "[]", "{\"a/b\": \"GPU-a\"}", "{\"a/b\": [1]}", "not json"] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, AllocationsError::Malformed(_)), "{bad}: {e}");
        }
        let huge = format!("{{\"a/b\": [\"{}\"]}}", "x".repeat(MAX_TEXT));
        assert_eq!(parse(&huge).unwrap_err(), AllocationsError::TooLarge(huge.len()));
        assert!(parse(&huge).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn a_gpu_held_by_two_pods_is_named_with_both() {
        let a = Allocations::from([
            (pod_key("t-1", "w-0"), vec!["GPU-a".to_owned()]),
            (
                pod_key("t-2", "w-0"),
                vec!["GPU-a".to_owned(), "GPU-b".to_owned()],
            ),
        ]);
        assert_eq!(
            shared_gpus(&a),
            BTreeMap::from([(
                "GPU-a".to_owned(),
                vec!["t-1/w-0".to_owned(), "t-2/w-0".to_owned()]
            )])
        );
    }

    #[test]
    fn pod_count_is_bounded() {
        let many: Allocations = (0..MAX_PODS + 10)
            .map(|i| (pod_key("ns", &format!("p{i:04}")), vec![format!("GPU-{i}")]))
            .collect();
        assert_eq!(parse(&encode(&many)).unwrap().len(), MAX_PODS);
    }
}
