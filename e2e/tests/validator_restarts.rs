//! The real test validator stopped at different points of its life and restarted on its
//! ledger, as the outage tests do: every restart must root new slots. A stop can leave the
//! vote tower ahead of the blockstore; kept, it wedged the restarted single-voter chain at
//! its old root for good (every transaction sent to it unconfirmed, its blockhash never
//! expiring), which failed `operator_settlement` in CI.

use std::time::Duration;

use gpufed_e2e::Validator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_stopped_at_any_point_roots_new_slots_after_each_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut validator = Validator::start(dir.path()).await.expect("validator starts");
    // Uneven lifetimes, so that the stops land at different points of the vote cycle.
    for (restart, up) in [23u64, 37, 11].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(up)).await;
        let before = validator.finalized_slot().await;
        validator.stop();
        assert_eq!(
            validator.finalized_slot().await,
            None,
            "a stopped chain answers nothing"
        );
        validator
            .resume()
            .await
            .unwrap_or_else(|e| panic!("restart {restart} (after {up} s up): {e}"));
        let after = validator.finalized_slot().await;
        assert!(
            after > before,
            "restart {restart}: finalized slot {after:?} after, {before:?} before"
        );
    }
    let aside = std::fs::read_dir(validator.ledger())
        .expect("ledger")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bin.before-restart"))
        .count();
    assert_eq!(aside, 1, "the last stop's tower was set aside");
    validator.stop();
}
