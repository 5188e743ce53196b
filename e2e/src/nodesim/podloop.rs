//! The pod loop of the **simulated** kubelet: watches all pods and plays kubelet for those
//! bound to a Ready simulated node (start, readiness, finish, deletion). Readiness that time
//! changes (a probe's first success) is looked at again from a schedule of rechecks; the
//! pods of a node that is Ready again are looked at again too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{NodeState, Shared, lock, pods};
use crate::Result;

/// Pods to look at again, by uid: `(when, namespace, name)`. At most one entry per pod, the
/// earliest wanted.
#[derive(Debug, Default)]
struct Rechecks(HashMap<String, (Instant, String, String)>);

impl Rechecks {
    fn schedule(&mut self, pod: &Pod, at: Instant) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (
            at,
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        match self.0.get(&uid) {
            Some((when, ..)) if *when <= at => {}
            _ => {
                self.0.insert(uid, key);
            }
        }
    }

    fn next(&self) -> Option<Instant> {
        self.0.values().map(|(when, ..)| *when).min()
    }

    /// Removes and returns `(namespace, name)` of the pods due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<(String, String)> {
        let due: Vec<String> = self
            .0
            .iter()
            .filter(|(_, (when, ..))| *when <= now)
            .map(|(uid, _)| uid.clone())
            .collect();
        due.into_iter()
            .filter_map(|uid| self.0.remove(&uid))
            .map(|(_, ns, name)| (ns, name))
            .collect()
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// The pods bound to `node`.
async fn pods_on(client: &Client, node: &str) -> Vec<Pod> {
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    match Api::<Pod>::all(client.clone()).list(&lp).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(%node, error = %e, "simulated kubelet: listing the pods of a node failed");
            Vec::new()
        }
    }
}

pub(super) async fn pod_loop(client: Client, shared: Arc<Shared>, mut back: UnboundedReceiver<String>) {
    let api: Api<Pod> = Api::all(client.clone());
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut timers = JoinSet::new();
    let mut rechecks = Rechecks::default();
    loop {
        let mut pods = Vec::new();
        tokio::select! {
            next = stream.try_next() => match next {
                Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => pods.push(pod),
                // A pod deleted at once (grace period 0) is gone without a last update.
                Ok(Some(watcher::Event::Delete(pod))) => release(&shared, &pod),
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "simulated kubelet: pod watch error (backing off)"),
            },
            Some(node) = back.recv() => pods = pods_on(&client, &node).await,
            () = sleep_until(rechecks.next()) => {
                for (ns, name) in rechecks.take_due(Instant::now()) {
                    match Api::<Pod>::namespaced(client.clone(), &ns).get_opt(&name).await {
                        Ok(Some(pod)) => pods.push(pod),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(%ns, %name, error = %e, "simulated kubelet: pod recheck failed"),
                    }
                }
            }
        }
        for pod in pods {
            if let Err(e) = handle_pod(&client, &shared, &pod, &mut timers, &mut rechecks).await {
                tracing::warn!(pod = ?pod.metadata.name, error = %e, "simulated kubelet: pod update failed");
            }
        }
        while timers.try_join_next().is_some() {}
    }
}

async fn handle_pod(
    client: &Client,
    shared: &Arc<Shared>,
    pod: &Pod,
    timers: &mut JoinSet<()>,
    rechecks: &mut Rechecks,
) -> Result<()> {
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(());
    };
    let Some((NodeState::Ready, host_ip)) = shared.node_state(&node_name) else {
        return Ok(());
    };
    if pod.metadata.deletion_timestamp.is_some() {
        release(shared, pod);
        return pods::finalize_deletion(client, pod).await;
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match pods::phase(pod) {
        "Pending" => {
            if !lock(&shared.started).insert(uid.clone()) {
                return Ok(());
            }
            if let Some(plugin) = shared.plugin(&node_name)
                && let Err(message) = plugin.admit(pod, &shared.resource).await
            {
                return pods::reject(client, pod, &message).await;
            }
            // Tried again a second later when the write fails (a slow or restarting API
            // server), as a kubelet retries its status sync: a bound pod may see no further
            // event, and waiting for one left it Pending forever.
            if let Err(e) = pods::mark_running(client, pod, &host_ip, &shared.pod_ip()).await {
                lock(&shared.started).remove(&uid);
                rechecks.schedule(pod, Instant::now() + Duration::from_secs(1));
                return Err(e);
            }
        }
        "Running" => {
            if let Some(code) = pods::requested_exit(pod) {
                return pods::mark_finished(client, pod, code).await;
            }
            if let Some(secs) = pods::run_seconds(pod)
                && lock(&shared.timed).insert(uid)
            {
                finish_later(client, shared, pod, secs, timers);
            }
            if let Some(wait) = pods::sync_readiness(client, pod).await? {
                // A little late rather than early: the start time has whole seconds.
                rechecks.schedule(pod, Instant::now() + wait + Duration::from_millis(50));
            }
        }
        _ => release(shared, pod), // Succeeded or Failed: its containers hold no GPU
    }
    Ok(())
}

/// The pod's GPUs leave kubelet's PodResources (if a device plugin runs on its node).
fn release(shared: &Shared, pod: &Pod) {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if let Some(plugin) = node.and_then(|n| shared.plugin(n)) {
        plugin.release(
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
        );
    }
}

/// Finishes `pod` (exit code 0) `secs` seconds after it started, unless it ended before.
/// Only while its node's kubelet runs (the node Ready): a kubelet that is down or cut off
/// writes nothing, so a job on an unreachable node must not "succeed" there (that hid the
/// operator's failover and billing of lost nodes). The completion waits for the node.
fn finish_later(client: &Client, shared: &Arc<Shared>, pod: &Pod, secs: u64, timers: &mut JoinSet<()>) {
    let elapsed = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t.0)
                .as_secs()
                .max(0)
        })
        .unwrap_or(0);
    let wait = Duration::from_secs(secs.saturating_sub(u64::try_from(elapsed).unwrap_or(0)));
    let (client, shared, pod) = (client.clone(), shared.clone(), pod.clone());
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    timers.spawn(async move {
        tokio::time::sleep(wait).await;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // Retried until written or moot, as a kubelet retries its status updates: a
        // completion due while the API server restarts left the pod Running forever.
        // While the node's kubelet is down it is only put off (checked again every second);
        // a node deleted (or no longer simulated) ends it: its pods are the pod GC's.
        // Only this pod (same uid) and only while it is not being deleted: a pod of the
        // same name made since, or one terminating, is not this run's to finish.
        let uid = pod.metadata.uid.clone();
        loop {
            match shared.node_state(&node) {
                Some((NodeState::Ready, _)) => {}
                None | Some((NodeState::Deleted, _)) => return,
                Some(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let result = match api.get_opt(&name).await {
                Ok(Some(fresh))
                    if pods::phase(&fresh) == "Running"
                        && fresh.metadata.uid == uid
                        && fresh.metadata.deletion_timestamp.is_none() =>
                {
                    pods::mark_finished(&client, &fresh, 0).await
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(()) => return,
                Err(e) => tracing::warn!(%ns, %name, error = %e, "simulated completion failed; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": format!("p-{uid}"), "namespace": "ns", "uid": uid },
        }))
        .expect("pod")
    }

    #[test]
    fn rechecks_keep_the_earliest_per_pod_and_hand_out_only_due_ones() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Rechecks::default();
        assert_eq!(r.next(), None);
        r.schedule(&pod("a"), t0 + 3 * s);
        r.schedule(&pod("a"), t0 + 5 * s);
        r.schedule(&pod("b"), t0 + 4 * s);
        assert_eq!(r.next(), Some(t0 + 3 * s));
        r.schedule(&pod("a"), t0 + 2 * s);
        assert_eq!(r.next(), Some(t0 + 2 * s));
        assert!(r.take_due(t0 + s).is_empty());
        assert_eq!(r.take_due(t0 + 3 * s), vec![("ns".to_owned(), "p-a".to_owned())]);
        assert_eq!(r.next(), Some(t0 + 4 * s));
        assert_eq!(r.take_due(t0 + 9 * s), vec![("ns".to_owned(), "p-b".to_owned())]);
        assert_eq!(r.next(), None);
    }
}
