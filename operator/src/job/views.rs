//! The hub's jobs grouped by provider and by namespace, shared by the controllers that
//! look at "a provider's jobs" or "a namespace's jobs" on every heartbeat.
//!
//! Before, each provider reconcile (every heartbeat, per provider) and each quota refresh
//! (every few seconds, per quota) scanned the whole job cache: with P providers, Q quotas
//! and J jobs that is (P + Q) × J visits per interval — at 1 000 providers and 20 000 jobs,
//! tens of millions (BENCHMARKS.md, "Heartbeat"). The groups are built in one pass and
//! reused until they are [`MAX_AGE`] old, so the scans cost J per [`MAX_AGE`] however many
//! providers and quotas there are. What reads them tolerates that lag (it is below the
//! heartbeat and quota refresh intervals): reputation's outcome ledger, quota status, the
//! jobs woken when a provider answers again. A drain's completion still scans the cache
//! itself (it must not call a provider drained on a listing a placement just outdated).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpufed_api::ComputeJob;
use kube::runtime::reflector::Store;

/// How old the groups may be before they are built again.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The jobs of each provider and of each namespace.
#[derive(Debug, Default)]
pub struct Views {
    by_provider: HashMap<String, Vec<Arc<ComputeJob>>>,
    by_namespace: HashMap<String, Vec<Arc<ComputeJob>>>,
}

impl Views {
    /// Groups `jobs` in one pass. A job is under every provider its status names (its
    /// placement, any attempt, its archived attempts), once each.
    pub fn new(jobs: &[Arc<ComputeJob>]) -> Self {
        let mut v = Self::default();
        let mut names: Vec<&str> = Vec::new();
        for job in jobs {
            if let Some(ns) = job.metadata.namespace.as_deref() {
                push(&mut v.by_namespace, ns, job);
            }
            let Some(st) = job.status.as_ref() else {
                continue;
            };
            names.clear();
            names.extend(st.placement.as_ref().map(|p| p.provider.as_str()));
            names.extend(st.attempts.iter().map(|a| a.provider.as_str()));
            if let Some(a) = st.archived.as_ref() {
                names.extend(a.providers.iter().map(String::as_str));
            }
            names.sort_unstable();
            names.dedup();
            for p in &names {
                push(&mut v.by_provider, p, job);
            }
        }
        v
    }

    /// The jobs whose status names `provider` (a superset of those that
    /// [`crate::job::touches_provider`] or have attempts there).
    pub fn of_provider(&self, provider: &str) -> &[Arc<ComputeJob>] {
        self.by_provider.get(provider).map_or(&[], Vec::as_slice)
    }

    /// The jobs in `namespace`.
    pub fn of_namespace(&self, namespace: &str) -> &[Arc<ComputeJob>] {
        self.by_namespace.get(namespace).map_or(&[], Vec::as_slice)
    }
}

fn push(map: &mut HashMap<String, Vec<Arc<ComputeJob>>>, key: &str, job: &Arc<ComputeJob>) {
    // Look up by &str first: one key allocation per distinct name, not per job.
    if let Some(list) = map.get_mut(key) {
        list.push(Arc::clone(job));
    } else {
        map.insert(key.to_owned(), vec![Arc::clone(job)]);
    }
}

/// [`Views`] of the job cache, built at most once per [`MAX_AGE`].
#[derive(Debug, Default)]
pub struct JobViews {
    memo: Mutex<Option<(Instant, Arc<Views>)>>,
}

impl JobViews {
    /// The groups of `store`'s jobs as of at most [`MAX_AGE`] before `now`.
    pub fn get(&self, store: &Store<ComputeJob>, now: Instant) -> Arc<Views> {
        self.get_with(now, || Views::new(&store.state()))
    }

    fn get_with(&self, now: Instant, build: impl FnOnce() -> Views) -> Arc<Views> {
        // Built under the lock: reconciles arriving meanwhile wait for this build rather
        // than each starting their own.
        let Ok(mut memo) = self.memo.lock() else {
            return Arc::new(build());
        };
        if let Some((at, views)) = memo.as_ref()
            && now.saturating_duration_since(*at) < MAX_AGE
        {
            return Arc::clone(views);
        }
        let views = Arc::new(build());
        *memo = Some((now, Arc::clone(&views)));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        name: &str,
        ns: &str,
        placement: Option<&str>,
        attempts: &[&str],
        archived: &[&str],
    ) -> Arc<ComputeJob> {
        let attempts: Vec<_> = attempts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::json!({"attempt": i + 1, "provider": p, "outcome": "ProviderLost", "gpuSeconds": 1,
                    "pricePerGpuHour": "1.00", "endTime": "2026-11-25T12:00:00Z"})
            })
            .collect();
        let mut status = serde_json::json!({"attempts": attempts});
        if let Some(p) = placement {
            status["placement"] = serde_json::json!({"attempt": attempts.len() + 1, "provider": p, "gpus": 1,
                "pricePerGpuHour": "1.00", "placedTime": "2026-11-25T12:00:00Z", "workers": []});
        }
        if !archived.is_empty() {
            status["archived"] =
                serde_json::json!({"attempts": 3, "gpuSeconds": 5, "cost": "0.01", "providers": archived});
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": name, "namespace": ns, "uid": name},
                "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                         "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}},
                "status": status,
            }))
            .expect("job"),
        )
    }

    fn names(jobs: &[Arc<ComputeJob>]) -> Vec<&str> {
        jobs.iter().filter_map(|j| j.metadata.name.as_deref()).collect()
    }

    #[test]
    fn every_provider_a_job_names_lists_it_once() {
        let jobs = [
            job("a", "t1", Some("p"), &["p", "q", "p"], &[]),
            job("b", "t2", None, &["q"], &["r", "q"]),
            job("c", "t1", None, &[], &[]),
        ];
        let v = Views::new(&jobs);
        assert_eq!(names(v.of_provider("p")), ["a"]);
        assert_eq!(names(v.of_provider("q")), ["a", "b"]);
        assert_eq!(names(v.of_provider("r")), ["b"]);
        assert!(v.of_provider("s").is_empty());
        assert_eq!(names(v.of_namespace("t1")), ["a", "c"]);
        assert_eq!(names(v.of_namespace("t2")), ["b"]);
        assert!(v.of_namespace("t3").is_empty());
        // Every job touching a provider is among its view.
        for p in ["p", "q", "r", "s"] {
            let touching: Vec<_> = jobs
                .iter()
                .filter(|j| crate::job::touches_provider(j, p))
                .collect();
            assert!(
                touching
                    .iter()
                    .all(|j| v.of_provider(p).iter().any(|k| Arc::ptr_eq(j, k))),
                "{p}"
            );
        }
    }

    #[test]
    fn groups_are_rebuilt_only_when_old() {
        let views = JobViews::default();
        let t0 = Instant::now();
        let mut builds = 0;
        let mut get = |at: Instant, jobs: &[Arc<ComputeJob>]| {
            views.get_with(at, || {
                builds += 1;
                Views::new(jobs)
            })
        };
        let one = [job("a", "t", Some("p"), &[], &[])];
        let two = [one[0].clone(), job("b", "t", Some("p"), &[], &[])];
        assert_eq!(get(t0, &one).of_provider("p").len(), 1);
        // Within MAX_AGE the first grouping is served, even though the cache grew.
        assert_eq!(get(t0 + MAX_AGE / 2, &two).of_provider("p").len(), 1);
        assert_eq!(get(t0 + MAX_AGE, &two).of_provider("p").len(), 2);
        assert_eq!(builds, 2);
    }
}
