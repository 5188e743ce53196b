//! Holds while victims whose attempts ended evicted still have pods on the member.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::ComputeJob;
use gpufed_placement as pl;

use super::super::{Hold, Room, apply};
use super::{BY, batch, cfg, first_round, fleet, h1, urgent};
use crate::mapping::snapshot;
use crate::mapping::tests::provider;

/// `name` after its attempt 1 ended evicted for `urgent` at `ended`, its pods (2 GPUs on
/// `h1`) still in the member unless `removed`; and those pods.
fn ended_victim(name: &str, ended: i64, removed: bool) -> (Arc<ComputeJob>, crate::fleet::GpuPod) {
    let mut j = batch(name, false, false);
    let uid = kube::ResourceExt::uid(j.as_ref()).expect("uid");
    let st = Arc::make_mut(&mut j).status.get_or_insert_with(Default::default);
    st.phase = Some(gpufed_api::job_status::JobPhase::Recovering);
    st.attempts.push(gpufed_api::job_status::AttemptRecord {
        attempt: 1,
        provider: "a".into(),
        outcome: gpufed_api::job_status::AttemptOutcome::Preempted,
        message: format!("evicted for {BY}"),
        reason: None,
        gpu_seconds: 60,
        gpus: Some(2),
        gpu_uuids: Vec::new(),
        running_time: None,
        price_per_gpu_hour: "1".into(),
        end_time: crate::time::format(ended),
        removed,
        preempted_by: Some(BY.into()),
    });
    let pod = crate::fleet::GpuPod {
        node: "h1".into(),
        gpus: 2,
        attempt_key: Some(crate::job::names::attempt_key(&uid, 1)),
        requests: Default::default(),
        extended: Default::default(),
    };
    (j, pod)
}

#[test]
fn a_victim_whose_attempt_ended_but_whose_pods_remain_keeps_the_room_held() {
    // `old`'s attempt ended evicted (its status says so) but its pods are still going:
    // their 2 GPUs are busy. Before, the preemptor stopped waiting then, its hold went,
    // and a round in between gave the free GPUs to other work — which the preemptor
    // evicted too once `old`'s pods were gone.
    let providers = [provider("a", true)];
    let now = crate::time::now();
    let mut holds = first_round();
    let (old, pods) = ended_victim("old", now - 10, false);
    let mut fleet = fleet();
    fleet.get_mut("a").expect("a").pods.push(pods.clone());
    let jobs = [old, batch("young", false, false), urgent()];
    let mut snap = snapshot(&jobs, &providers, &fleet);
    assert!(snap.jobs.iter().all(|j| j.id != BY), "the preemptor still waits");
    assert_eq!(h1(&snap).free.len(), 5, "8 less the foreign pod and `old`'s pods");
    assert_eq!(
        apply(&mut snap, &mut holds, &jobs, &fleet, now),
        5,
        "7 wanted, 2 of them `old`'s pods hold (all 5 free)"
    );
    let d = pl::place(&snap, &cfg()).expect("round");
    assert!(d.placements.is_empty(), "nothing takes the held room: {d:?}");
    assert_eq!(holds.len(), 1);

    // Its pods gone (`removed`), or past the grace period: the preemptor no longer waits.
    for (ended, removed) in [
        (now - 10, true),
        (now - crate::mapping::EVICTION_GRACE_SECS - 5, false),
    ] {
        let (old, _) = ended_victim("old", ended, removed);
        let jobs = [old, batch("young", false, false), urgent()];
        let mut holds = first_round();
        let mut snap = snapshot(&jobs, &providers, &fleet);
        assert!(
            snap.jobs.iter().any(|j| j.id == BY),
            "queued again ({ended}, {removed})"
        );
        assert_eq!(apply(&mut snap, &mut holds, &jobs, &fleet, now), 0);
        assert!(holds.is_empty());
    }
}

#[test]
fn an_ended_victims_pods_count_toward_the_hold_not_on_top_of_it() {
    // A 16-GPU node: 1 GPU foreign, 2 held by `old`'s pods (its attempt ended evicted for
    // `urgent`, the pods are going). `urgent` will take 7 there, 2 of them `old`'s: 5
    // more come off the free GPUs. Before, all 7 did, on top of `old`'s 2 the snapshot
    // counts busy already: 9 withheld for a room of 7.
    let providers = [provider("a", true)];
    let now = crate::time::now();
    let (old, mut pods) = ended_victim("old", now - 10, false);
    pods.requests.cpu_millis = 4_000;
    let mut fleet = fleet();
    let view = fleet.get_mut("a").expect("a");
    view.nodes[0].allocatable = 16;
    view.pods.push(pods);
    let mut holds = BTreeMap::from([(
        BY.to_owned(),
        Hold {
            provider: "a".into(),
            nodes: BTreeMap::from([(
                "h1".to_owned(),
                Room {
                    gpus: 7,
                    resources: pl::Resources {
                        cpu_millis: 8_000,
                        ..pl::Resources::ZERO
                    },
                    ..Default::default()
                },
            )]),
        },
    )]);
    let jobs = [old, urgent()];
    let mut snap = snapshot(&jobs, &providers, &fleet);
    assert!(snap.jobs.iter().all(|j| j.id != BY), "the preemptor still waits");
    assert_eq!(
        h1(&snap).free.len(),
        13,
        "16 less the foreign pod and `old`'s pods"
    );
    assert_eq!(
        apply(&mut snap, &mut holds, &jobs, &fleet, now),
        5,
        "7 less `old`'s 2"
    );
    assert_eq!(
        h1(&snap).free.len(),
        8,
        "16 less the foreign GPU and the room of 7"
    );
    let free = h1(&snap).resources.expect("reported").free;
    assert_eq!(
        free.cpu_millis,
        64_000 - 8_000,
        "the room's CPU, `old`'s pods' part of it counted once"
    );
}

#[test]
fn a_victim_placed_again_while_its_evicted_pods_remain_still_keeps_its_preemptor_waiting() {
    // `old`'s attempt 1 ended evicted, its pods are still going, and `old` has been placed
    // again (live, unmarked). Before, its new placement hid the ended one: the preemptor
    // stopped waiting, its hold went, and it evicted more work for the same room.
    let providers = [provider("a", true)];
    let now = crate::time::now();
    let (ended, pods) = ended_victim("old", now - 10, false);
    let mut again = batch("old", true, false);
    let attempts = ended.status.as_ref().expect("status").attempts.clone();
    Arc::make_mut(&mut again)
        .status
        .get_or_insert_with(Default::default)
        .attempts = attempts;
    let young = batch("young", true, true);
    let marked = crate::mapping::evictions([again.as_ref(), young.as_ref()], now);
    assert_eq!(
        marked.get("team/old"),
        Some(&crate::mapping::Eviction { by: BY, live: false }),
        "its ended attempt, not its new live one, is what the preemptor waits for"
    );
    assert_eq!(
        marked.get("team/young"),
        Some(&crate::mapping::Eviction { by: BY, live: true })
    );
    let mut fleet = fleet();
    fleet.get_mut("a").expect("a").pods.push(pods);
    let jobs = [again, urgent()];
    let mut snap = snapshot(&jobs, &providers, &fleet);
    assert!(snap.jobs.iter().all(|j| j.id != BY), "the preemptor still waits");
    let mut holds = first_round();
    apply(&mut snap, &mut holds, &jobs, &fleet, now);
    assert_eq!(holds.len(), 1, "and keeps its hold");
}
