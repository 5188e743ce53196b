//! Providers' tenant policies: a provider takes new work only from the namespaces it
//! admits; a job of another namespace goes elsewhere or waits, told why, and never
//! preempts there.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use gpufed_placement::{Config, Decisions, Explanation, Job, Reason, Snapshot, place};

use common::{UNIT, check, job, provider, running_on_a};

fn in_ns(mut j: Job, ns: &str) -> Job {
    j.namespace = ns.into();
    j
}

fn only(namespaces: &[&str]) -> Option<BTreeSet<String>> {
    Some(namespaces.iter().map(|n| (*n).to_owned()).collect())
}

fn provider_of<'d>(d: &'d Decisions, job: &str) -> Option<&'d str> {
    d.placements
        .iter()
        .find(|p| p.job == job)
        .map(|p| p.provider.as_str())
}

#[test]
fn a_job_goes_only_where_its_namespace_is_admitted() {
    // The cheap provider serves team-a only; team-b's job pays more elsewhere.
    let mut cheap = provider("cheap", "H100", 80, 1, 8, UNIT);
    cheap.tenants = only(&["team-a"]);
    let dear = provider("dear", "H100", 80, 1, 8, 3 * UNIT);
    let snap = Snapshot {
        providers: vec![cheap, dear],
        jobs: vec![in_ns(job("a", 4, 1), "team-a"), in_ns(job("b", 4, 1), "team-b")],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(provider_of(&d, "a"), Some("cheap"));
    assert_eq!(provider_of(&d, "b"), Some("dear"), "{d:?}");
}

#[test]
fn a_job_no_provider_admits_waits_and_is_told_why() {
    let mut a = provider("a", "H100", 80, 1, 8, UNIT);
    a.tenants = only(&["team-a"]);
    let mut b = provider("b", "H100", 80, 1, 8, UNIT);
    b.tenants = only(&[]);
    let snap = Snapshot {
        providers: vec![a, b],
        jobs: vec![in_ns(job("x", 1, 1), "team-x")],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty());
    let u = &d.unplaced[0];
    assert_eq!(u.explanation.primary(), Some(&Reason::TenantNotAdmitted));
    match &u.explanation {
        Explanation::NoFit { providers, reasons } => {
            assert_eq!(*providers, 2);
            assert_eq!(reasons, &vec![(Reason::TenantNotAdmitted, 2)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        u.explanation
            .to_string()
            .contains("takes no work from this namespace"),
        "{}",
        u.explanation
    );
    assert!(d.reservations.is_empty(), "nothing held for a job no one admits");
}

#[test]
fn identical_jobs_of_different_namespaces_are_decided_each_by_its_own_admission() {
    // Same shape, different tenants: the failed-shape memo must not carry one
    // namespace's refusal over to the other.
    let mut a = provider("a", "H100", 80, 1, 8, UNIT);
    a.tenants = only(&["team-a"]);
    let snap = Snapshot {
        providers: vec![a],
        jobs: vec![
            in_ns(job("b1", 2, 1), "team-b"),
            in_ns(job("a1", 2, 1), "team-a"),
            in_ns(job("b2", 2, 1), "team-b"),
            in_ns(job("a2", 2, 1), "team-a"),
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    let placed: BTreeSet<&str> = d.placements.iter().map(|p| p.job.as_str()).collect();
    assert_eq!(placed, BTreeSet::from(["a1", "a2"]));
}

#[test]
fn no_preemption_on_a_provider_that_does_not_admit_the_preemptor() {
    let mut a = provider("a", "H100", 80, 1, 8, UNIT);
    a.tenants = only(&["team-a"]);
    let running = running_on_a("team-a/low", "team-a", "n0", 0..8, None);
    for n in &mut a.nodes {
        n.free.clear();
    }
    let mut urgent = in_ns(job("urgent", 8, 1), "team-b");
    urgent.priority = 10;
    urgent.preempt = true;
    let mut snap = Snapshot {
        providers: vec![a],
        running: vec![running],
        jobs: vec![urgent],
        ..Snapshot::default()
    };
    let cfg = Config {
        preemption: true,
        preempt_across_namespaces: true,
        ..Config::default()
    };
    let d = place(&snap, &cfg).unwrap();
    assert!(d.placements.is_empty() && d.evictions.is_empty(), "{d:?}");
    assert_eq!(
        d.unplaced[0].explanation.primary(),
        Some(&Reason::TenantNotAdmitted)
    );
    // Admitted, the same job evicts the lower-priority work: the policy was the cause.
    snap.providers[0].tenants = only(&["team-a", "team-b"]);
    let d = place(&snap, &cfg).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.evictions.len(), 1, "{d:?}");
}

#[test]
fn a_reservation_on_a_provider_that_no_longer_admits_the_job_is_not_kept() {
    // Last round `gang` reserved a's node; a has since stopped taking team's work, and b
    // is busy. Kept, the reservation would idle a's node every round for a job that never
    // starts there (and keep others off it); the job reserves where it may run instead.
    // `x`, of a namespace a takes work from, comes first in the queue and fits only on
    // a's node: the stale reservation must not hide it from `x` either.
    let mut a = provider("a", "H100", 80, 1, 8, UNIT);
    a.tenants = only(&["other"]);
    let mut b = provider("b", "H100", 80, 1, 8, UNIT);
    b.nodes[0].free.truncate(2);
    let mut x = in_ns(job("x", 4, 1), "other");
    x.priority = 1;
    let snap = Snapshot {
        providers: vec![a, b],
        jobs: vec![job("gang", 8, 1), x],
        reservations: vec![gpufed_placement::Reservation {
            job: "gang".into(),
            provider: "a".into(),
            nodes: vec!["n0".into()],
        }],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(provider_of(&d, "x"), Some("a"), "{d:?}");
    assert_eq!(provider_of(&d, "gang"), None);
    assert!(
        d.reservations.iter().all(|r| r.provider != "a"),
        "{:?}",
        d.reservations
    );
    assert_eq!(
        d.reservations.len(),
        1,
        "held where it may run: {:?}",
        d.reservations
    );
    assert_eq!(d.reservations[0].provider, "b");
}
