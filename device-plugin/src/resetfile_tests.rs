//! Tests of the reset-wait file (a file of their own to keep resetfile.rs short).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::*;
use crate::health::tests::fault;
use crate::health::{FaultKind, Health, HealthPolicy};

const BOOT: &str = "8512d1cd-d27c-4d96-879c-982b30a20e63";

/// The health tests' two GPUs, with a probation of 10 s.
fn book() -> HealthBook {
    crate::health::tests::book(10)
}

fn saved(cause: &str, answering_ends: bool) -> Saved {
    Saved {
        cause: cause.into(),
        since_unix: 1_700_000_000,
        answering_ends,
        ecc_total: None,
    }
}

#[test]
fn the_file_names_its_boot_and_another_boots_file_is_discarded() {
    let mut waiting = BTreeMap::new();
    waiting.insert("GPU-a".to_string(), saved("XID 64", false));
    let text = render(BOOT, &waiting);
    assert!(text.contains(BOOT) && text.contains("\"sinceUnix\""), "{text}");
    assert_eq!(parse(&text, &format!("{BOOT}\n")).unwrap(), Some(waiting));
    assert_eq!(parse(&text, "another-boot").unwrap(), None);
    assert!(parse("{not json", BOOT).is_err());
}

/// The defect: a restart served GPUs waiting for a reset healthy. Waits written by one
/// plugin come back in the next one of the same boot, and end as before.
#[test]
fn waits_survive_a_plugin_restart_in_the_same_boot_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let t0 = Instant::now();
    let mut b = book();
    let mut file = ResetFile::for_boot(Some(path.clone()), BOOT.into());
    assert!(file.load(&mut b).is_empty(), "no file yet");
    b.record(&fault("GPU-a", FaultKind::Xid(64)), t0);
    b.record(&fault("GPU-b", FaultKind::Xid(79)), t0);
    file.sync(&b, 100);
    assert!(std::fs::read_to_string(&path).unwrap().contains("XID 64"));
    assert!(!path.with_extension("json.tmp").exists(), "renamed into place");

    // The restart: a fresh book, every GPU healthy until the file is loaded.
    let mut again = book();
    let mut file2 = ResetFile::for_boot(Some(path.clone()), BOOT.into());
    assert_eq!(file2.load(&mut again), vec!["GPU-a", "GPU-b"]);
    assert_eq!(again.health("GPU-a"), Some(Health::Unhealthy));
    assert_eq!(again.awaiting_reset("GPU-a"), Some("XID 64"));
    assert!(
        again.tick(t0 + Duration::from_secs(86_400)).is_empty(),
        "not by time"
    );
    // What ends each wait is kept: answering again ends XID 79's, not XID 64's.
    let answers = |u: &str| fault(u, FaultKind::Answering("answers".into()));
    again.record(&answers("GPU-a"), t0);
    again.record(&answers("GPU-b"), t0);
    assert_eq!(again.awaiting_reset("GPU-a"), Some("XID 64"));
    assert_eq!(again.awaiting_reset("GPU-b"), None);
    // The ended wait leaves the file; the other keeps the time it began.
    file2.sync(&again, 200);
    let left = parse(&std::fs::read_to_string(&path).unwrap(), BOOT)
        .unwrap()
        .unwrap();
    assert_eq!(left.keys().collect::<Vec<_>>(), ["GPU-a"]);
    assert_eq!(left["GPU-a"].since_unix, 100);

    // After a reboot every GPU was reset: the file is discarded.
    let mut rebooted = book();
    let mut file3 = ResetFile::for_boot(Some(path), "another-boot".into());
    assert!(file3.load(&mut rebooted).is_empty());
    assert_eq!(rebooted.health("GPU-a"), Some(Health::Healthy));
}

#[test]
fn entries_of_gpus_not_served_now_are_kept_and_unchanged_waits_not_rewritten() {
    let mut file = ResetFile::for_boot(None, BOOT.into());
    file.saved.insert("GPU-gone".into(), saved("XID 48", false));
    let mut b = book();
    assert!(file.restore(&mut b).is_empty(), "unknown to this book");
    assert_eq!(file.next(&b, 5), None, "nothing changed");
    b.record(&fault("GPU-a", FaultKind::Lost("gone".into())), Instant::now());
    let next = file.next(&b, 5).unwrap();
    assert_eq!(next["GPU-gone"], saved("XID 48", false));
    assert!(next["GPU-a"].answering_ends && next["GPU-a"].since_unix == 5);
}

#[test]
fn a_failed_write_is_logged_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    // A directory that cannot be created: a regular file stands in its way.
    let mut file = ResetFile::for_boot(Some(blocker.join("sub").join(FILE_NAME)), BOOT.into());
    let mut b = book();
    b.record(&fault("GPU-a", FaultKind::Xid(48)), Instant::now());
    file.sync(&b, 1);
    assert_eq!(file.saved.len(), 1, "kept in memory");
}

/// Through the plugin state, with the running boot's id: a GPU waiting for a reset is
/// listed unhealthy from the first device list of the next plugin.
#[test]
fn a_restarted_plugin_lists_a_gpu_waiting_for_a_reset_unhealthy() {
    use crate::inventory::Inventory;
    use crate::service::{AllocateConfig, PluginState};
    if std::fs::read_to_string(BOOT_ID).is_err() {
        return; // not Linux: no boot id, kept in memory (tested above)
    }
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::from_simulate_str(include_str!("../testdata/hgx-h100x8.yaml")).unwrap();
    let uuid = inv.gpus[2].uuid.clone();
    let policy = HealthPolicy {
        reset_file: Some(dir.path().join(FILE_NAME)),
        ..HealthPolicy::default()
    };
    let health = |s: &PluginState| {
        s.devices()
            .into_iter()
            .find(|d| d.id == uuid)
            .map(|d| d.health)
            .unwrap()
    };
    let first = PluginState::new(inv.clone(), policy.clone(), AllocateConfig::default());
    first.observe(&[fault(&uuid, FaultKind::Xid(79))], Instant::now());
    drop(first);
    let second = PluginState::new(inv.clone(), policy.clone(), AllocateConfig::default());
    assert_eq!(health(&second), "Unhealthy");
    // The reset seen: the entry leaves the file, and a third plugin serves the GPU.
    second.observe(
        &[fault(&uuid, FaultKind::Reset("count went down".into()))],
        Instant::now(),
    );
    let third = PluginState::new(inv, policy, AllocateConfig::default());
    assert_eq!(health(&third), "Healthy");
}

/// The defect: a GPU reset while the plugin was down (`nvidia-smi -r` wants NVML clients
/// stopped) read an ECC count of 0 at the next start, which said nothing, and the GPU
/// waited for a reset for ever. The count is saved with the wait, handed to the source
/// before its first read, and the lower count read then ends the wait.
#[test]
fn a_reset_done_while_the_plugin_was_down_ends_a_dbe_wait() {
    use crate::readings::{Reading, Readings};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let t0 = Instant::now();
    let mut b = book();
    let mut file = ResetFile::for_boot(Some(path.clone()), BOOT.into());
    // The counter read 3, then the event's DBE (no count) and an XID 48: the count stays.
    b.record(&fault("GPU-a", FaultKind::DoubleBitEcc { total: 3 }), t0);
    b.record(&fault("GPU-a", FaultKind::DoubleBitEcc { total: 0 }), t0);
    b.record(&fault("GPU-a", FaultKind::Xid(48)), t0);
    // An XID 64 wait has no count: nothing to compare with, no entry.
    b.record(&fault("GPU-b", FaultKind::Xid(64)), t0);
    file.sync(&b, 100);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"eccTotal\": 3"), "{text}");

    // The restart.
    let mut again = book();
    ResetFile::for_boot(Some(path), BOOT.into()).load(&mut again);
    let counts = again.waiting_ecc();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("GPU-a".to_owned(), 3)]);
    let mut readings = Readings::default();
    for (uuid, n) in again.waiting_ecc() {
        readings.resume(&uuid, n);
    }
    let t1 = t0 + Duration::from_secs(1);
    for uuid in ["GPU-a", "GPU-b"] {
        for kind in readings.observe(uuid, Reading::Ecc(0)) {
            again.record(&fault(uuid, kind), t1);
        }
    }
    assert_eq!(again.awaiting_reset("GPU-a"), None, "the reset was seen");
    assert_eq!(again.awaiting_reset("GPU-b"), Some("XID 64"));
    assert_eq!(
        again.tick(t1 + Duration::from_secs(10)).len(),
        1,
        "GPU-a back after probation"
    );
    assert!(again.waiting_ecc().is_empty());
}

/// The health loop hands the saved counts to the source before its first poll.
#[test]
fn the_health_loop_gives_the_source_the_saved_counts_first() {
    use std::sync::{Arc, Mutex};

    use crate::inventory::Inventory;
    use crate::service::{AllocateConfig, PluginState};
    use crate::source::{GpuSource, SourceError};

    struct Recorder {
        inventory: Inventory,
        seen: Arc<Mutex<Vec<String>>>,
    }
    impl GpuSource for Recorder {
        fn inventory(&self) -> &Inventory {
            &self.inventory
        }
        fn resume_ecc(&mut self, counts: &BTreeMap<String, u64>) {
            self.seen.lock().unwrap().push(format!("resume {counts:?}"));
        }
        fn poll(&mut self, wait: Duration) -> Result<Vec<crate::health::Fault>, SourceError> {
            self.seen.lock().unwrap().push("poll".into());
            std::thread::sleep(wait);
            Ok(Vec::new())
        }
    }
    let inv = Inventory::from_simulate_str(include_str!("../testdata/hgx-h100x8.yaml")).unwrap();
    let uuid = inv.gpus[0].uuid.clone();
    let state = PluginState::new(inv.clone(), HealthPolicy::default(), AllocateConfig::default());
    state.observe(
        &[fault(&uuid, FaultKind::DoubleBitEcc { total: 2 })],
        Instant::now(),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let source = Recorder {
        inventory: inv,
        seen: seen.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let health = state.spawn_health_loop(Box::new(source), Duration::from_millis(5), stop_rx);
    while seen.lock().unwrap().len() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop_tx.send(true).unwrap();
    health.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], format!("resume {{{uuid:?}: 2}}"));
    assert_eq!(seen[1], "poll");
}
