//! The verifier's copies of the pins, job outcomes and verdicts it keeps in the hub:
//! load, record, save.

use std::collections::BTreeMap;

use super::verdicts::{self, Outcome, Record};
use super::{NodeState, Verifier, ms, outcomes};

impl Verifier {
    /// Makes the state of this process belong to leadership term `term`: on a new one it
    /// forgets what it knew of the hub (verdicts, sessions, pins, what the hub keeps,
    /// uptime averages) and loads it again. Another replica may have led in between: it
    /// judged, pinned and kept records since, and this process's older copies would
    /// overwrite them (the pins and records are saved whole) or judge a node by a stale
    /// schedule (a round challenge on the round's clock, failing an honest node that the
    /// other leader had verified). Job outcomes not saved yet are kept, merged into their
    /// ledgers when these load again.
    pub fn enter_term(&self, term: u64) {
        use std::sync::atomic::Ordering;
        if self.term.swap(term, Ordering::SeqCst) == term {
            return;
        }
        if let (Ok(mut outcomes), Ok(mut pending)) = (self.outcomes.lock(), self.outcomes_pending.lock()) {
            for (provider, (ledger, _)) in std::mem::take(&mut *outcomes) {
                pending.entry(provider).or_default().merge(ledger);
            }
        }
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.clear();
        }
        if let Ok(mut pins) = self.pins.lock() {
            pins.clear();
        }
        if let Ok(mut kept) = self.kept.lock() {
            kept.clear();
        }
        if let Ok(mut uptime) = self.uptime.lock() {
            uptime.clear();
        }
        if let Ok(mut checked) = self.evidence_checked.lock() {
            checked.clear();
        }
        // What the fleet looked like while another process led is unknown here: only
        // losses from this term on can be attributed.
        self.losses.forget();
        // The maps are read again in this term: what stays unreadable is told again.
        self.forget_unreadable(|_| true);
    }

    /// Whether the provider's outcome ledger was loaded from the hub.
    pub fn outcomes_loaded(&self, provider: &str) -> bool {
        self.outcomes.lock().is_ok_and(|o| o.contains_key(provider))
    }

    /// Installs the provider's ledger as read from the hub, with the outcomes of jobs
    /// deleted before it was ([`Verifier::record_deleted`]).
    pub fn load_outcomes(&self, provider: &str, ledger: outcomes::Ledger) {
        if let Ok(mut all) = self.outcomes.lock() {
            let (l, dirty) = all.entry(provider.to_owned()).or_default();
            l.merge(ledger);
            let pending = self
                .outcomes_pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(provider));
            if let Some(p) = pending
                && l.merge(p)
            {
                *dirty = true;
            }
        }
    }

    /// Records the ended attempts of `job`, which is about to go, on `provider`: its
    /// outcomes then count though the provider's next heartbeat no longer sees the job
    /// (a `ttlSecondsAfterFinished: 0` job goes within seconds of its end). Into the
    /// loaded ledger (saved with the provider's next heartbeat), else kept until it loads.
    pub fn record_deleted(&self, provider: &str, job: &gpufed_api::ComputeJob) {
        let Ok(mut all) = self.outcomes.lock() else {
            return;
        };
        if let Some((ledger, dirty)) = all.get_mut(provider) {
            if ledger.record([job], provider) {
                *dirty = true;
            }
        } else if let Ok(mut pending) = self.outcomes_pending.lock() {
            pending
                .entry(provider.to_owned())
                .or_default()
                .record([job], provider);
        }
    }

    /// Records the ended attempts of `jobs` on `provider` in its (loaded) ledger and
    /// returns `(completed, lost)` over it; `None` while it is not loaded.
    pub fn record_outcomes<'a>(
        &self,
        provider: &str,
        jobs: impl IntoIterator<Item = &'a gpufed_api::ComputeJob>,
    ) -> Option<(u64, u64)> {
        let mut all = self.outcomes.lock().ok()?;
        let (ledger, dirty) = all.get_mut(provider)?;
        if ledger.record(jobs, provider) {
            *dirty = true;
        }
        Some(ledger.counts())
    }

    /// The provider's ledger when it has unsaved entries.
    pub fn outcomes_to_save(&self, provider: &str) -> Option<outcomes::Ledger> {
        let all = self.outcomes.lock().ok()?;
        all.get(provider)
            .filter(|(_, dirty)| *dirty)
            .map(|(l, _)| l.clone())
    }

    /// `saved` is in the hub now.
    pub fn outcomes_saved(&self, provider: &str, saved: &outcomes::Ledger) {
        if let Ok(mut all) = self.outcomes.lock()
            && let Some((l, dirty)) = all.get_mut(provider)
            && l == saved
        {
            *dirty = false;
        }
    }

    /// Whether the provider's pinned node keys were loaded (verification waits for them).
    pub fn pins_loaded(&self, provider: &str) -> bool {
        self.pins.lock().is_ok_and(|p| p.contains_key(provider))
    }

    /// Installs the provider's pinned keys as read from the hub (keys pinned here since,
    /// if any, are kept).
    pub fn load_pins(&self, provider: &str, keys: BTreeMap<String, String>) {
        if let Ok(mut all) = self.pins.lock() {
            let p = all.entry(provider.to_owned()).or_default();
            for (node, key) in keys {
                p.keys.entry(node).or_insert(key);
            }
        }
    }

    /// The provider's pins when some are new since the last save.
    pub fn pins_to_save(&self, provider: &str) -> Option<BTreeMap<String, String>> {
        let all = self.pins.lock().ok()?;
        all.get(provider).filter(|p| p.dirty).map(|p| p.keys.clone())
    }

    /// `saved` is in the hub now.
    pub fn pins_saved(&self, provider: &str, saved: &BTreeMap<String, String>) {
        if let Ok(mut all) = self.pins.lock()
            && let Some(p) = all.get_mut(provider)
            && &p.keys == saved
        {
            p.dirty = false;
        }
    }

    /// Whether the provider's kept verdicts were loaded (verification waits for them).
    pub fn verdicts_loaded(&self, provider: &str) -> bool {
        self.kept.lock().is_ok_and(|k| k.contains_key(provider))
    }

    /// Takes in the provider's verdicts as kept in the hub (`node → record`), as of
    /// `now_ms` ([`verdicts::resume`]); a node this process knows already keeps what it
    /// knows. What became of each record.
    pub fn load_verdicts(
        &self,
        provider: &str,
        records: BTreeMap<String, String>,
        now_ms: u64,
    ) -> Vec<Outcome> {
        let (Ok(mut kept), Ok(mut nodes)) = (self.kept.lock(), self.nodes.lock()) else {
            return Vec::new();
        };
        let fingerprint = verdicts::bands_fingerprint(&self.cfg.bands);
        let rounds = self.rounds();
        let mut outcomes = Vec::with_capacity(records.len());
        for (node, text) in &records {
            let (outcome, resumed) =
                verdicts::resume(text, &fingerprint, &rounds, ms(self.cfg.timeout), now_ms);
            outcomes.push(outcome);
            if let Some(m) = &self.metrics {
                m.challenge_verdicts_restored_total
                    .get_or_create(&crate::metrics::RestoredLabel {
                        outcome: outcome.label(),
                    })
                    .inc();
            }
            let (Some(r), key) = (resumed, (provider.to_owned(), node.clone())) else {
                continue;
            };
            if nodes.contains_key(&key) {
                continue;
            }
            nodes.insert(
                key,
                NodeState {
                    verdicts: r.record.verdicts,
                    verdict_at_ms: Some(r.record.verdict_at_ms),
                    issued_at_ms: r.record.issued_at_ms,
                    proven: r.record.proven,
                    valid_until_ms: r.valid_until_ms,
                    next_due_ms: r.next_due_ms,
                    resumed_due: outcome == verdicts::Outcome::Due,
                    nonce: r.record.nonce,
                    ..NodeState::default()
                },
            );
        }
        kept.insert(provider.to_owned(), records);
        outcomes
    }

    /// The provider's verdict records when they differ from what the hub holds.
    pub fn verdicts_to_save(&self, provider: &str) -> Option<BTreeMap<String, String>> {
        let bands = verdicts::bands_fingerprint(&self.cfg.bands);
        let current: BTreeMap<String, String> = {
            let nodes = self.nodes.lock().ok()?;
            nodes
                .iter()
                .filter(|((p, _), _)| p == provider)
                .filter_map(|((_, n), st)| {
                    let record = Record {
                        bands: bands.clone(),
                        issued_at_ms: st.issued_at_ms,
                        verdict_at_ms: st.verdict_at_ms?,
                        nonce: st.nonce.clone(),
                        verdicts: st.verdicts.clone(),
                        proven: st.proven.clone(),
                    };
                    Some((n.clone(), verdicts::to_text(&record)))
                })
                .collect()
        };
        let kept = self.kept.lock().ok()?;
        (kept.get(provider)? != &current).then_some(current)
    }

    /// `saved` is in the hub now.
    pub fn verdicts_saved(&self, provider: &str, saved: BTreeMap<String, String>) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(provider.to_owned(), saved);
        }
    }
}
