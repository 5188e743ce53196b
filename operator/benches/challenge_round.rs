//! What a challenge round costs the hub's CPU (docs/trust.md, "Rounds"): at a round's
//! start every provider's check runs at once and starts a challenge for each of its nodes,
//! so the hub's own share of the rounds' spread (`gpufed_challenge_round_lag_seconds`) is
//! the time to step every provider. Measured on 1 000 providers of 2 nodes of 8 GPUs with
//! signed reports: every provider's [`Verifier::step`] at a round's start (sessions
//! started, requests built), against the same steps between rounds (reports read and
//! their signatures checked, nothing started), the peer in the same run.
//!
//! Also what keeping the verdicts in the hub costs (docs/trust.md, "A new leader resumes
//! the rounds"): the check every heartbeat makes for verdicts to save (nothing changed,
//! the steady state), and a new leader taking in every provider's records, both against
//! the same between-rounds step.
//!
//! `cargo bench -p gpufed-operator --bench challenge_round` prints milliseconds for the
//! whole fleet each way and the ratios; without `--bench` (as `cargo test --all-targets`
//! runs it) a small smoke version that checks a round starts every node's challenge.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gpufed_operator::fleet::{GpuNode, MemberView};
use gpufed_operator::verification::{Verifier, VerifyConfig};
use gpufed_trust::report::{InventoryReport, ReportGpu, sign};
use gpufed_trust::{Band, Bands, Params};

const MODEL: &str = "NVIDIA H100 80GB HBM3";
const HOUR_MS: u64 = 3_600_000;
/// A round's start on the fleet clock.
const ROUND: u64 = 500_000 * HOUR_MS;

fn verifier() -> Verifier {
    Verifier::new(VerifyConfig {
        bands: Bands {
            bands: vec![Band {
                model: MODEL.into(),
                params: Params::u32(4096, 1024, 4096, 24),
                min_kernel_micros: 173,
                max_kernel_micros: 40_000,
                round_trip_slack_ms: 2_000,
            }],
        },
        interval: Duration::from_millis(HOUR_MS),
        ..VerifyConfig::default()
    })
}

/// Provider `p`'s member: `nodes` nodes of 8 GPUs, each with a report signed by its key.
fn member(p: usize, nodes: usize) -> MemberView {
    let mut view = MemberView::default();
    for n in 0..nodes {
        let name = format!("node-{n}");
        let report = InventoryReport {
            node: name.clone(),
            nonce: String::new(),
            issued_at: 1,
            driver_version: "580".into(),
            cuda_version: "13.0".into(),
            simulated: false,
            gpus: (0..8)
                .map(|g| ReportGpu {
                    uuid: format!("GPU-{p:04}-{n}-{g}"),
                    model: MODEL.into(),
                    memory_mib: 81_559,
                    compute_capability: "9.0".into(),
                    serial: Some(format!("1652{p:04}{n}{g}")),
                })
                .collect(),
            challenge: None,
        };
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&((p * nodes + n) as u64 + 1).to_le_bytes());
        let signed = sign(report, &SigningKey::from_bytes(&seed)).unwrap();
        view.reports
            .insert(name.clone(), serde_json::to_string(&signed).unwrap());
        view.nodes.push(GpuNode {
            name,
            model: "NVIDIA-H100-80GB-HBM3".into(),
            memory_mib: 81_559,
            compute: (9, 0),
            nvlink_domain: None,
            allocatable: 8,
            ready: true,
            taints: Vec::new(),
            labels: BTreeMap::new(),
            resources: None,
        });
    }
    view
}

/// Steps every provider at `now_ms`; returns the time it took and how many asked for
/// new requests.
fn step_all(v: &Verifier, members: &[MemberView], now_ms: u64) -> (Duration, usize) {
    let started = Instant::now();
    let mut asked = 0;
    for (p, view) in members.iter().enumerate() {
        let provider = format!("p{p:04}");
        asked += usize::from(
            v.step(&provider, view, now_ms)
                .is_some_and(|r| r.len() == view.nodes.len()),
        );
    }
    (started.elapsed(), asked)
}

/// What one fleet's run measured, each over all providers.
struct Run {
    round: Duration,
    between: Duration,
    asked: usize,
    /// `verdicts_to_save` with nothing changed.
    keep_check: Duration,
    /// A new leader's `load_verdicts` of every provider's records.
    resume: Duration,
}

/// One fleet's round: join (all at once, a first round in effect), judged by timeout, a
/// step between rounds, then the round; the keep check and a new leader's resume between.
fn run(providers: usize, nodes: usize) -> Run {
    let members: Vec<MemberView> = (0..providers).map(|p| member(p, nodes)).collect();
    let name = |p: usize| format!("p{p:04}");
    let v = verifier();
    for p in 0..providers {
        v.load_verdicts(&name(p), BTreeMap::new(), ROUND - HOUR_MS);
    }
    // Everyone joins; nobody answers; the timeout (2 min) judges them.
    let (_, joined) = step_all(&v, &members, ROUND - HOUR_MS / 2);
    assert_eq!(joined, providers, "every node challenged at join");
    step_all(&v, &members, ROUND - HOUR_MS / 2 + 200_000);
    let mut kept = Vec::with_capacity(providers);
    for p in 0..providers {
        let records = v.verdicts_to_save(&name(p)).expect("new verdicts to keep");
        assert_eq!(records.len(), nodes);
        v.verdicts_saved(&name(p), records.clone());
        kept.push(records);
    }
    // Between rounds: reports read and checked, nothing started.
    let (between, idle) = step_all(&v, &members, ROUND - 1_000);
    assert_eq!(idle, 0, "nothing due between rounds");
    let started = Instant::now();
    let unchanged = (0..providers).all(|p| v.verdicts_to_save(&name(p)).is_none());
    let keep_check = started.elapsed();
    assert!(unchanged, "nothing to save between rounds");
    // A new leader takes every provider's records in.
    let next = verifier();
    let started = Instant::now();
    for (p, records) in kept.into_iter().enumerate() {
        next.load_verdicts(&name(p), records, ROUND - 1_000);
    }
    let resume = started.elapsed();
    assert_eq!(next.verdict(&name(0), ROUND - 1_000).0.failed, 16, "resumed");
    // The round: every node of every provider challenged at once.
    let (round, asked) = step_all(&v, &members, ROUND);
    Run {
        round,
        between,
        asked,
        keep_check,
        resume,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (providers, nodes) = if bench { (1_000, 2) } else { (20, 2) };
    let reps = if bench { 5 } else { 1 };
    let runs: Vec<Run> = (0..reps).map(|_| run(providers, nodes)).collect();
    assert!(
        runs.iter().all(|r| r.asked == providers),
        "a round starts every node's challenge"
    );
    let median = |f: fn(&Run) -> Duration| {
        let mut all: Vec<Duration> = runs.iter().map(f).collect();
        all.sort();
        all[reps / 2]
    };
    let (round, between) = (median(|r| r.round), median(|r| r.between));
    let (keep_check, resume) = (median(|r| r.keep_check), median(|r| r.resume));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{providers} providers x {nodes} nodes x 8 GPUs: round start {:.1} ms (median of {reps}), between rounds {:.1} ms, ratio {:.2}",
        ms(round),
        ms(between),
        ms(round) / ms(between)
    );
    println!(
        "kept verdicts: check with nothing to save {:.1} ms ({:.3} of a step between rounds), a new leader's resume {:.1} ms ({:.3})",
        ms(keep_check),
        ms(keep_check) / ms(between),
        ms(resume),
        ms(resume) / ms(between)
    );
}
