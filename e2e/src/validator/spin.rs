//! Moves the test validator's two busy-polling threads to the lowest CPU priority, so that
//! they stop starving its proof-of-history clock.
//!
//! Why: a single-node test validator is always the leader, and threads of it poll instead
//! of sleeping: the banking scheduler (`solBnkTxSched`: a leader never blocks on its
//! channel) and the repair service (`solRepairSvc`: 1 ms sleeps), besides broadcast, which
//! signs every shred. Together they filled both CI cores whatever else ran. The PoH tick
//! thread (`solPohTickProd`) wakes about 700 times a second and then waited for a core most
//! of the time (8.2 s of run-queue wait in 10 s), so a slot took 1.0–1.4 s instead of
//! 0.4 s, and every test that waits for finality (32 slots) or for a blockhash to expire
//! (150 slots) waited that much longer.
//!
//! Broadcast stays at normal priority: it writes the leader's own shreds to the blockstore,
//! and `getBlock` (which settlement's finality check reads) serves a slot only after that.
//! Niced too, it fell behind the faster slots and `getBlock` lagged ever further (a batch
//! never counted final in 180 s). Measured on agave 3.1.12 built by
//! `scripts/install-solana.sh` (its signature and hash crates optimized), 2 cores,
//! 2026-12-04: idle validator 26–27 slots per 15 s (0.57 s/slot) with `getBlock` one slot
//! behind finality, against 1.2 s/slot before.
//!
//! The niced threads still get every cycle nothing else wants, so transactions still land.
//! Lowering a thread's own priority needs no privilege; `setpriority(PRIO_PROCESS, tid)`
//! acts on one thread on Linux.

use std::path::Path;

use rustix::process::{Pid, setpriority_process};

/// The polling threads, by the names agave 3.1 gives them.
pub(super) const BUSY_THREADS: [&str; 2] = ["solBnkTxSched", "solRepairSvc"];

/// The niceness they get.
const NICE: i32 = 19;

/// Renices the busy threads of process `pid`; returns the names of those it reniced. A
/// thread that exits meanwhile is skipped; other failures are logged, never fatal — the
/// validator only runs slower without this.
pub(super) fn calm_busy_threads(pid: u32) -> Vec<String> {
    calm_in(Path::new(&format!("/proc/{pid}/task")), |tid| {
        let pid = i32::try_from(tid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or("not a thread id")?;
        setpriority_process(Some(pid), NICE).map_err(|_| "setpriority failed")
    })
}

/// The walk over `tasks` (a `/proc/<pid>/task` directory), with the renice step apart so
/// that tests can run it on a fake directory.
fn calm_in(tasks: &Path, mut renice: impl FnMut(u32) -> Result<(), &'static str>) -> Vec<String> {
    let mut calmed = Vec::new();
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return calmed;
    };
    for entry in entries.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let name = comm.trim_end();
        if !BUSY_THREADS.contains(&name) {
            continue;
        }
        match renice(tid) {
            Ok(()) => calmed.push(name.to_owned()),
            Err(why) => tracing::warn!(tid, name, why, "could not lower a validator thread's priority"),
        }
    }
    calmed.sort();
    calmed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(dir: &Path, tid: &str, comm: &str) {
        std::fs::create_dir_all(dir.join(tid)).expect("task dir");
        std::fs::write(dir.join(tid).join("comm"), format!("{comm}\n")).expect("comm");
    }

    #[test]
    fn only_the_busy_threads_are_reniced() {
        let dir = tempfile::tempdir().expect("tempdir");
        task(dir.path(), "100", "solana-test-val");
        task(dir.path(), "101", "solBnkTxSched");
        task(dir.path(), "102", "solPohTickProd");
        task(dir.path(), "103", "solRepairSvc");
        task(dir.path(), "104", "solBroadcastTx");
        task(dir.path(), "105", "solBroadcast");
        std::fs::create_dir_all(dir.path().join("not-a-tid")).expect("dir");
        let mut reniced = Vec::new();
        let calmed = calm_in(dir.path(), |tid| {
            reniced.push(tid);
            if tid == 103 { Err("gone") } else { Ok(()) }
        });
        reniced.sort_unstable();
        assert_eq!(
            reniced,
            [101, 103],
            "broadcast and the PoH clock keep their priority"
        );
        assert_eq!(calmed, ["solBnkTxSched"], "a failed renice is not reported done");
    }

    #[test]
    fn a_real_thread_of_this_process_gets_nice_19() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name(BUSY_THREADS[1].into())
            .spawn(move || {
                let me = std::fs::read_link("/proc/thread-self").expect("thread-self");
                tx.send(me.display().to_string()).expect("send tid");
                let _ = done_rx.recv();
                rustix::process::getpriority_process(None).expect("own nice")
            })
            .expect("spawn");
        let tid = rx.recv().expect("tid");
        let before = rustix::process::getpriority_process(None).expect("this thread's nice");
        let calmed = calm_busy_threads(std::process::id());
        done_tx.send(()).expect("release");
        let nice = worker.join().expect("join");
        assert!(
            calmed.iter().any(|n| n == BUSY_THREADS[1]),
            "{calmed:?} (tid {tid})"
        );
        assert_eq!(nice, NICE, "the thread itself reads nice {NICE}");
        let after = rustix::process::getpriority_process(None).expect("this thread's nice");
        assert_eq!(before, after, "other threads keep their priority");
    }
}
