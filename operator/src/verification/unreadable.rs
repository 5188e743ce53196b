//! Kept maps that cannot be read ([`super::store::Error::unreadable`]: a shard missing or
//! another owner's), told where an operator looks. Such a map stays unreadable until
//! someone restores the ConfigMap (docs/trust.md, "A shard missing"), and the provider's
//! verification waits meanwhile: a log line every heartbeat is easy to miss. So it is
//! also counted (`gpufed_verification_unreadable_maps`: providers with one) and told as a
//! Warning Event on the GpuProvider when first found, when another ConfigMap is the cause,
//! and again every [`RETELL_MS`] while it lasts (Events expire after an hour) — not every
//! heartbeat.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Verifier;
use super::store::Error;

/// Reason of the Warning Event on a GpuProvider whose kept map cannot be read.
pub const VERIFICATION_STATE_UNREADABLE: &str = "VerificationStateUnreadable";

/// How often a map that stays unreadable is told again (ms).
pub const RETELL_MS: u64 = 3_600_000;

/// Which map the verifier keeps per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kept {
    /// Pinned node keys ([`super::pins`]).
    Pins,
    /// Verdict records ([`super::verdicts`]).
    Verdicts,
}

impl Kept {
    fn what(self) -> &'static str {
        match self {
            Self::Pins => "pinned node keys",
            Self::Verdicts => "kept verdicts",
        }
    }
}

/// Per provider and map that cannot be read: the ConfigMap that makes it so, and when it
/// was last told (ms).
#[derive(Debug, Default)]
pub struct Unreadable {
    told: Mutex<BTreeMap<(String, Kept), (String, u64)>>,
}

impl Unreadable {
    /// How many providers have a map that cannot be read.
    fn providers(&self) -> usize {
        self.told.lock().map_or(0, |told| {
            let mut names: Vec<&String> = told.keys().map(|(p, _)| p).collect();
            names.dedup();
            names.len()
        })
    }
}

/// The message of the Event on a provider whose `map` cannot be read for `e`.
pub fn message(map: Kept, e: &Error) -> String {
    format!(
        "the {} of this provider cannot be read, so its verification waits (read again every heartbeat) until the ConfigMap is restored: {e}",
        map.what()
    )
}

impl Verifier {
    /// Notes that `provider`'s `map` could not be read for `e` at `now_ms`; the message of
    /// the Event to publish, when one is due. A failure that passes by itself (the API
    /// down) changes nothing.
    pub fn map_unreadable(&self, provider: &str, map: Kept, e: &Error, now_ms: u64) -> Option<String> {
        let configmap = e.unreadable()?;
        let due = {
            let mut told = self.unreadable.told.lock().ok()?;
            let key = (provider.to_owned(), map);
            let due = told
                .get(&key)
                .is_none_or(|(cm, at)| cm != configmap || now_ms.saturating_sub(*at) >= RETELL_MS);
            if due {
                told.insert(key, (configmap.to_owned(), now_ms));
            }
            due
        };
        self.count_unreadable();
        due.then(|| message(map, e))
    }

    /// Notes that `provider`'s `map` was read.
    pub fn map_read(&self, provider: &str, map: Kept) {
        if let Ok(mut told) = self.unreadable.told.lock() {
            told.remove(&(provider.to_owned(), map));
        }
        self.count_unreadable();
    }

    /// How many providers have a kept map that cannot be read.
    pub fn unreadable_providers(&self) -> usize {
        self.unreadable.providers()
    }

    /// Forgets the unreadable maps of the providers `matches` names (gone, or another
    /// term: each is read again then).
    pub(super) fn forget_unreadable(&self, matches: impl Fn(&str) -> bool) {
        if let Ok(mut told) = self.unreadable.told.lock() {
            told.retain(|(p, _), _| !matches(p));
        }
        self.count_unreadable();
    }

    fn count_unreadable(&self) {
        if let Some(m) = &self.metrics {
            m.verification_unreadable_maps
                .set(i64::try_from(self.unreadable.providers()).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "unreadable_tests.rs"]
mod tests;
