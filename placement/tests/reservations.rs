//! Reservations carried from round to round hold only nodes their job may still use.
#![allow(clippy::unwrap_used)]

mod common;

use gpufed_placement::{Config, Job, Reservation, Snapshot, place};

use common::{UNIT, check, job, provider};

#[test]
fn a_reservation_whose_price_rose_past_the_ceiling_is_planned_anew() {
    // `gang` (8 GPUs, at most 1.1 per GPU-hour) reserved a's `n0` last round, at 0.975.
    // This round `y`, ahead in the queue, takes a's `n1`: a's price rises to 1.275, past
    // the gang's ceiling. Kept, the reservation would idle `n0` for a job that cannot pay
    // for it; the gang reserves b's node instead, where it waits for GPUs it can afford.
    let mut a = provider("a", "H100", 80, 2, 8, UNIT);
    a.nodes[0].free.truncate(6);
    let mut b = provider("b", "H100", 80, 1, 8, UNIT / 2);
    b.nodes[0].free.truncate(2);
    let gang = Job {
        max_price: Some(UNIT + UNIT / 10),
        ..job("gang", 8, 1)
    };
    let y = Job {
        priority: 1,
        ..job("y", 8, 1)
    };
    let snap = Snapshot {
        providers: vec![a, b],
        jobs: vec![gang, y],
        reservations: vec![Reservation {
            job: "gang".into(),
            provider: "a".into(),
            nodes: vec!["n0".into()],
        }],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(d.placements.len(), 1, "{d:?}");
    assert_eq!(
        (d.placements[0].job.as_str(), d.placements[0].provider.as_str()),
        ("y", "a")
    );
    assert_eq!(d.reservations.len(), 1, "{:?}", d.reservations);
    assert_eq!(d.reservations[0].job, "gang");
    assert_eq!(d.reservations[0].provider, "b", "{:?}", d.reservations);
}
