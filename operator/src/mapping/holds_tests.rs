//! A preemptor's room stays held while its victims leave one by one.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::ComputeJob;
use gpufed_placement as pl;

use super::{Hold, Holds, apply};
use crate::fleet::{CpuMemory, GpuNode, MemberView, NodeCpuMemory};
use crate::mapping::snapshot;
use crate::mapping::tests::{job, provider};

const BY: &str = "team/urgent";
/// A round's time for tests without ended victims (the holds do not depend on it then).
const T: i64 = 1_800_000_000;

/// One H100 node of 8 GPUs, one held by a pod outside gpufed, reporting 64 CPUs.
fn fleet() -> BTreeMap<String, MemberView> {
    let node = GpuNode {
        name: "h1".into(),
        model: "NVIDIA-H100".into(),
        memory_mib: 81920,
        compute: (9, 0),
        nvlink_domain: None,
        allocatable: 8,
        ready: true,
        taints: Vec::new(),
        labels: Default::default(),
        resources: Some(NodeCpuMemory {
            allocatable: CpuMemory {
                cpu_millis: 64_000,
                memory_mib: 512 * 1024,
                ephemeral_mib: None,
            },
            requested: CpuMemory::default(),
            extended: None,
        }),
    };
    let foreign = crate::fleet::GpuPod {
        node: "h1".into(),
        gpus: 1,
        attempt_key: None,
        requests: Default::default(),
        extended: Default::default(),
    };
    let view = MemberView {
        nodes: vec![node],
        pods: vec![foreign],
        ..MemberView::default()
    };
    BTreeMap::from([("a".to_owned(), view)])
}

/// 7 GPUs at priority 500 that may evict, each worker asking 8 CPUs.
fn urgent() -> Arc<ComputeJob> {
    urgent_of(7)
}

fn urgent_of(gpus: u32) -> Arc<ComputeJob> {
    let mut j = job("urgent", "Datacenter", None);
    let m = Arc::make_mut(&mut j);
    m.spec.priority = 500;
    // The market's price rises with the node's use: room for it.
    m.spec.max_price_per_gpu_hour = "10".into();
    m.spec.gpus_per_worker = gpus;
    m.spec.placement.preempt_lower_priority = true;
    m.spec.placement.verified_only = false;
    m.spec.template.spec.containers[0] = serde_json::from_value(serde_json::json!(
        {"name": "main", "image": "x", "resources": {"requests": {"cpu": "8"}}}
    ))
    .expect("container");
    j
}

/// A 2-GPU H100 job, running on `h1` when `placed`, marked evicted for `urgent` when
/// `marked`.
fn batch(name: &str, placed: bool, marked: bool) -> Arc<ComputeJob> {
    let mut j = job(name, "Datacenter", placed.then_some(("a", "h1")));
    Arc::make_mut(&mut j).spec.placement.verified_only = false;
    if marked {
        let mark = gpufed_api::job_status::Preemption {
            by: BY.into(),
            priority: 500,
            time: "2026-11-25T12:05:00Z".into(),
        };
        let status = crate::placement::marked_status(&j, &mark).expect("live");
        Arc::make_mut(&mut j).status = Some(status);
    }
    j
}

fn cfg() -> pl::Config {
    crate::placement::Preemption::Namespace.engine_config()
}

fn h1(snap: &pl::Snapshot) -> &pl::Node {
    snap.providers[0]
        .nodes
        .iter()
        .find(|n| n.name == "h1")
        .expect("h1")
}

/// Round 1 on the fleet: `urgent` evicts both batch jobs; its hold.
fn first_round() -> Holds {
    plan(
        &[batch("old", true, false), batch("young", true, false), urgent()],
        2,
    )
}

/// One round over `jobs` where `urgent` evicts `victims` jobs; its hold.
fn plan(jobs: &[Arc<ComputeJob>], victims: usize) -> Holds {
    let snap = snapshot(jobs, &[provider("a", true)], &fleet());
    let d = pl::place(&snap, &cfg()).expect("round 1");
    let Some(p) = d.placements.iter().find(|p| p.job == BY) else {
        panic!("urgent not planned: {d:?}")
    };
    assert_eq!(p.evicts.len(), victims, "{p:?}");
    let hold = Hold::of(p, &snap).expect("known job");
    BTreeMap::from([(BY.to_owned(), hold)])
}

#[test]
fn an_evicted_job_does_not_take_back_the_room_its_preemptor_waits_for() {
    let providers = [provider("a", true)];
    let mut holds = first_round();
    // Round 2: `young` stopped already and queues again; `old` is still being evicted.
    let jobs = [batch("old", true, true), batch("young", false, false), urgent()];
    let snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(h1(&snap).free.len(), 5, "8 less the foreign pod and `old`");
    let unheld = pl::place(&snap, &cfg()).expect("round 2 without the hold");
    assert!(
        unheld.placements.iter().any(|p| p.job == "team/young"),
        "without a hold the evicted job takes back the room: {unheld:?}"
    );

    let mut snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(
        apply(&mut snap, &mut holds, &jobs, &fleet(), T),
        5,
        "7 wanted, 2 still held by `old`"
    );
    assert!(h1(&snap).free.is_empty());
    let free = h1(&snap).resources.expect("reported").free;
    assert_eq!(free.cpu_millis, 64_000 - 8_000, "the preemptor's CPU is held too");
    let held = pl::place(&snap, &cfg()).expect("round 2");
    assert!(
        held.placements.is_empty(),
        "nothing takes the held room: {held:?}"
    );
    assert_eq!(holds.len(), 1, "kept while the job waits");

    // Round 3: `old` is gone too. The hold ends and the preemptor fits as planned.
    let jobs = [batch("old", false, false), batch("young", false, false), urgent()];
    let mut snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(apply(&mut snap, &mut holds, &jobs, &fleet(), T), 0);
    assert!(holds.is_empty(), "the job no longer waits");
    let d = pl::place(&snap, &cfg()).expect("round 3");
    let p = d.placements.iter().find(|p| p.job == BY).expect("urgent placed");
    assert!(p.evicts.is_empty(), "nobody is evicted twice");
    assert_eq!(p.workers[0].node, "h1");
}

#[test]
fn a_hold_ends_when_its_job_no_longer_waits() {
    let providers = [provider("a", true)];
    // The marks were never written (or were cleared): the job does not wait.
    let mut holds = first_round();
    let jobs = [batch("old", true, false), batch("young", true, false), urgent()];
    let mut snap = snapshot(&jobs, &providers, &fleet());
    let before = h1(&snap).free.clone();
    assert_eq!(apply(&mut snap, &mut holds, &jobs, &fleet(), T), 0);
    assert!(holds.is_empty());
    assert_eq!(h1(&snap).free, before, "nothing held");
}

#[test]
fn victims_still_running_count_toward_the_hold() {
    let providers = [provider("a", true)];
    let mut holds = first_round();
    // Both victims still there: they hold 4 of the 7; the 3 free are held.
    let jobs = [batch("old", true, true), batch("young", true, true), urgent()];
    let mut snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(h1(&snap).free.len(), 3);
    assert_eq!(apply(&mut snap, &mut holds, &jobs, &fleet(), T), 3);
    assert!(h1(&snap).free.is_empty());
    // A mark by another job does not count toward this one's hold.
    let mut other = batch("young", true, true);
    let m = Arc::make_mut(&mut other);
    if let Some(p) = m.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted.as_mut().expect("marked").by = "team/other".into();
    }
    let jobs = [batch("old", true, true), other, urgent()];
    let mut snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(
        apply(&mut snap, &mut holds, &jobs, &fleet(), T),
        3,
        "7 less `old`'s 2, of 3 free"
    );
}

#[test]
fn a_victim_larger_than_the_room_leaves_the_rest_free() {
    let providers = [provider("a", true)];
    let big = |marked: bool| {
        let mut j = batch("big", true, marked);
        let m = Arc::make_mut(&mut j);
        m.spec.gpus_per_worker = 6;
        // Placed with 6 GPUs too: a live attempt holds what it was placed with.
        if let Some(p) = m.status.as_mut().and_then(|s| s.placement.as_mut()) {
            p.gpus = 6;
        }
        j
    };
    // 1 GPU free, 3 wanted: the 6-GPU job goes.
    let mut holds = plan(&[big(false), urgent_of(3)], 1);
    let jobs = [big(true), urgent_of(3)];
    let mut snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(h1(&snap).free.len(), 1);
    assert_eq!(
        apply(&mut snap, &mut holds, &jobs, &fleet(), T),
        0,
        "its 6 GPUs cover the 3"
    );
    assert_eq!(h1(&snap).free.len(), 1, "the free GPU stays free");
    assert_eq!(holds.len(), 1);
}

/// `urgent` as the round that planned its evictions left it: its hold in its status.
fn urgent_holding(holds: &Holds) -> Arc<ComputeJob> {
    let mut j = urgent();
    let status = Arc::make_mut(&mut j).status.get_or_insert_with(Default::default);
    status.held = Some(holds[BY].status());
    j
}

#[test]
fn a_new_leader_takes_the_hold_from_the_jobs_status() {
    let providers = [provider("a", true)];
    let planned = first_round();
    // Round 2 under a new leader (no holds in memory): `young` queues again, `old` is
    // still being evicted. The waiting job's status keeps its hold.
    let jobs = [
        batch("old", true, true),
        batch("young", false, false),
        urgent_holding(&planned),
    ];
    let mut holds = Holds::new();
    let mut snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(
        apply(&mut snap, &mut holds, &jobs, &fleet(), T),
        5,
        "taken from the status"
    );
    assert_eq!(holds, planned, "the same hold as the old leader's");
    let free = h1(&snap).resources.expect("reported").free;
    assert_eq!(free.cpu_millis, 64_000 - 8_000, "its CPU too");
    let d = pl::place(&snap, &cfg()).expect("round 2");
    assert!(d.placements.is_empty(), "nothing takes the held room: {d:?}");

    // Once the job no longer waits, what its status says is not held.
    let jobs = [
        batch("old", false, false),
        batch("young", false, false),
        urgent_holding(&planned),
    ];
    let mut holds = Holds::new();
    let mut snap = snapshot(&jobs, &providers, &fleet());
    assert_eq!(apply(&mut snap, &mut holds, &jobs, &fleet(), T), 0);
    assert!(holds.is_empty());
}

#[test]
fn a_hold_kept_in_status_reads_back_whole_and_fits_the_crd_schema() {
    let mut hold = first_round().remove(BY).expect("held");
    // An extended resource and a second node, as a gang's hold has.
    let room = hold.nodes.get_mut("h1").expect("h1");
    room.extended.insert("rdma/hca".into(), 2);
    room.resources.ephemeral_mib = 1024;
    hold.nodes.insert(
        "h2".into(),
        super::Room {
            gpus: 3,
            ..Default::default()
        },
    );
    let kept = hold.status();
    assert_eq!(Hold::from_status(&kept), hold);
    let status = gpufed_api::ComputeJobStatus {
        held: Some(kept.clone()),
        ..Default::default()
    };
    let object = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "urgent", "namespace": "team"},
        "spec": serde_json::to_value(&urgent().spec).expect("spec"),
        "status": serde_json::to_value(&status).expect("status"),
    });
    let crd = gpufed_api::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "ComputeJob")
        .expect("ComputeJob CRD");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    let report = gpufed_api::schema_check::check(&serde_json::to_value(schema).expect("schema"), &object);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        report.pruned.is_empty(),
        "the API server would drop {:?}",
        report.pruned
    );
    let back: gpufed_api::ComputeJobStatus =
        serde_json::from_value(object["status"].clone()).expect("reads back");
    assert_eq!(back.held, Some(kept));
}

#[path = "holds_ended_tests.rs"]
mod ended;
