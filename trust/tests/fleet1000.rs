//! 1000 simulated providers run the whole challenge protocol against the hub's logic:
//! honest ones, Sybil farms listing the same GPUs under several identities, slicers
//! listing one card as several virtual GPUs with UUIDs of their own (the board serial
//! repeats), nodes that return wrong results, skip work, or claim impossible timings, and
//! slower hardware (a consumer card, a CPU farm, one card answering for several) that
//! computes correctly and reports an in-band time, but whose roots the hub's clock sees
//! late.
//! Pass: 0 dishonest providers verified, 100% of duplicated UUIDs and of board serials on
//! two nodes flagged on every claimant, 0 honest providers flagged.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::Hash32;
use gpufed_trust::fleet::{NodeVerdicts, judge};
use gpufed_trust::protocol::{ChallengeAnswer, ChallengeRequest, Computed, answer};
use gpufed_trust::session::{self, GpuClaim, NodeView, Step};
use gpufed_trust::workload::splitmix64;
use gpufed_trust::{Band, Bands, Failure, Params};

const MODEL: &str = "NVIDIA H100 80GB HBM3";
// 24 of 64 rows opened: a node that computed half the rows passes with 2^-24 per GPU.
const P: Params = Params::u32(64, 4, 4, 24);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Honest,
    /// Shares its GPU UUIDs with the other members of its farm.
    Sybil,
    /// Lists virtual GPUs of cards the slicers already listed: fresh UUIDs, the same
    /// board serials.
    Slicer,
    /// Commits random roots.
    WrongDigest,
    /// Computes only half the rows.
    Partial,
    /// Honest results, kernel time below the model's physical minimum.
    TooFast,
    /// Honest results and an in-band kernel time (a lie), but the roots reach the hub
    /// after the band's maximum round trip: the hardware is slower than claimed.
    SlowHardware,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn node_answer(kind: Kind, req: &ChallengeRequest, uuids: &[String], rng_seed: u64) -> ChallengeAnswer {
    let gpus: Vec<Computed> = uuids
        .iter()
        .map(|u| {
            let micros = if kind == Kind::TooFast { 3 } else { 2_000 };
            match kind {
                Kind::WrongDigest => {
                    let leaves = (0..P.rows)
                        .map(|i| {
                            Hash32(
                                splitmix64(rng_seed ^ u64::from(i))
                                    .to_le_bytes()
                                    .repeat(4)
                                    .try_into()
                                    .unwrap(),
                            )
                        })
                        .collect();
                    Computed::new(u, leaves, micros).unwrap()
                }
                Kind::Partial => {
                    let mut leaves =
                        gpufed_trust::workload::all_leaves(&P, &gpufed_trust::workload::seeds(&req.nonce, u));
                    for l in leaves.iter_mut().skip(P.rows as usize / 2) {
                        *l = Hash32([0; 32]);
                    }
                    Computed::new(u, leaves, micros).unwrap()
                }
                _ => Computed::on_cpu(&req.nonce, u, &P, micros).unwrap(),
            }
        })
        .collect();
    answer(req, &gpus)
}

#[test]
fn a_thousand_providers() {
    let bands = Bands {
        bands: vec![Band {
            model: MODEL.into(),
            params: P,
            min_kernel_micros: 500,
            max_kernel_micros: 50_000,
            round_trip_slack_ms: 5_000,
        }],
    };
    let mut rng = Rng(42);
    let mut kinds = BTreeMap::new();
    let mut nodes_out = Vec::new();
    let mut farm_uuids: Vec<String> = Vec::new();
    let mut uuid_claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut slicer_serials: Vec<String> = Vec::new();
    // Serial → every provider/node reporting it.
    let mut serial_claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in 0..1000u64 {
        let kind = match rng.below(100) {
            0..=59 => Kind::Honest,
            60..=69 => Kind::Sybil,
            70..=74 => Kind::Slicer,
            75..=84 => Kind::WrongDigest,
            85..=92 => Kind::Partial,
            93..=96 => Kind::TooFast,
            _ => Kind::SlowHardware,
        };
        let provider = format!("p{p:04}");
        kinds.insert(provider.clone(), kind);
        for n in 0..=rng.below(3) {
            let node = format!("node-{n}");
            let gpus = 1 + rng.below(8) as usize;
            let uuids: Vec<String> = (0..gpus)
                .map(|g| {
                    if kind == Kind::Sybil && !farm_uuids.is_empty() && rng.below(2) == 0 {
                        // Re-list a GPU the farm already listed under another identity.
                        farm_uuids[rng.below(farm_uuids.len() as u64) as usize].clone()
                    } else {
                        let u = format!("GPU-{p:04}-{n}-{g}-{:08x}", rng.next() as u32);
                        if kind == Kind::Sybil {
                            farm_uuids.push(u.clone());
                        }
                        u
                    }
                })
                .collect();
            for u in &uuids {
                uuid_claims.entry(u.clone()).or_default().insert(provider.clone());
            }
            // Board serials: a quarter of the honest nodes have consumer cards (none, or
            // a placeholder); a slicer mostly repeats a card the slicers already listed.
            let serials: Vec<Option<String>> = (0..gpus)
                .map(|g| match kind {
                    Kind::Slicer if !slicer_serials.is_empty() && rng.below(2) == 0 => {
                        Some(slicer_serials[rng.below(slicer_serials.len() as u64) as usize].clone())
                    }
                    Kind::Slicer => {
                        let s = format!("16523{p:04}{n}{g}");
                        slicer_serials.push(s.clone());
                        Some(s)
                    }
                    _ if p % 4 == 0 => [None, Some("N/A".to_owned())][g % 2].clone(),
                    _ => Some(format!("16501{p:04}{n}{g}")),
                })
                .collect();
            for s in serials.iter().flatten().filter(|s| *s != "N/A") {
                serial_claims
                    .entry(s.clone())
                    .or_default()
                    .insert(format!("{provider}/{node}"));
            }
            let claims: Vec<GpuClaim> = uuids
                .iter()
                .zip(&serials)
                .map(|(u, serial)| GpuClaim {
                    uuid: u.clone(),
                    model: MODEL.into(),
                    serial: serial.clone(),
                })
                .collect();
            let mut s = session::start(format!("nonce-{p}-{n}"), &claims, &bands, 0).unwrap();
            let first = node_answer(kind, &s.request, &uuids, rng.next());
            let view = |a| NodeView {
                claims: &claims,
                simulated: false,
                answer: a,
            };
            // When the hub sees the roots: honest hardware within the band's round trip (its
            // last millisecond included), slower hardware after it.
            let max_rt = bands.bands[0].max_round_trip_ms();
            let seen_at = if kind == Kind::SlowHardware {
                max_rt + 1 + rng.below(max_rt)
            } else {
                1 + rng.below(max_rt)
            };
            let Step::Open(req) = s.advance(
                view(Some(&first)),
                &bands,
                &format!("seed-{}", rng.next()),
                seen_at,
                60_000,
            ) else {
                panic!("no open step");
            };
            let second = node_answer(kind, &req, &uuids, rng.next());
            let Step::Done(verdicts) =
                s.advance(view(Some(&second)), &bands, "unused", seen_at + 1_000, 60_000)
            else {
                panic!("no verdicts");
            };
            nodes_out.push(NodeVerdicts {
                provider: provider.clone(),
                node,
                sold: u32::try_from(verdicts.len()).unwrap_or(u32::MAX),
                sold_model: String::new(),
                verdicts,
                probation: Default::default(),
            });
        }
    }
    let judged = judge(&nodes_out);
    let (mut honest, mut dishonest_verified, mut honest_flagged, mut slow) = (0, 0, 0, 0);
    for (provider, verdict) in &judged {
        let kind = kinds[provider];
        // A node counts as verified only with no failed GPU on it (what `verifiedOnly`
        // placement uses); every node of an honest provider does.
        for (node, v) in &verdict.failures {
            assert!(
                !verdict.verified_nodes.contains(node),
                "{provider}/{node} verified with a failed GPU {v:?}"
            );
        }
        if matches!(kind, Kind::Honest) {
            let nodes = nodes_out.iter().filter(|n| &n.provider == provider).count();
            assert_eq!(
                verdict.verified_nodes.len(),
                nodes,
                "{provider}: every honest node verified"
            );
        }
        match kind {
            Kind::Honest => {
                honest += 1;
                if verdict.failed > 0 {
                    honest_flagged += 1;
                }
            }
            // A Sybil identity's GPUs that no other identity lists are real and may verify;
            // its shared ones are checked below (every claimant flagged).
            Kind::Sybil | Kind::Slicer => {}
            _ if verdict.verified > 0 => dishonest_verified += 1,
            _ => {}
        }
        let expected = match kind {
            Kind::WrongDigest | Kind::Partial => Some("WrongDigest"),
            Kind::TooFast => Some("ImpossiblyFast"),
            _ => None,
        };
        if kind == Kind::SlowHardware {
            slow += 1;
            assert!(
                verdict
                    .failures
                    .iter()
                    .all(|(_, v)| { v.failure.as_ref().map(Failure::reason) == Some("RoundTripTooSlow") }),
                "{provider}: {:?}",
                verdict.failures
            );
            assert!(
                verdict.evidence_kinds().is_empty(),
                "slowness is not evidence of a lie"
            );
        }
        if let Some(reason) = expected {
            assert!(
                verdict
                    .failures
                    .iter()
                    .all(|(_, v)| v.failure.as_ref().map(Failure::reason) == Some(reason)),
                "{provider} ({kind:?}): {:?}",
                verdict.failures
            );
            assert!(verdict.evidence_kinds().contains("failed-challenge"));
        }
    }
    // Every claimant of every duplicated UUID is flagged.
    let dup_uuids: Vec<_> = uuid_claims.iter().filter(|(_, who)| who.len() > 1).collect();
    let mut flagged = 0;
    for (uuid, who) in &dup_uuids {
        for provider in *who {
            let v = &judged[provider];
            assert!(
                v.failures.iter().any(
                    |(_, g)| &g.uuid == *uuid && matches!(g.failure, Some(Failure::DuplicateUuid { .. }))
                ),
                "{provider} not flagged for {uuid}"
            );
            assert!(v.evidence_kinds().contains("duplicate-gpu"));
            flagged += 1;
        }
    }
    // Every node reporting a board serial another node reports is flagged for it (or for
    // a duplicated UUID on the same GPU, named first).
    let dup_serials: Vec<_> = serial_claims.iter().filter(|(_, who)| who.len() > 1).collect();
    let mut serials_flagged = 0;
    for (serial, who) in &dup_serials {
        for claimant in *who {
            let (provider, node) = claimant.split_once('/').unwrap();
            assert!(
                judged[provider].failures.iter().any(|(n, g)| n == node
                    && g.serial.as_deref() == Some(serial.as_str())
                    && matches!(
                        g.failure,
                        Some(Failure::DuplicateSerial { .. } | Failure::DuplicateUuid { .. })
                    )),
                "{claimant} not flagged for board {serial}"
            );
            serials_flagged += 1;
        }
    }
    assert!(
        dup_serials.len() > 20 && serials_flagged > 40,
        "{} {serials_flagged}",
        dup_serials.len()
    );
    assert_eq!(dishonest_verified, 0, "dishonest providers verified");
    assert_eq!(honest_flagged, 0, "honest providers flagged");
    assert!(slow > 15, "{slow} slow providers");
    assert!(
        honest > 500 && dup_uuids.len() > 50 && flagged > 100,
        "{honest} {} {flagged}",
        dup_uuids.len()
    );
    eprintln!(
        "1000 providers: {honest} honest all verified; {} duplicated UUIDs, {flagged} claims flagged; \
         {} boards on several nodes, {serials_flagged} node claims flagged",
        dup_uuids.len(),
        dup_serials.len()
    );
}
