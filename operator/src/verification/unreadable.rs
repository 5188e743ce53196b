//! Kept maps that cannot be read ([`super::store::Error::unreadable`]: a shard missing or
//! another owner's), told where an operator looks. Such a map stays unreadable until
//! someone restores the ConfigMap (docs/trust.md, "A shard missing"), and the provider's
//! verification waits meanwhile: a log line every heartbeat is easy to miss. So it is
//! also counted (`gpufed_verification_unreadable_maps`: providers with one) and told as a
//! Warning Event on the GpuProvider once the same ConfigMap is still the cause
//! [`CONFIRM_MS`] after it was first found (a read that met another leader's save under
//! way passes by itself: no Event asks for a repair then), and again every [`RETELL_MS`]
//! while it lasts (Events expire after an hour) — not every heartbeat.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Verifier;
use super::store::Error;

/// Reason of the Warning Event on a GpuProvider whose kept map cannot be read.
pub const VERIFICATION_STATE_UNREADABLE: &str = "VerificationStateUnreadable";

/// How often a map that stays unreadable is told again (ms).
pub const RETELL_MS: u64 = 3_600_000;
/// How long the same ConfigMap must keep a map unreadable before it is told (ms): longer
/// than a save takes, so that a read which met one is not.
pub const CONFIRM_MS: u64 = 60_000;

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

/// One map that cannot be read: the ConfigMap that makes it so, since when (ms), and when
/// it was last told (ms), if it was.
#[derive(Debug)]
struct Seen {
    configmap: String,
    since: u64,
    told: Option<u64>,
}

/// Per provider and map that cannot be read, what was seen of it.
#[derive(Debug, Default)]
pub struct Unreadable {
    told: Mutex<BTreeMap<(String, Kept), Seen>>,
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
            let seen = told.entry((provider.to_owned(), map)).or_insert_with(|| Seen {
                configmap: configmap.to_owned(),
                since: now_ms,
                told: None,
            });
            if seen.configmap != configmap {
                *seen = Seen {
                    configmap: configmap.to_owned(),
                    since: now_ms,
                    told: None,
                };
            }
            let confirmed = now_ms.saturating_sub(seen.since) >= CONFIRM_MS;
            let due = confirmed && seen.told.is_none_or(|at| now_ms.saturating_sub(at) >= RETELL_MS);
            if due {
                seen.told = Some(now_ms);
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
