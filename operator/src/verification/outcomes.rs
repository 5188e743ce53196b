//! The job outcomes a provider's reputation counts, kept in the hub: a job's attempts are
//! recorded here as they end, so deleting finished jobs (or a new leader) does not wipe a
//! provider's record — a provider that abandoned jobs cannot clean its slate by waiting
//! for tenants to delete them.
//!
//! One ConfigMap per provider in the operator's namespace (`gpufed-outcomes-<provider>`,
//! owned by the GpuProvider), key `outcomes.json`: `{"<job uid>/<attempt>": [outcome,
//! end unix seconds]}`. Keyed by attempt, so recording is idempotent; the newest
//! [`WINDOW`] attempts are kept, so the reputation follows recent behaviour.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gpufed_api::job_status::AttemptOutcome;
use gpufed_api::{ComputeJob, GpuProvider};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

/// Attempts kept per provider.
pub const WINDOW: usize = 1000;
/// Data key of the ledger in its ConfigMap.
pub const KEY: &str = "outcomes.json";

/// What an attempt says about its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Counted {
    /// All workers succeeded.
    Completed,
    /// Lost by the provider (its heartbeat or a node under a worker).
    Lost,
}

/// A provider's recorded attempts: `"<job uid>/<attempt>"` → (what it counts as, end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ledger(pub BTreeMap<String, (Counted, i64)>);

impl Ledger {
    /// Records the ended attempts of `jobs` on `provider` that count; true when anything
    /// new was kept. Beyond [`WINDOW`] the oldest (by end time, then key) are dropped; an
    /// attempt the hub still holds but the window has dropped is not "new" each time it is
    /// seen (that was a ledger write per heartbeat for a provider with more ended attempts
    /// in the hub than the window).
    pub fn record<'a>(&mut self, jobs: impl IntoIterator<Item = &'a ComputeJob>, provider: &str) -> bool {
        let mut added: Vec<String> = Vec::new();
        // One key buffer for the lookups: most attempts seen are recorded already.
        let mut key = String::new();
        for job in jobs {
            let (Some(uid), Some(st)) = (job.metadata.uid.as_deref(), job.status.as_ref()) else {
                continue;
            };
            for a in st.attempts.iter().filter(|a| a.provider == provider) {
                let counted = match a.outcome {
                    AttemptOutcome::Succeeded => Counted::Completed,
                    AttemptOutcome::ProviderLost | AttemptOutcome::NodeLost => Counted::Lost,
                    _ => continue,
                };
                key.clear();
                let _ = write!(key, "{uid}/{}", a.attempt);
                if !self.0.contains_key(key.as_str()) {
                    let end = crate::time::parse(&a.end_time).unwrap_or(0);
                    self.0.insert(key.clone(), (counted, end));
                    added.push(key.clone());
                }
            }
        }
        self.keep_window(&added)
    }

    /// Takes in the entries of `other` this ledger lacks; true when any of them is kept.
    pub fn merge(&mut self, other: Ledger) -> bool {
        let mut added = Vec::new();
        for (k, v) in other.0 {
            if let std::collections::btree_map::Entry::Vacant(e) = self.0.entry(k) {
                added.push(e.key().clone());
                e.insert(v);
            }
        }
        self.keep_window(&added)
    }

    /// Drops the oldest entries beyond [`WINDOW`]; whether any of `added` is still kept.
    fn keep_window(&mut self, added: &[String]) -> bool {
        if self.0.len() > WINDOW {
            let mut by_end: Vec<(i64, &String)> = self.0.iter().map(|(k, (_, e))| (*e, k)).collect();
            by_end.sort_unstable();
            let drop: Vec<String> = by_end
                .into_iter()
                .take(self.0.len() - WINDOW)
                .map(|(_, k)| k.clone())
                .collect();
            for k in &drop {
                self.0.remove(k);
            }
        }
        added.iter().any(|k| self.0.contains_key(k))
    }

    /// `(completed, lost by the provider)`.
    pub fn counts(&self) -> (u64, u64) {
        self.0.values().fold((0, 0), |(c, l), (what, _)| match what {
            Counted::Completed => (c + 1, l),
            Counted::Lost => (c, l + 1),
        })
    }
}

/// ConfigMap name of a provider's ledger.
pub fn configmap_name(provider: &str) -> String {
    super::shards::base("gpufed-outcomes-", provider)
}

/// A provider's ledger from the hub (empty when none exists; an unreadable one is logged
/// and read as empty rather than blocking reputation for good).
pub async fn load(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
) -> Result<Ledger, super::store::Error> {
    let name = configmap_name(&provider.name_any());
    let text = super::store::read(hub, namespace, &name, provider)
        .await?
        .and_then(|mut d| d.remove(KEY));
    Ok(text.map_or_else(Ledger::default, |t| {
        serde_json::from_str(&t).unwrap_or_else(|e| {
            tracing::warn!(%name, error = %e, "unreadable outcome ledger; starting a new one");
            Ledger::default()
        })
    }))
}

/// Writes the ledger. Owned by the provider.
pub async fn save(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
    ledger: &Ledger,
) -> Result<(), super::store::Error> {
    let text = serde_json::to_string(ledger).unwrap_or_else(|_| "{}".to_owned());
    let name = configmap_name(&provider.name_any());
    super::store::write(hub, namespace, &name, provider, [(KEY.to_owned(), text)].into()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(uid: &str, attempts: &[(u32, &str, &str, i64)]) -> ComputeJob {
        let attempts: Vec<serde_json::Value> = attempts
            .iter()
            .map(|(n, provider, outcome, end)| {
                serde_json::json!({"attempt": n, "provider": provider, "outcome": outcome, "gpuSeconds": 1,
                    "pricePerGpuHour": "1.00", "endTime": crate::time::format(*end)})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": uid, "namespace": "t", "uid": uid},
            "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                     "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}},
            "status": {"attempts": attempts},
        }))
        .expect("job")
    }

    #[test]
    fn outcomes_outlive_their_jobs_and_count_once() {
        let t0 = 1_800_000_000;
        let jobs = [
            job(
                "a",
                &[(1, "p", "ProviderLost", t0), (2, "q", "Succeeded", t0 + 10)],
            ),
            job("b", &[(1, "p", "Succeeded", t0 + 5)]),
            job("c", &[(1, "p", "Stopped", t0 + 6), (2, "p", "NodeLost", t0 + 7)]),
        ];
        let mut l = Ledger::default();
        assert!(l.record(jobs.iter(), "p"));
        assert_eq!(l.counts(), (1, 2), "{l:?}");
        assert!(!l.record(jobs.iter(), "p"), "recording again changes nothing");
        // The jobs are deleted: the hub holds none of them, the ledger still does.
        assert!(!l.record(std::iter::empty(), "p"));
        assert_eq!(l.counts(), (1, 2));
        let text = serde_json::to_string(&l).expect("json");
        let back: Ledger = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back, l);
    }

    #[test]
    fn only_the_newest_window_is_kept() {
        let t0 = 1_800_000_000;
        let jobs: Vec<ComputeJob> = (0..WINDOW as i64 + 5)
            .map(|i| {
                let outcome = if i < 5 { "ProviderLost" } else { "Succeeded" };
                job(&format!("j{i}"), &[(1, "p", outcome, t0 + i)])
            })
            .collect();
        let mut l = Ledger::default();
        l.record(jobs.iter(), "p");
        assert_eq!(l.0.len(), WINDOW);
        assert_eq!(
            l.counts(),
            (WINDOW as u64, 0),
            "the five oldest, all losses, aged out"
        );
        // The hub still holds the five dropped attempts: seeing them again keeps nothing
        // new, so the ledger is not written again every heartbeat.
        let kept = l.clone();
        assert!(!l.record(jobs.iter(), "p"));
        assert_eq!(l, kept);
        // A newer attempt is kept (and the oldest kept one makes room).
        let newer = job("new", &[(1, "p", "ProviderLost", t0 + 5000)]);
        assert!(l.record(jobs.iter().chain([&newer]), "p"));
        assert_eq!(l.counts(), (WINDOW as u64 - 1, 1));
    }
}
