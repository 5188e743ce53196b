//! The rollout phases of the serving test, on its service `llm` of 2 ready replicas:
//! a new image under `maxSurge: 1`, a rollout that never gets ready reported stuck,
//! `rollout undo`'s patch and the revision history it renumbers and prunes, and a
//! template change held by `spec.paused`, rolled once resumed under `minReadySeconds`.

use std::net::SocketAddr;
use std::time::Duration;

use gpufed_api::ComputeService;
use gpufed_api::serving::LABEL_SERVICE;
use gpufed_e2e::nodesim::READY_ANNOTATION;
use gpufed_operator::service::build::LABEL_REVISION;
use gpufed_operator::service::history;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::{hub_endpoints, live_replicas_peak, manifest, numbers, service_revisions, status, until};
use crate::opsupport;

const MINUTE: Duration = Duration::from_secs(60);

/// A rollout held to one extra replica, then one that never gets ready, reported stuck
/// while the last good image serves; what the hub Service routes to meanwhile.
pub async fn surge_then_stall(hub: &Client, ns: &str, admin: SocketAddr) -> Vec<String> {
    let services: Api<ComputeService> = Api::namespaced(hub.clone(), ns);
    let jobs: Api<gpufed_api::ComputeJob> = Api::namespaced(hub.clone(), ns);
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
    let rolled = until(hub, ns, "rolled out to the new image", 3 * MINUTE, |s| {
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
    let told = opsupport::kind_events_until(hub, ns, "ComputeService", "llm", &reasons).await;
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
    let served = hub_endpoints(hub, ns).await;
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
    let stuck = until(hub, ns, "the stuck rollout reported", MINUTE, |s| {
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
    assert_eq!(hub_endpoints(hub, ns).await, served, "the old image still serves");
    let told =
        opsupport::kind_events_until(hub, ns, "ComputeService", "llm", &["ProgressDeadlineExceeded"]).await;
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
    assert_eq!(st.revision, Some(3), "{st:?}");
    served
}

/// `rollout undo` back to revision 2 of the stalled service (serving `served`), the
/// history pruned to its limit, then a template change paused and resumed.
pub async fn undo_then_pause(hub: &Client, ns: &str, served: &[String]) {
    let services: Api<ComputeService> = Api::namespaced(hub.clone(), ns);
    let jobs: Api<gpufed_api::ComputeJob> = Api::namespaced(hub.clone(), ns);
    // `kubectl gpufed rollout undo`: the history holds the three templates (the first,
    // vllm:2, the stuck vllm:3) as ControllerRevisions; the previous one is put back with
    // the plugin's own JSON patch.
    let revisions: Api<ControllerRevision> = Api::namespaced(hub.clone(), ns);
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
    let back = until(hub, ns, "back on the good image, not stalled", 2 * MINUTE, |s| {
        let st = status(s);
        st.observed_generation == s.metadata.generation
            && gpufed_api::conditions::is_true(&st.conditions, "Ready")
            && gpufed_api::conditions::find(&st.conditions, "Stalled").is_none()
            && st.replica_status.len() == 2
    })
    .await;
    assert_eq!(status(&back).progress, None);
    assert_eq!(hub_endpoints(hub, ns).await, served, "the same two replicas");
    // The good template is current again: its revision renumbered 4, not recorded twice;
    // the serving replicas are of it.
    assert_eq!(status(&back).revision, Some(4));
    let reasons = ["RevisionRecorded", "RolledBack"];
    let told = opsupport::kind_events_until(hub, ns, "ComputeService", "llm", &reasons).await;
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
    let held = until(hub, ns, "the change held by the pause", MINUTE, |s| {
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
    // The rollback was told once, though rounds ran on caches that had not yet seen its
    // renumbering (the renumbering is fenced by the revision's resourceVersion).
    let told = opsupport::kind_events_until(hub, ns, "ComputeService", "llm", &["RolledBack"]).await;
    let rollbacks = told.iter().filter(|(_, r, _)| r == "RolledBack").count();
    assert_eq!(rollbacks, 1, "{told:?}");
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
}
