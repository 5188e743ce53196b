//! Cache readiness that any number of tasks can wait for.
//!
//! kube-runtime's `Store::wait_until_ready` keeps one waker for all its waiters (a
//! oneshot receiver behind a mutex): with several concurrent waiters — the controller's
//! own gate, a reconcile of *another* controller waiting for this cache, the `/readyz`
//! task — only the last to register is woken, and the others wait forever. Found by the
//! operator-settlement e2e test: an operator restarted while another controller's cache
//! was still listing never reconciled a ComputeService again (its first reconcile sat in
//! `jobs.wait_until_ready()`), and `/readyz` never turned ready. So each controller's
//! watch stream reports its own initial listing here, and the store's `DelayedInit` is
//! left to the controller alone.

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Whether a cache has been filled by its first complete listing.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

/// The cache's watch stream ended before its first listing completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cache's watch ended before it was listed")]
pub struct NeverSynced;

impl Synced {
    /// A gate and the switch that opens it.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Whether the first listing has been applied to the cache.
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the first listing has been applied to the cache (at once if it has).
    pub async fn wait(&self) -> Result<(), NeverSynced> {
        let mut rx = self.0.clone();
        rx.wait_for(|s| *s).await.map(|_| ()).map_err(|_| NeverSynced)
    }
}

/// Opens the gate on the first `InitDone`, which the reflector has already applied to
/// the store when the event reaches this point of the stream.
fn report_listed<K, S>(stream: S, tx: watch::Sender<bool>) -> impl Stream<Item = S::Item>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    stream.inspect(move |ev| {
        if matches!(ev, Ok(watcher::Event::InitDone)) && !*tx.borrow() {
            let _ = tx.send(true);
        }
    })
}

/// A cache of `api` (filled by the returned stream, which must be polled: hand it to a
/// controller, e.g. `Controller::owns_stream`), its readiness, and the stream of the
/// objects it applied.
pub fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer): (Store<K>, _) = reflector::store();
    let (tx, synced) = Synced::new();
    let stream = report_listed(watcher(api, cfg).reflect(writer), tx).applied_objects();
    (reader, synced, stream)
}

/// A cache of `api` that no controller drives, its readiness, and the future that
/// fills it (run it until shutdown). Watch errors are retried with kube's default
/// backoff, so a missing permission logs and waits instead of spinning.
pub fn cache<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> (
    Store<K>,
    Synced,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer): (Store<K>, _) = reflector::store();
    let (tx, synced) = Synced::new();
    let stream = report_listed(watcher(api, cfg).default_backoff().reflect(writer), tx);
    let fill = stream.for_each(|ev| {
        if let Err(e) = ev {
            tracing::warn!(error = %e, kind = %K::kind(&()), "cache watch failed; retrying");
        }
        futures::future::ready(())
    });
    (reader, synced, fill)
}

/// A controller for `api` (like `Controller::new`) and its cache's readiness.
pub fn controller<K>(api: Api<K>, cfg: watcher::Config) -> (Controller<K>, Synced)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, synced, trigger) = reflect(api, cfg);
    (Controller::for_stream(trigger, reader), synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[tokio::test]
    async fn every_waiter_is_released_by_the_first_listing_and_later_ones_at_once() {
        let (tx, synced) = Synced::new();
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::<ConfigMap>::Init),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::InitDone),
        ]);
        // Many concurrent waiters: the failure mode of kube-runtime's one-waker gate.
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!synced.is_synced());
        let seen: Vec<_> = report_listed(events, tx).collect().await;
        assert_eq!(seen.len(), 3, "the stream is passed through untouched");
        for w in waiters {
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), w).await;
            assert_eq!(r.expect("released").expect("joined"), Ok(()));
        }
        assert!(synced.is_synced());
        assert_eq!(synced.wait().await, Ok(()));
    }

    #[tokio::test]
    async fn a_watch_that_ends_unlisted_fails_its_waiters_instead_of_hanging() {
        let (tx, synced) = Synced::new();
        let events = futures::stream::iter(vec![Ok(watcher::Event::<ConfigMap>::Init)]);
        let _: Vec<_> = report_listed(events, tx).collect().await;
        assert_eq!(synced.wait().await, Err(NeverSynced));
    }
}
