//! Serving end to end on real API servers and the real scheduler (GPU nodes SIMULATED,
//! pod readiness reported by the simulated kubelet from the readiness probe): a
//! ComputeService's replicas spread over two providers, their endpoints and readiness in
//! status and behind one hub Service, a provider cut off and its replica replaced
//! elsewhere, `kubectl scale` up and down, usage per replica, a rollout of a new image
//! held to one extra replica (`rollout.maxSurge: 1`), a rollout that never gets ready
//! reported stuck after `progressDeadlineSeconds` while the old image serves, rolled back
//! with `rollout undo`'s patch (the revision history renumbered and pruned), a template
//! change held by `spec.paused` and rolled once resumed (under `minReadySeconds`), and
//! deletion.

mod common;
mod opsupport;

use std::process::Command;
use std::time::Duration;

use gpufed_api::ComputeService;
use gpufed_api::serving::LABEL_SERVICE;
use gpufed_e2e::nodesim::READY_ANNOTATION;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use gpufed_operator::service::build::LABEL_REVISION;
use gpufed_operator::service::history;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use opsupport::{Operator, object_until};
use rustix::process::Signal;

const MINUTE: Duration = Duration::from_secs(60);

fn manifest(replicas: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm"},
        "spec": {"replicas": replicas, "gpusPerReplica": 1, "maxPricePerGpuHour": "1.00",
                 "port": {"port": 8000, "type": "NodePort"},
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 2},
                 "placement": {"verifiedOnly": false},
                 "template": {"spec": {"containers": [{"name": "server", "image": "registry.example.com/vllm:1"}]}}}
    })
}

/// The service `llm`'s ControllerRevisions (its revision history).
async fn service_revisions(api: &Api<ControllerRevision>) -> Vec<ControllerRevision> {
    let selector = format!("{LABEL_SERVICE}=llm");
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("revisions")
        .items
}

/// Revision numbers, in order.
fn numbers(revs: &[ControllerRevision]) -> Vec<i64> {
    let mut n: Vec<i64> = revs.iter().map(|r| r.revision).collect();
    n.sort_unstable();
    n
}

fn status(s: &ComputeService) -> gpufed_api::ComputeServiceStatus {
    s.status.clone().unwrap_or_default()
}

/// Ready replicas per provider, sorted.
fn ready_on(s: &ComputeService) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in status(s).replica_status.iter().filter(|r| r.ready) {
        *counts.entry(r.provider.clone().unwrap_or_default()).or_default() += 1;
    }
    counts.into_iter().collect()
}

async fn until(
    hub: &Client,
    ns: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ComputeService) -> bool,
) -> ComputeService {
    object_until(hub, ns, "llm", what, timeout, pred).await
}

/// The addresses behind the hub Service.
async fn hub_endpoints(hub: &Client, ns: &str) -> Vec<String> {
    let ep = Api::<Endpoints>::namespaced(hub.clone(), ns)
        .get_opt("llm")
        .await
        .expect("endpoints readable");
    let mut out: Vec<String> = ep
        .and_then(|e| e.subsets)
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let port = s.ports.as_ref().and_then(|p| p.first()).map_or(0, |p| p.port);
            s.addresses
                .unwrap_or_default()
                .into_iter()
                .map(move |a| format!("{}:{port}", a.ip))
        })
        .collect();
    out.sort();
    out
}

fn ready_addresses(s: &ComputeService) -> Vec<String> {
    let mut a: Vec<String> = status(s)
        .replica_status
        .iter()
        .filter(|r| r.ready)
        .filter_map(|r| r.address.clone())
        .collect();
    a.sort();
    a
}

fn kubectl_scale(kubeconfig: &std::path::Path, ns: &str, replicas: u32) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns, "scale", "computeservice/llm"])
        .arg(format!("--replicas={replicas}"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl scale failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The running serving pod of a replica in a member.
async fn serving_pod(member: &Client, replica: &str) -> Pod {
    let pods = Api::<Pod>::all(member.clone())
        .list(&ListParams::default().labels(&format!("gpufed.io/job-name={replica}")))
        .await
        .expect("pods");
    pods.items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .expect("the replica's pod")
}

/// The most replica jobs live at once (not retired, not finished, not deleted), sampled
/// every 100 ms until `done`.
async fn live_replicas_peak(
    jobs: Api<gpufed_api::ComputeJob>,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> usize {
    use gpufed_api::job_status::JobPhase;
    let selector = ListParams::default().labels(&format!("{LABEL_SERVICE}=llm"));
    let mut peak = 0;
    while !*done.borrow() {
        if let Ok(list) = jobs.list(&selector).await {
            let live = list
                .items
                .iter()
                .filter(|j| !j.spec.suspend && j.metadata.deletion_timestamp.is_none())
                .filter(|j| {
                    !matches!(
                        j.status.as_ref().and_then(|s| s.phase),
                        Some(JobPhase::Succeeded | JobPhase::Failed)
                    )
                })
                .count();
            peak = peak.max(live);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), done.changed()).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_serve_fail_over_scale_and_are_metered() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("serving")
        .member("provider-a", vec![GpuPool::rtx4090("a-rtx", 3)])
        .member("provider-b", vec![GpuPool::rtx4090("b-rtx", 3)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    // Equal prices: only the spread preference splits the replicas.
    opsupport::setup(fed, &hub, &[("provider-a", "0.40"), ("provider-b", "0.40")]).await;
    let admin = opsupport::free_admin_addr();
    let operator = Operator::start_with(hub.clone(), "op-1", &["--admin-addr".into(), admin.to_string()]);
    opsupport::providers_ready(&hub, 2).await;
    let ns = common::namespace(&hub, "serve").await;
    let services: Api<ComputeService> = Api::namespaced(hub.clone(), &ns);
    services
        .patch(
            "llm",
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(manifest(3)),
        )
        .await
        .expect("service applies");

    // 3 replicas, spread 2 + 1, ready only once the probe passes; endpoints in status and
    // behind the hub Service.
    let up = until(&hub, &ns, "3 replicas ready", 2 * MINUTE, |s| {
        status(s).ready_replicas == 3
    })
    .await;
    let spread: Vec<usize> = ready_on(&up).iter().map(|(_, n)| *n).collect();
    assert_eq!(spread.len(), 2, "both providers serve: {:?}", ready_on(&up));
    assert_eq!(spread.iter().sum::<usize>(), 3);
    let st = status(&up);
    assert_eq!(st.address.as_deref(), Some(format!("llm.{ns}.svc:8000").as_str()));
    assert!(gpufed_api::conditions::is_true(&st.conditions, "Ready"));
    for r in &st.replica_status {
        let addr = r.address.as_deref().expect("address");
        let port: u16 = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("host:port");
        assert!(
            (30000..=32767).contains(&port),
            "a node port the member allocated: {addr}"
        );
    }
    let want = ready_addresses(&up);
    gpufed_e2e::wait::until("hub Endpoints list the 3 ready replicas", MINUTE, || async {
        Ok((hub_endpoints(&hub, &ns).await == want).then_some(()))
    })
    .await
    .expect("hub endpoints");
    let routed = until(&hub, &ns, "Routed", MINUTE, |s| {
        gpufed_api::conditions::is_true(&status(s).conditions, "Routed")
    })
    .await;
    let routed = status(&routed);
    let c = gpufed_api::conditions::find(&routed.conditions, "Routed").expect("Routed");
    assert_eq!(c.reason, "Routed");
    let hub_svc = Api::<Service>::namespaced(hub.clone(), &ns)
        .get("llm")
        .await
        .expect("hub Service");
    assert!(
        hub_svc.spec.and_then(|s| s.selector).is_none(),
        "endpoints are ours"
    );

    // Readiness is the pod's: its probe failing (as the kubelet reports it) takes the
    // replica out of the hub's endpoints; passing again brings it back.
    let lone = ready_on(&up)
        .into_iter()
        .find(|(_, n)| *n == 1)
        .expect("the provider with one")
        .0;
    let other = if lone == "provider-a" {
        "provider-b"
    } else {
        "provider-a"
    };
    let lone_replica = st
        .replica_status
        .iter()
        .find(|r| r.provider.as_deref() == Some(lone.as_str()))
        .expect("replica")
        .clone();
    let member = env.member_client(&lone).await.expect("member");
    let pod = serving_pod(&member, &lone_replica.name).await;
    let pods: Api<Pod> = Api::namespaced(member.clone(), pod.metadata.namespace.as_deref().expect("ns"));
    let set_ready = |v: &str| serde_json::json!({"metadata": {"annotations": {READY_ANNOTATION: v}}});
    let pod_name = pod.metadata.name.clone().expect("name");
    pods.patch(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(set_ready("false")),
    )
    .await
    .expect("annotate");
    let down = until(&hub, &ns, "the probed-out replica not ready", MINUTE, |s| {
        status(s).ready_replicas == 2
    })
    .await;
    assert!(!gpufed_api::conditions::is_true(
        &status(&down).conditions,
        "Ready"
    ));
    let addr = lone_replica.address.clone().expect("address");
    gpufed_e2e::wait::until("hub Endpoints drop it", MINUTE, || async {
        Ok((!hub_endpoints(&hub, &ns).await.contains(&addr)).then_some(()))
    })
    .await
    .expect("dropped from endpoints");
    pods.patch(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(set_ready("true")),
    )
    .await
    .expect("annotate");
    until(&hub, &ns, "ready again", MINUTE, |s| {
        status(s).ready_replicas == 3
    })
    .await;

    // The lone replica's provider is cut off: its replica fails over to the other one.
    let apiserver = fed
        .cluster(&lone)
        .expect("cluster")
        .processes()
        .into_iter()
        .find(|p| p.name.ends_with("kube-apiserver"))
        .expect("apiserver process");
    assert!(apiserver.signal(Signal::STOP), "freeze {lone}");
    let moved = until(
        &hub,
        &ns,
        "replica replaced on the other provider",
        2 * MINUTE,
        |s| status(s).ready_replicas == 3 && ready_on(s) == [(other.to_owned(), 3)],
    )
    .await;
    let replaced = status(&moved)
        .replica_status
        .into_iter()
        .find(|r| r.name == lone_replica.name)
        .expect("same replica, new attempt");
    assert_eq!(
        replaced.provider.as_deref(),
        Some(other),
        "status shows the new provider"
    );
    assert!(replaced.address.is_some(), "and its new endpoint");
    assert!(apiserver.signal(Signal::CONT), "thaw {lone}");

    // kubectl scale through the scale subresource: up to 5, then down to 2.
    let kubeconfig = fed.hub().kubeconfig().to_path_buf();
    kubectl_scale(&kubeconfig, &ns, 5);
    let five = until(&hub, &ns, "5 replicas ready", 2 * MINUTE, |s| {
        status(s).ready_replicas == 5 && status(s).replicas == 5
    })
    .await;
    // 3 GPUs each: the 3 replicas moved to `other` stay, the 2 new ones go to `lone`.
    let mut on = ready_on(&five);
    on.sort_by_key(|(_, n)| *n);
    assert_eq!(on, [(lone.clone(), 2), (other.to_owned(), 3)]);
    kubectl_scale(&kubeconfig, &ns, 2);
    let two = until(
        &hub,
        &ns,
        "scaled down to 2, retired replicas gone",
        2 * MINUTE,
        |s| {
            let st = status(s);
            st.ready_replicas == 2 && st.replicas == 2 && st.replica_status.len() == 2
        },
    )
    .await;
    // Retired from the most crowded provider first: one replica on each stays (retiring
    // the newest three — both on `lone`, one on `other` — would have left two on `other`).
    let on: Vec<usize> = ready_on(&two).iter().map(|(_, n)| *n).collect();
    assert_eq!(on, [1, 1], "{:?}", ready_on(&two));
    let jobs: Api<gpufed_api::ComputeJob> = Api::namespaced(hub.clone(), &ns);
    let left = jobs
        .list(&ListParams::default().labels(&format!("{LABEL_SERVICE}=llm")))
        .await
        .expect("replica jobs");
    assert_eq!(left.items.len(), 2, "retired replica jobs deleted");

    // Usage per replica: each replica's own job meters its serving time; the service
    // sums them.
    let st = status(&two);
    for r in &st.replica_status {
        assert!(r.gpu_seconds > 0, "replica {} metered: {r:?}", r.name);
    }
    let per_job: u64 = left
        .items
        .iter()
        .map(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.usage.as_ref())
                .map_or(0, |u| u.gpu_seconds)
        })
        .sum();
    assert!(per_job > 0);
    assert!(st.usage.as_ref().is_some_and(|u| u.gpu_seconds > 0));
    gpufed_e2e::wait::until("hub Endpoints follow the scale", MINUTE, || async {
        Ok((hub_endpoints(&hub, &ns).await.len() == 2).then_some(()))
    })
    .await
    .expect("2 endpoints");

    // A rollout bounded to one extra replica: a new image under `maxSurge: 1` never has
    // more than 3 replicas live at once (the default would start 2 new ones beside the 2
    // old), and ends with both replicas on the new revision, ready.
    let mut v2 = manifest(2);
    v2["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/vllm:2".into();
    v2["spec"]["rollout"] = serde_json::json!({"maxSurge": 1, "maxUnavailable": 0});
    let (done, done_rx) = tokio::sync::watch::channel(false);
    let peak = tokio::spawn(live_replicas_peak(jobs.clone(), done_rx));
    services
        .patch(
            "llm",
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(&v2),
        )
        .await
        .expect("new image applies");
    let rolled = until(&hub, &ns, "rolled out to the new image", 3 * MINUTE, |s| {
        let st = status(s);
        st.observed_generation == s.metadata.generation
            && st.updated_replicas == 2
            && st.ready_replicas == 2
            && st.replica_status.len() == 2
    })
    .await;
    done.send(true).expect("peak watcher");
    let peak = peak.await.expect("peak watcher");
    assert_eq!(
        peak, 3,
        "maxSurge 1: one replica above 2 at most, and one was needed"
    );
    assert!(gpufed_api::conditions::is_true(
        &status(&rolled).conditions,
        "Ready"
    ));
    let images: Vec<String> = jobs
        .list(&ListParams::default().labels(&format!("{LABEL_SERVICE}=llm")))
        .await
        .expect("replica jobs")
        .items
        .iter()
        .map(|j| {
            let first = j.spec.template.spec.containers.first();
            first
                .and_then(|c| c.0.get("image"))
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(images.len(), 2);
    assert!(images.iter().all(|i| i.contains("vllm:2")), "{images:?}");
    // `kubectl describe csvc` tells the rollout: replicas created, retired, deleted.
    let reasons = ["ReplicaCreated", "ReplicaRetiring", "ReplicaDeleted"];
    let told = opsupport::kind_events_until(&hub, &ns, "ComputeService", "llm", &reasons).await;
    assert!(
        told.iter().all(|(t, _, _)| t == "Normal"),
        "nothing to warn about yet: {told:?}"
    );
    assert!(
        told.iter()
            .any(|(_, r, note)| r == "ReplicaRetiring" && note.contains("(revision ")),
        "{told:?}"
    );

    // A rollout that never gets ready (its probe fails) is reported stuck once
    // `progressDeadlineSeconds` pass without progress: `Stalled=ProgressDeadlineExceeded`
    // naming the waiting replica, `Reconciling` gone (kstatus: Failed), while the two
    // replicas of the last good image keep serving behind the hub Service. Applying the
    // good image again ends the rollout and clears it.
    let served = hub_endpoints(&hub, &ns).await;
    assert_eq!(served.len(), 2, "{served:?}");
    let mut v3 = v2.clone();
    v3["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/vllm:3".into();
    v3["spec"]["template"]["metadata"] = serde_json::json!({"annotations": {READY_ANNOTATION: "false"}});
    v3["spec"]["rollout"]["progressDeadlineSeconds"] = 10.into();
    let pp = PatchParams::apply("gpufed-e2e").force();
    services
        .patch("llm", &pp, &Patch::Apply(v3))
        .await
        .expect("a never-ready image applies");
    let stuck = until(&hub, &ns, "the stuck rollout reported", MINUTE, |s| {
        let st = status(s);
        st.observed_generation == s.metadata.generation
            && gpufed_api::conditions::is_true(&st.conditions, "Stalled")
    })
    .await;
    let st = status(&stuck);
    let c = gpufed_api::conditions::find(&st.conditions, "Stalled").expect("Stalled");
    assert_eq!(c.reason, "ProgressDeadlineExceeded", "{c:?}");
    assert!(
        c.message.contains("(10s)") && c.message.contains("replica llm-"),
        "{}",
        c.message
    );
    let health =
        gpufed_api::conditions::health(stuck.metadata.generation, st.observed_generation, &st.conditions);
    assert_eq!(health, gpufed_api::conditions::Health::Failed);
    assert_eq!((st.ready_replicas, st.updated_replicas), (2, 1), "{st:?}");
    assert_eq!(
        hub_endpoints(&hub, &ns).await,
        served,
        "the old image still serves"
    );
    let told =
        opsupport::kind_events_until(&hub, &ns, "ComputeService", "llm", &["ProgressDeadlineExceeded"]).await;
    let warned = told
        .iter()
        .filter(|(t, r, _)| t == "Warning" && r == "ProgressDeadlineExceeded");
    assert_eq!(warned.count(), 1, "{told:?}");
    // And counted once, for alerts; replicas created and retired so far counted too.
    let metrics = opsupport::reqwest_metrics(admin).await;
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(
        value(r#"gpufed_service_stalls_total{reason="ProgressDeadlineExceeded"}"#),
        1
    );
    assert!(value("gpufed_service_replicas_created_total") >= 6, "{metrics}");
    assert!(value("gpufed_service_replicas_retired_total") >= 3, "{metrics}");
    // `kubectl gpufed rollout undo`: the history holds the three templates (the first,
    // vllm:2, the stuck vllm:3) as ControllerRevisions; the previous one is put back with
    // the plugin's own JSON patch.
    assert_eq!(st.revision, Some(3), "{st:?}");
    let revisions: Api<ControllerRevision> = Api::namespaced(hub.clone(), &ns);
    let recorded = service_revisions(&revisions).await;
    assert_eq!(numbers(&recorded), [1, 2, 3]);
    let two = recorded.iter().find(|r| r.revision == 2).expect("revision 2");
    let good = history::hash_of(two).expect("hash").to_owned();
    let now = services.get("llm").await.expect("service");
    let template = history::stored_template(two).expect("template");
    let ops = history::rollback_patch(&now, template).expect("a change");
    let ops: json_patch::Patch = serde_json::from_value(ops).expect("JSON patch");
    services
        .patch("llm", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .expect("the good image put back");
    let back = until(
        &hub,
        &ns,
        "back on the good image, not stalled",
        2 * MINUTE,
        |s| {
            let st = status(s);
            st.observed_generation == s.metadata.generation
                && gpufed_api::conditions::is_true(&st.conditions, "Ready")
                && gpufed_api::conditions::find(&st.conditions, "Stalled").is_none()
                && st.replica_status.len() == 2
        },
    )
    .await;
    assert_eq!(status(&back).progress, None);
    assert_eq!(hub_endpoints(&hub, &ns).await, served, "the same two replicas");
    // The good template is current again: its revision renumbered 4, not recorded twice;
    // the serving replicas are of it.
    assert_eq!(status(&back).revision, Some(4));
    let reasons = ["RevisionRecorded", "RolledBack"];
    let told = opsupport::kind_events_until(&hub, &ns, "ComputeService", "llm", &reasons).await;
    let rolled_back = format!("template {good} of revision 2 is current again, as revision 4");
    assert!(
        told.iter()
            .any(|(t, r, note)| t == "Normal" && r == "RolledBack" && note.contains(&rolled_back)),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|(_, r, note)| r == "RevisionRecorded" && note.ends_with("recorded as revision 3")),
        "{told:?}"
    );
    let after = service_revisions(&revisions).await;
    assert_eq!(numbers(&after), [1, 3, 4]);
    let four = after.iter().find(|r| r.revision == 4).expect("revision 4");
    assert_eq!(history::hash_of(four), Some(good.as_str()));
    let serving = status(&back).replica_status;
    let live = jobs
        .list(&ListParams::default())
        .await
        .expect("replica jobs")
        .items;
    for r in &serving {
        let job = live
            .iter()
            .find(|j| j.metadata.name.as_ref() == Some(&r.name))
            .expect("job");
        assert_eq!(job.labels().get(LABEL_REVISION), Some(&good), "{}", r.name);
    }
    // revisionHistoryLimit 1: the oldest revision goes, the newest old one stays.
    let limit = serde_json::json!({"spec": {"revisionHistoryLimit": 1}});
    services
        .patch("llm", &PatchParams::default(), &Patch::Merge(&limit))
        .await
        .expect("history limit");
    gpufed_e2e::wait::until("revision 1 pruned", MINUTE, || async {
        let left = numbers(&service_revisions(&revisions).await);
        Ok((left == [3, 4]).then_some(()))
    })
    .await
    .expect("pruned to the limit");

    // Paused: a template change is neither rolled out nor recorded, the service reads
    // Ready=False Paused (not stuck, though the deadline is 10 s); resumed, it rolls.
    let pause = |on: bool| serde_json::json!({"spec": {"paused": on}});
    services
        .patch("llm", &PatchParams::default(), &Patch::Merge(&pause(true)))
        .await
        .expect("pause");
    let restarted =
        serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"restartedAt": "e2e"}}}}});
    services
        .patch("llm", &PatchParams::default(), &Patch::Merge(&restarted))
        .await
        .expect("a template change while paused");
    let held = until(&hub, &ns, "the change held by the pause", MINUTE, |s| {
        let st = status(s);
        let ready = gpufed_api::conditions::find(&st.conditions, "Ready");
        st.observed_generation == s.metadata.generation && ready.is_some_and(|c| c.reason == "Paused")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let held_later = services.get("llm").await.expect("service");
    for s in [&held, &held_later] {
        let st = status(s);
        assert_eq!(
            (st.revision, st.updated_replicas, st.ready_replicas),
            (Some(4), 0, 2),
            "{st:?}"
        );
        assert!(
            !gpufed_api::conditions::is_true(&st.conditions, "Stalled"),
            "{st:?}"
        );
        assert!(st.replica_status.iter().all(|r| r.phase != "Retiring"), "{st:?}");
    }
    assert_eq!(numbers(&service_revisions(&revisions).await), [3, 4]);
    let live = jobs
        .list(&ListParams::default())
        .await
        .expect("replica jobs")
        .items;
    assert!(live.iter().all(|j| j.labels().get(LABEL_REVISION) == Some(&good)));
    // Resumed with minReadySeconds 3: each new replica is ready a while before it counts
    // as available (and before an old one retires for it); a 200 ms sampler sees that.
    let resume = serde_json::json!({"spec": {"paused": false, "minReadySeconds": 3}});
    services
        .patch("llm", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("resume");
    let (mut lag_seen, started) = (false, std::time::Instant::now());
    let resumed = loop {
        let s = services.get("llm").await.expect("service");
        let st = status(&s);
        lag_seen |= st.ready_replicas > st.available_replicas;
        let rolled = st.observed_generation == s.metadata.generation
            && gpufed_api::conditions::is_true(&st.conditions, "Ready")
            && st.updated_replicas == 2
            && st.replica_status.len() == 2;
        if rolled {
            break s;
        }
        assert!(
            started.elapsed() < 2 * MINUTE,
            "not rolled out once resumed: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let st = status(&resumed);
    assert_eq!((st.revision, st.available_replicas), (Some(5), 2), "{st:?}");
    assert!(
        lag_seen,
        "a new replica ready but not yet available was never seen"
    );

    // Down to zero and back: the status must still be written once the last replica is
    // gone (a server-side apply that left the emptied replica list out had the API server
    // store `null`, which its schema then refused on every status write).
    kubectl_scale(&kubeconfig, &ns, 0);
    until(&hub, &ns, "scaled to 0, status written", 2 * MINUTE, |s| {
        let st = status(s);
        st.replicas == 0 && st.replica_status.is_empty() && st.observed_generation == s.metadata.generation
    })
    .await;
    kubectl_scale(&kubeconfig, &ns, 1);
    until(&hub, &ns, "back to 1 ready replica", 2 * MINUTE, |s| {
        status(s).ready_replicas == 1 && status(s).replica_status.len() == 1
    })
    .await;

    // Deletion: replicas stop, the service and its hub Service go.
    services
        .delete("llm", &DeleteParams::default())
        .await
        .expect("delete");
    gpufed_e2e::wait::until("service and replicas gone", 2 * MINUTE, || async {
        let svc = services.get_opt("llm").await?;
        let jobs = jobs.list(&ListParams::default()).await?;
        Ok((svc.is_none() && jobs.items.is_empty()).then_some(()))
    })
    .await
    .expect("deleted");
    operator.stop().await;
}
