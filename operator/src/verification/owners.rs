//! Which provider the verifier's state belongs to. Everything this process learns of a
//! provider — pinned node keys, sessions and verdicts, kept records, uptime, outcomes —
//! is keyed by its name, but a name is not an identity: a GpuProvider deleted and created
//! again under the same name is another provider (its ConfigMaps in the hub went with the
//! old one). Its nodes may have been reinstalled with new keys, which the old pins would
//! refuse for good ("node key changed"), and the old verdicts would count for GPUs nobody
//! challenged. So the state is bound to the provider's UID, and forgotten when the UID
//! changes or the provider is gone.

use super::Verifier;

impl Verifier {
    /// Binds what this process knows of `provider` to `uid`: when it was learned under
    /// another UID, it is forgotten first. Whether something was forgotten.
    pub fn adopt(&self, provider: &str, uid: &str) -> bool {
        let Ok(mut owners) = self.owners.lock() else {
            return false;
        };
        match owners.insert(provider.to_owned(), uid.to_owned()) {
            Some(old) if old != uid => {
                drop(owners);
                self.forget_where(|p| p == provider);
                true
            }
            _ => false,
        }
    }

    /// Forgets the providers gone since: those for which `present(name, uid)` is false.
    /// Runs at most once per `every_ms` (the callers are per-provider reconciles); the
    /// names forgotten.
    pub fn retain_providers(
        &self,
        now_ms: u64,
        every_ms: u64,
        present: impl Fn(&str, &str) -> bool,
    ) -> Vec<String> {
        use std::sync::atomic::Ordering;
        let last = self.swept_ms.load(Ordering::SeqCst);
        if now_ms.saturating_sub(last) < every_ms
            || self
                .swept_ms
                .compare_exchange(last, now_ms, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return Vec::new();
        }
        let gone: Vec<String> = self
            .owners
            .lock()
            .map(|mut owners| {
                let gone: Vec<String> = owners
                    .iter()
                    .filter(|(p, uid)| !present(p, uid))
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in &gone {
                    owners.remove(p);
                }
                gone
            })
            .unwrap_or_default();
        if !gone.is_empty() {
            self.forget_where(|p| gone.iter().any(|g| g == p));
        }
        gone
    }

    /// Drops every piece of state of the providers `matches` names. Outcomes not saved
    /// are dropped too: their ledger went with the provider.
    fn forget_where(&self, matches: impl Fn(&str) -> bool) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.retain(|(p, _), _| !matches(p));
        }
        if let Ok(mut checked) = self.evidence_checked.lock() {
            checked.retain(|(p, _), _| !matches(p));
        }
        if let Ok(mut uptime) = self.uptime.lock() {
            uptime.retain(|p, _| !matches(p));
        }
        if let Ok(mut pins) = self.pins.lock() {
            pins.retain(|p, _| !matches(p));
        }
        if let Ok(mut kept) = self.kept.lock() {
            kept.retain(|p, _| !matches(p));
        }
        if let Ok(mut outcomes) = self.outcomes.lock() {
            outcomes.retain(|p, _| !matches(p));
        }
        if let Ok(mut pending) = self.outcomes_pending.lock() {
            pending.retain(|p, _| !matches(p));
        }
        self.forget_unreadable(matches);
    }
}
