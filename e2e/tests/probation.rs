//! Probation on real API servers (docs/trust.md, "Probation"): with `--join-probation` a
//! provider whose GPUs passed at join is `OnProbation` until the next round, and counts
//! from the round it passes; a liar fails at join as before.

mod common;
mod opsupport;
mod trustsupport;

use std::time::Duration;

use opsupport::Operator;
use trustsupport::{BANDS, honest_and_liar, until_verified};

/// Rounds every 30 s.
const ROUND_SECS: i64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_provider_is_on_probation_until_the_round_proves_its_gpus() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((env, hub, plugins)) = honest_and_liar("probation", &Default::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bands = dir.path().join("bands.yaml");
    std::fs::write(&bands, BANDS).expect("bands file");
    // Join just after a round's start, so the join's verdict is seen well before the next.
    let into = gpufed_operator::time::now_millis() % (ROUND_SECS as u64 * 1000);
    tokio::time::sleep(Duration::from_millis(
        (ROUND_SECS as u64 * 1000 + 1_000 - into) % (ROUND_SECS as u64 * 1000),
    ))
    .await;
    let op = Operator::start_with(
        hub.clone(),
        "probation-op",
        &[
            "--challenge-bands".into(),
            bands.display().to_string(),
            "--verify-interval".into(),
            format!("{ROUND_SECS}s"),
            "--challenge-timeout".into(),
            "20s".into(),
            "--challenge-round-grace".into(),
            "2s".into(),
            "--join-probation".into(),
        ],
    );
    let joined = until_verified(&hub, "honest", ("False", "OnProbation"), Duration::from_secs(25)).await;
    let st = joined.status.expect("status");
    let v = st.verification.expect("verification");
    assert_eq!(
        (v.verified_gpus, v.failed_gpus, v.probation_gpus),
        (0, 0, Some(8)),
        "{v:?}"
    );
    assert!(
        v.verified_nodes.is_empty(),
        "no verifiedOnly work on probation: {v:?}"
    );
    let round = v.next_round_time.expect("the round that may prove it");
    let round_secs = gpufed_operator::time::parse(&round).expect("RFC 3339");
    let message = gpufed_api::conditions::find(&st.conditions, gpufed_api::conditions::types::VERIFIED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.ends_with(&round), "{message}");
    // The liar fails at join, probation or not.
    until_verified(
        &hub,
        "liar",
        ("False", "ChallengeFailed"),
        Duration::from_secs(25),
    )
    .await;

    // The round proves the honest GPUs: all eight count, none on probation.
    let proven = until_verified(
        &hub,
        "honest",
        ("True", "ChallengesPassed"),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        gpufed_operator::time::now() >= round_secs,
        "verified only from the round at {round}"
    );
    let v = proven.status.and_then(|s| s.verification).expect("verification");
    assert_eq!((v.verified_gpus, v.probation_gpus), (8, None), "{v:?}");
    assert_eq!(v.verified_nodes, ["h-0"], "{v:?}");
    op.stop().await;
    for p in plugins {
        p.abort();
    }
    drop(env);
}
