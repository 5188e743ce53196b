//! A provider's reconcile is woken as soon as one of its nodes publishes a new signed
//! report while the hub waits for one (a challenge is open): in push mode by the hub's
//! watch of the member's nodes ([`crate::member::watch`]), in pull mode by the hub's watch
//! of the agents' report ConfigMaps ([`watch_agent_reports`]; the agent itself reports
//! as soon as its watch of its nodes sees a new report).
//!
//! The hub's clock on a challenge runs from its request to the probe that sees the
//! node's commitment. Polling every `--challenge-poll` adds up to one poll period to every
//! round trip, so the band's slack had to cover it, and the clock proved that much less.
//! With the wake, a commitment is seen within the watches' latency; the poll stays as
//! the fallback for a watch that is not current.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use gpufed_api::GpuProvider;
use gpufed_api::pull::{REPORT_CONFIGMAP, agent_namespace};
use gpufed_trust::allocations;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use gpufed_trust::report::ANNOTATION as REPORT_ANNOTATION;

/// Where a provider to reconcile now is sent: the provider controller's trigger.
pub type ProviderTrigger = UnboundedSender<ObjectRef<GpuProvider>>;

/// Which providers wait for their nodes' reports, and the wakes raised for them.
#[derive(Clone, Default)]
pub struct ReportWakes {
    state: Arc<Mutex<Waiting>>,
    trigger: Option<ProviderTrigger>,
}

#[derive(Default)]
struct Waiting {
    awaited: BTreeSet<String>,
    pending: BTreeSet<String>,
}

impl ReportWakes {
    /// Wakes sent to `trigger` (the provider controller's).
    pub fn new(trigger: ProviderTrigger) -> Self {
        Self {
            state: Arc::default(),
            trigger: Some(trigger),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a change of `provider`'s node reports should wake it (while a challenge of
    /// one of its nodes is open). Not awaited drops a wake not yet taken.
    pub fn await_reports(&self, provider: &str, awaited: bool) {
        let mut w = self.lock();
        if awaited {
            w.awaited.insert(provider.to_owned());
        } else {
            w.awaited.remove(provider);
            w.pending.remove(provider);
        }
    }

    /// A node report of `provider` changed: wakes its reconcile when awaited.
    pub fn report_changed(&self, provider: &str) {
        let mut w = self.lock();
        if w.awaited.contains(provider) {
            self.wake(&mut w, provider);
        }
    }

    /// The agent report in hub namespace `namespace` changed: wakes the awaited pull-mode
    /// provider whose agent namespace that is.
    pub fn agent_report_changed(&self, namespace: &str) {
        let mut w = self.lock();
        let woken: Vec<String> = w
            .awaited
            .iter()
            .filter(|p| agent_namespace(p) == namespace)
            .cloned()
            .collect();
        for provider in woken {
            self.wake(&mut w, &provider);
        }
    }

    /// One wake of `provider` until it is taken.
    fn wake(&self, w: &mut Waiting, provider: &str) {
        if w.pending.insert(provider.to_owned())
            && let Some(t) = &self.trigger
        {
            let _ = t.unbounded_send(ObjectRef::new(provider));
        }
    }

    /// Whether a wake of `provider` is pending; takes it.
    pub fn take(&self, provider: &str) -> bool {
        self.lock().pending.remove(provider)
    }
}

/// Watches the pull-mode agents' reports on the hub (every agent namespace, by name,
/// metadata only: the reports themselves are read by the provider's reconcile) and wakes
/// an awaited provider when its agent writes. Runs until the task is dropped; a failed
/// watch is retried with backoff, the `--challenge-poll` covering the gap.
pub async fn watch_agent_reports(hub: Client, wakes: ReportWakes) {
    let api = Api::<PartialObjectMeta<ConfigMap>>::all(hub);
    let config = watcher::Config::default().fields(&format!("metadata.name={REPORT_CONFIGMAP}"));
    let events = watcher(api, config).backoff(crate::backoff::WatchBackoff::default());
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::Delete(cm)) => {
                if let Some(ns) = cm.meta().namespace.as_deref() {
                    wakes.agent_report_changed(ns);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "watch of the agents' reports interrupted; polling meanwhile")
            }
        }
    }
}

/// What of a node the member watch acts on, remembered by a hash per node (a collision
/// only costs a wake, which the poll makes up for).
#[derive(Default)]
pub struct NodeChanges {
    last: HashMap<String, Seen>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    allocations: u64,
    report: u64,
}

/// What changed on a node since its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// The device plugin's GPU allocations annotation.
    pub allocations: bool,
    /// The signed inventory report.
    pub report: bool,
}

fn hash_of(text: Option<&String>) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl NodeChanges {
    /// Records `node` (a Node, or its metadata) as seen now and says what changed (all of
    /// it at first sight).
    pub fn seen<K: Resource>(&mut self, node: &K) -> Changed {
        let a = node.annotations();
        let now = Seen {
            allocations: hash_of(a.get(allocations::ANNOTATION)),
            report: hash_of(a.get(REPORT_ANNOTATION)),
        };
        let before = self.last.insert(node.name_any(), now);
        Changed {
            allocations: before.is_none_or(|b| b.allocations != now.allocations),
            report: before.is_none_or(|b| b.report != now.report),
        }
    }

    /// Forgets a deleted node.
    pub fn deleted(&mut self, node: &str) {
        self.last.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ObjectMeta;

    fn node(name: &str, report: Option<&str>, allocations: Option<&str>) -> Node {
        let mut a = std::collections::BTreeMap::new();
        if let Some(r) = report {
            a.insert(REPORT_ANNOTATION.to_string(), r.to_string());
        }
        if let Some(x) = allocations {
            a.insert(allocations::ANNOTATION.to_string(), x.to_string());
        }
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(a),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_node_changes_when_its_report_or_its_allocations_do_and_not_on_a_status_update() {
        let mut c = NodeChanges::default();
        let first = c.seen(&node("n1", Some("r1"), None));
        assert!(first.report && first.allocations, "first sight is a change");
        let mut beat = node("n1", Some("r1"), None);
        beat.status = Some(Default::default());
        let same = Changed {
            allocations: false,
            report: false,
        };
        assert_eq!(c.seen(&beat), same, "a kubelet heartbeat changes neither");
        let next = c.seen(&node("n1", Some("r2"), None));
        assert!(next.report && !next.allocations);
        let alloc = c.seen(&node("n1", Some("r2"), Some("{}")));
        assert!(!alloc.report && alloc.allocations);
        assert!(c.seen(&node("n1", None, Some("{}"))).report, "a report removed");
        assert!(
            c.seen(&node("n2", None, Some("{}"))).report,
            "another node is its own"
        );
        c.deleted("n1");
        assert!(
            c.seen(&node("n1", None, Some("{}"))).report,
            "forgotten once deleted"
        );
    }

    #[tokio::test]
    async fn a_changed_report_wakes_its_provider_once_and_only_while_awaited() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let w = ReportWakes::new(tx);
        w.report_changed("p");
        assert!(!w.take("p"), "not awaited: no wake");
        w.await_reports("p", true);
        w.report_changed("p");
        w.report_changed("p");
        w.report_changed("q");
        assert_eq!(rx.next().await, Some(ObjectRef::new("p")));
        assert!(rx.try_recv().is_err(), "one wake until it is taken, none for q");
        assert!(w.take("p"));
        assert!(!w.take("p"), "taken");
        w.report_changed("p");
        assert_eq!(
            rx.next().await,
            Some(ObjectRef::new("p")),
            "woken again after the take"
        );
        w.await_reports("p", false);
        assert!(!w.take("p"), "a pending wake goes with the wait");
    }

    #[tokio::test]
    async fn an_agent_report_wakes_the_awaited_provider_of_its_namespace() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let w = ReportWakes::new(tx);
        w.await_reports("home-rig", true);
        w.agent_report_changed(&agent_namespace("other"));
        w.agent_report_changed("kube-system");
        assert!(rx.try_recv().is_err(), "no other namespace wakes it");
        w.agent_report_changed(&agent_namespace("home-rig"));
        assert_eq!(rx.next().await, Some(ObjectRef::new("home-rig")));
        assert!(w.take("home-rig"));
        w.await_reports("home-rig", false);
        w.agent_report_changed(&agent_namespace("home-rig"));
        assert!(
            !w.take("home-rig"),
            "not awaited: its agent's heartbeats wake nothing"
        );
    }
}
