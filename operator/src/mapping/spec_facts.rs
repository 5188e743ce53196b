//! What the placement round reads from a job's spec alone — whether the spec is valid
//! (its cross-field rules and its pod template: the costly half of
//! [`super::is_queued`]) and what one worker asks for ([`Ask`]) — kept per job
//! generation, so that a round over thousands of waiting jobs does not re-read every
//! template every few seconds (BENCHMARKS.md, "Placement round").
//!
//! Kept by uid and generation, which name one spec exactly for an object the API server
//! returned: the server bumps a custom resource's generation on every change to its spec.
//! An object without a resourceVersion (one the API server never returned: a test's
//! fixture, a spec being built) is read afresh every time.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use gpufed_api::{ComputeJob, check};
use gpufed_placement as pl;

use crate::job::build::{self, affinity};

use super::resources::Ask;

/// Entries kept at most; past it the memo starts afresh (a bound on memory, not an LRU:
/// a fleet that large reads each template once more).
const MAX_ENTRIES: usize = 200_000;

/// What a job's spec says, for placement.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecFacts {
    /// The cross-field rules hold and the pod template builds.
    pub valid: bool,
    /// What one worker asks for.
    pub ask: Ask,
    /// The template's required node affinity and the topology keys it spreads over
    /// ([`affinity::placement_terms`]).
    pub node_affinity: Vec<pl::AffinityTerm>,
    /// Workers at most on one node, 0 for no limit ([`affinity::workers_per_node`]).
    pub max_workers_per_node: u16,
    /// All workers on one node ([`affinity::workers_together`]).
    pub workers_together: bool,
}

impl SpecFacts {
    fn read(job: &ComputeJob) -> SpecFacts {
        let spec = &job.spec;
        let template = build::template(spec);
        // Attempt 1's labels: a selector on the attempt number is not worth more.
        let labels = |rank| build::worker_labels(job, 1, rank);
        let (node_affinity, max_workers_per_node, workers_together) = match &template {
            Ok(t) => (
                affinity::placement_terms(t),
                affinity::workers_per_node(t, spec.workers, labels),
                affinity::workers_together(t, spec.workers, labels),
            ),
            Err(_) => (Vec::new(), 0, false),
        };
        SpecFacts {
            valid: check::job_spec(spec).is_empty() && template.is_ok(),
            ask: Ask::of(spec),
            node_affinity,
            max_workers_per_node,
            workers_together,
        }
    }
}

/// By uid: the generation read, and what it says.
type Memo = HashMap<String, (i64, Arc<SpecFacts>)>;

static MEMO: LazyLock<Mutex<Memo>> = LazyLock::new(Mutex::default);

/// What `job`'s spec says, from the memo when its generation was read before.
pub fn of(job: &ComputeJob) -> Arc<SpecFacts> {
    let m = &job.metadata;
    let key = match (&m.uid, m.generation, &m.resource_version) {
        (Some(uid), Some(generation), Some(_)) => Some((uid, generation)),
        _ => None,
    };
    if let Some((uid, generation)) = key
        && let Ok(memo) = MEMO.lock()
        && let Some((g, facts)) = memo.get(uid.as_str())
        && *g == generation
    {
        return facts.clone();
    }
    let facts = Arc::new(SpecFacts::read(job));
    if let Some((uid, generation)) = key
        && let Ok(mut memo) = MEMO.lock()
    {
        if memo.len() >= MAX_ENTRIES {
            memo.clear();
        }
        memo.insert(uid.clone(), (generation, facts.clone()));
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(uid: &str, generation: i64, rv: Option<&str>, cpu: &str) -> ComputeJob {
        let containers =
            serde_json::json!([{"name": "main", "image": "x", "resources": {"requests": {"cpu": cpu}}}]);
        with_containers(uid, generation, rv, containers)
    }

    fn with_containers(
        uid: &str,
        generation: i64,
        rv: Option<&str>,
        containers: serde_json::Value,
    ) -> ComputeJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": "j", "namespace": "team", "uid": uid, "generation": generation,
                         "resourceVersion": rv},
            "spec": {"workers": 1, "gpusPerWorker": 1, "maxPricePerGpuHour": "3",
                     "gpu": {"tier": "Any", "interconnect": "Any"}, "placement": {"verifiedOnly": false},
                     "template": {"spec": {"containers": containers}}}
        }))
        .expect("job")
    }

    #[test]
    fn a_generation_is_read_once_and_a_new_one_afresh() {
        let first = of(&job("uid-memo-1", 1, Some("10"), "4"));
        assert_eq!(first.ask.resources.cpu_millis, 4000);
        assert!(first.valid);
        // The same generation (a status write moved the resourceVersion): the memo.
        let again = of(&job("uid-memo-1", 1, Some("11"), "4"));
        assert!(Arc::ptr_eq(&first, &again));
        // A spec change bumps the generation: read afresh.
        let changed = of(&job("uid-memo-1", 2, Some("12"), "8"));
        assert_eq!(changed.ask.resources.cpu_millis, 8000);
        // A template without containers reads as invalid.
        let bad = of(&with_containers(
            "uid-memo-1",
            3,
            Some("13"),
            serde_json::json!([]),
        ));
        assert!(!bad.valid);
    }

    #[test]
    fn objects_the_api_server_never_returned_are_read_every_time() {
        let a = of(&job("uid-memo-2", 1, None, "4"));
        let b = of(&job("uid-memo-2", 1, None, "6"));
        assert_eq!(
            (a.ask.resources.cpu_millis, b.ask.resources.cpu_millis),
            (4000, 6000)
        );
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
