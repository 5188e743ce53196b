//! Which pull-mode providers' agent namespaces are prepared, and when to prepare one
//! again.

use std::time::{Duration, Instant};

use super::Members;
use crate::error::{Error, Result};

/// How long a pull-mode provider's prepared agent namespace is trusted while its probes
/// fail before it is prepared again ([`super::Members::recheck_prepared`]).
pub(super) const REPREPARE_AFTER: Duration = Duration::from_secs(60);

/// A pull-mode provider's agent namespace as last prepared.
#[derive(Clone, Debug)]
pub(super) struct Prepared {
    /// The provider's uid and generation it was prepared for.
    pub(super) key: (String, i64),
    /// When.
    pub(super) at: Instant,
    /// A probe failed since: prepare again once [`REPREPARE_AFTER`] has passed (the
    /// namespace, or the report in it, may have been deleted out of band).
    pub(super) recheck: bool,
}

impl Prepared {
    /// Whether `key`'s agent namespace must be prepared (again) at `now`.
    pub(super) fn due(entry: Option<&Prepared>, key: &(String, i64), now: Instant) -> bool {
        match entry {
            Some(p) if &p.key == key => p.recheck && now.saturating_duration_since(p.at) >= REPREPARE_AFTER,
            _ => true,
        }
    }

    /// Whether `entry` is a preparation of `key`'s agent namespace (preparing it now is
    /// doing so again).
    pub(super) fn was_prepared(entry: Option<&Prepared>, key: &(String, i64)) -> bool {
        entry.is_some_and(|p| &p.key == key)
    }
}

/// Whether `e` is the hub failing (5xx, 429, no answer), not refusing (another 4xx).
fn hub_outage(e: &Error) -> bool {
    match e {
        Error::Hub(kube::Error::Api(s)) => s.code >= 500 || s.code == 429,
        Error::Hub(_) => true,
        _ => false,
    }
}

impl Members {
    /// Records how preparing `name`'s agent namespace for `key` went (`ensured`). A failure
    /// to prepare it *again* (a probe failed since) — its namespace stuck terminating, say
    /// (403 for every object in it) — or a refusal (an answer of 4xx, not an outage) of the
    /// first preparation in this process (one before a restart may stand) is logged, and the
    /// link goes on with the namespace as it is: the probe then answers or fails as it
    /// would, a failing provider is counted unreachable and its jobs fail over after the
    /// grace period, and it is prepared again a while later ([`REPREPARE_AFTER`]). Only
    /// the hub failing a first preparation (5xx, 429, no answer) fails the link: nothing is
    /// known of the provider then.
    pub(super) async fn prepared_again(
        &self,
        name: &str,
        key: (String, i64),
        entry: Option<&Prepared>,
        ensured: Result<()>,
    ) -> Result<()> {
        let at = Instant::now();
        let e = match ensured {
            Ok(()) => {
                let prepared = Prepared {
                    key,
                    at,
                    recheck: false,
                };
                self.prepared.write().await.insert(name.to_owned(), prepared);
                return Ok(());
            }
            Err(e) if !Prepared::was_prepared(entry, &key) && hub_outage(&e) => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(provider = name, error = %e,
            "cannot prepare the agent namespace; probing it as it is");
        // Tried again a while later, not at every probe.
        let prepared = Prepared {
            key,
            at,
            recheck: true,
        };
        self.prepared.write().await.insert(name.to_owned(), prepared);
        Ok(())
    }

    /// A pull-mode provider's probe failed: its agent namespace (and the report in it)
    /// may have been deleted out of band, which nothing else would notice — the namespace
    /// is prepared once per generation. The next [`Self::link`] prepares it again, once
    /// it was last prepared a minute ago (so a silent agent costs a few unchanged applies
    /// a minute, not a heartbeat's).
    pub async fn recheck_prepared(&self, provider: &str) {
        if let Some(p) = self.prepared.write().await.get_mut(provider) {
            p.recheck = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_namespace_is_prepared_again_a_while_after_a_probe_failed() {
        let key = ("uid".to_owned(), 2);
        let t0 = Instant::now();
        let entry = |recheck| Prepared {
            key: key.clone(),
            at: t0,
            recheck,
        };
        assert!(Prepared::due(None, &key, t0), "never prepared");
        let other = ("uid".to_owned(), 3);
        assert!(Prepared::due(Some(&entry(false)), &other, t0), "a new generation");
        let later = t0 + REPREPARE_AFTER;
        assert!(
            !Prepared::due(Some(&entry(false)), &key, later + REPREPARE_AFTER),
            "probes answer: prepared once per generation"
        );
        assert!(
            !Prepared::due(Some(&entry(true)), &key, t0 + Duration::from_secs(5)),
            "a probe failed just after preparing: not again at once"
        );
        assert!(
            Prepared::due(Some(&entry(true)), &key, later),
            "a probe failed a while after preparing: the namespace may be gone"
        );
    }
}
