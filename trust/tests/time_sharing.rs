//! One real GPU answering for many identities, one after another (docs/trust.md,
//! "Rounds"). Each identity lists one GPU with a UUID and a board serial of its own, its
//! own node key and provider, and computes every challenge correctly on the farm's one
//! card, reporting an in-band kernel time. Nothing but the hub's clock can tell it from
//! a real GPU, and only when the identities are challenged at the same time.
//!
//! The same fleet is run twice: challenged each at its own time (a node's join plus
//! multiples of the interval, as before rounds), every identity of the farm verifies;
//! challenged in a round, the farm's card finishes one workload per round trip and at
//! most that many of its identities verify. Honest GPUs verify either way. A farm that
//! withholds its identities' reports at the round and answers for them one by one later
//! runs on the round's clock and verifies none of those.
#![allow(clippy::unwrap_used)]

use gpufed_trust::protocol::{Computed, answer};
use gpufed_trust::rounds::{Rounds, Why};
use gpufed_trust::session::{self, GpuClaim, NodeView, Step};
use gpufed_trust::{Band, Bands, Params};

const MODEL: &str = "NVIDIA H100 80GB HBM3";
const P: Params = Params::u32(64, 4, 4, 24);
const INTERVAL_MS: u64 = 3_600_000;
const ROUND: u64 = 100 * INTERVAL_MS;
/// The real card's time for one workload (a tall band's: docs/trust.md).
const WORK_MS: u64 = 1_000;
/// API, watch and hashing on top of the device time.
const LATENCY_MS: u64 = 200;
const FARM: usize = 8;
const HONEST: usize = 40;

fn bands() -> Bands {
    Bands {
        bands: vec![Band {
            model: MODEL.into(),
            params: P,
            min_kernel_micros: 500,
            max_kernel_micros: 1_500_000,
            round_trip_slack_ms: 1_000,
        }],
    }
}

/// A physical card: busy until `free_at`, computing the workloads it is given in order.
struct Card {
    free_at: u64,
}

impl Card {
    /// When a workload handed to it at `t` is committed and seen by the hub.
    fn run(&mut self, t: u64) -> u64 {
        self.free_at = self.free_at.max(t) + WORK_MS;
        self.free_at + LATENCY_MS
    }
}

/// One identity's whole challenge, issued at `issued` (the clock it runs on) and its
/// roots seen at `seen`: whether its GPU verified.
fn verified(id: usize, issued: u64, seen: u64) -> bool {
    let uuid = format!("GPU-{id:04}-{:08x}", id * 2_654_435_761 % (1 << 32));
    let claims = [GpuClaim {
        uuid: uuid.clone(),
        model: MODEL.into(),
        serial: Some(format!("1652{id:06}")),
    }];
    let bands = bands();
    let mut s = session::start(format!("nonce-{id}-{issued}"), &claims, &bands, issued).unwrap();
    let computed = |req: &gpufed_trust::ChallengeRequest| {
        // Correct rows, and a kernel time the band likes: a lie nothing but the clock sees.
        answer(req, &[Computed::on_cpu(&req.nonce, &uuid, &P, 900_000).unwrap()])
    };
    let first = computed(&s.request);
    let view = |a| NodeView {
        claims: &claims,
        simulated: false,
        answer: a,
    };
    let Step::Open(req) = s.advance(view(Some(&first)), &bands, "open-seed", seen, 120_000) else {
        panic!("no open step");
    };
    let second = computed(&req);
    let Step::Done(v) = s.advance(view(Some(&second)), &bands, "unused", seen + 500, 120_000) else {
        panic!("no verdict");
    };
    v.iter().all(|g| g.passed())
}

/// Honest identities `0..HONEST` (a card each) and the farm's `HONEST..` (one card), in
/// id order, each handed its challenge at `schedule(id).0` on a clock started at
/// `schedule(id).1`: how many of each verified.
fn fleet(schedule: impl Fn(usize) -> (u64, u64)) -> (usize, usize) {
    let mut farm = Card { free_at: 0 };
    let mut honest = 0;
    let mut farmed = 0;
    for id in 0..HONEST + FARM {
        let (handed, clock) = schedule(id);
        if id < HONEST {
            honest += usize::from(verified(id, clock, Card { free_at: 0 }.run(handed)));
        } else {
            farmed += usize::from(verified(id, clock, farm.run(handed)));
        }
    }
    (honest, farmed)
}

#[test]
fn one_card_answers_for_every_identity_when_each_is_challenged_alone() {
    // Each challenged at its own phase of the interval: the card is idle every time.
    let (honest, farmed) = fleet(|id| {
        let at = ROUND + id as u64 * (INTERVAL_MS / (HONEST + FARM) as u64);
        (at, at)
    });
    assert_eq!(honest, HONEST);
    assert_eq!(farmed, FARM, "the hole rounds close");
}

#[test]
fn in_a_round_one_card_verifies_only_what_it_computes_within_one_round_trip() {
    let rounds = Rounds::new(INTERVAL_MS, 5_000);
    let limit = bands().bands[0].max_round_trip_ms();
    // The hub issues the round's challenges over its spread: 20 ms a provider.
    let (honest, farmed) = fleet(|id| {
        let at = ROUND + id as u64 * 20;
        (at, rounds.issued_at(Why::Round, at))
    });
    assert_eq!(honest, HONEST, "a round costs honest GPUs nothing");
    let within = usize::try_from(limit / WORK_MS).unwrap();
    assert!(
        farmed <= within,
        "{farmed} identities on one card verified, at most {within}"
    );
    assert!(farmed >= 1, "the card itself is real");
}

#[test]
fn identities_shown_one_by_one_after_the_round_run_on_its_clock() {
    let rounds = Rounds::new(INTERVAL_MS, 5_000);
    // The farm answers one identity at the round and publishes the others' reports 30 s
    // apart afterwards, so the hub challenges them late, one at a time, with the card idle.
    let (honest, farmed) = fleet(|id| {
        let shows_up = if id <= HONEST {
            ROUND
        } else {
            ROUND + (id - HONEST) as u64 * 30_000
        };
        (shows_up, rounds.issued_at(Why::Round, shows_up))
    });
    assert_eq!(honest, HONEST);
    assert_eq!(farmed, 1, "only the identity that answered at the round");
    // Between rounds the farm cannot pick its own time either: it failed.
    let failed = gpufed_trust::rounds::NodeSchedule {
        judged: true,
        resumed: false,
        next_due_ms: rounds.next_due(ROUND),
        passed: false,
        changed: true,
        wanted: true,
        open: None,
    };
    assert_eq!(rounds.decide(&failed, ROUND + 600_000), None);
}
