//! Child processes owned by the harness: spawned in their own process group, logged to a
//! file, identified by PID *and* start time (so a recycled PID is never signalled), and
//! stopped with SIGTERM, then SIGKILL.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const SETPRIV: &str = "/usr/bin/setpriv";

/// What identifies a process the harness started, in the run state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Component name, e.g. `provider-a/kube-apiserver`.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// The program that was started.
    pub program: PathBuf,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

/// A running child process owned by this harness.
#[derive(Debug)]
pub struct ManagedProcess {
    record: ProcessRecord,
    child: Child,
}

/// Reads `(state, start_ticks)` of a process from `/proc`, or `None` when it does not exist.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall; fields[0] is field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// CPU seconds (user + system) process `pid` has used, or `None` when it does not exist.
/// Clock ticks of 10 ms (`USER_HZ` = 100), from `/proc/PID/stat` fields 14 and 15.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_of_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// [`cpu_seconds`] from the text of a `/proc/PID/stat`.
pub fn cpu_of_stat(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3, so utime and stime are fields[11] and fields[12].
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Picks a free TCP port on 127.0.0.1. The kernel may hand a just-released port out again,
/// so ports given out by this process are remembered and never returned twice.
pub fn free_port() -> Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding", "127.0.0.1:0"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("reading address of", "127.0.0.1:0"))?
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return Ok(port);
        }
    }
    Err(Error::Io {
        action: "finding a free port",
        path: PathBuf::from("127.0.0.1"),
        source: std::io::Error::other("no unused port after 100 tries"),
    })
}

/// The record of a running process (e.g. this one), or `None` when it does not exist.
pub fn record_of(pid: u32, name: &str) -> Option<ProcessRecord> {
    let (_, start_ticks) = proc_stat(pid)?;
    let program = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    Some(ProcessRecord {
        name: name.to_owned(),
        pid,
        start_ticks,
        program,
        log: PathBuf::new(),
    })
}

impl ProcessRecord {
    /// True when this exact process (same PID and start time) is still alive (not a zombie).
    pub fn is_alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((state, start)) if start == self.start_ticks && state != 'Z')
    }

    /// Sends `signal` if (and only if) this exact process is still alive.
    pub fn signal(&self, signal: Signal) -> bool {
        if !self.is_alive() {
            return false;
        }
        let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) else {
            return false;
        };
        kill_process(pid, signal).is_ok()
    }
}

impl ManagedProcess {
    /// Starts `program args` in its own process group with stdout and stderr appended to `log`.
    /// The process outlives its parent (what `gpufed-e2e up` needs); see [`Self::spawn_tied`].
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        Self::spawn_inner(name, program, args, &[], log, false)
    }

    /// Like [`Self::spawn`], but the process gets SIGKILL when the thread that started it
    /// exits, so it cannot outlive a test binary that is killed (no destructors run then).
    /// Uses util-linux `setpriv --pdeathsig KILL`, which execs the program (same PID); without
    /// `setpriv` it falls back to [`Self::spawn`].
    pub fn spawn_tied(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        Self::spawn_inner(name, program, args, &[], log, true)
    }

    /// Like [`Self::spawn_tied`], with `env` added to (or replacing in) the inherited
    /// environment, e.g. `KUBECONFIG` for an operator process.
    pub fn spawn_tied_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self> {
        Self::spawn_inner(name, program, args, env, log, true)
    }

    fn spawn_inner(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        tied: bool,
    ) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io("opening log", log))?;
        let err = out.try_clone().map_err(Error::io("opening log", log))?;
        tracing::debug!(name, program = %program.display(), ?args, "spawning");
        let setpriv = Path::new(SETPRIV);
        let mut command = if tied && setpriv.is_file() {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_owned(),
                program: program.to_owned(),
                source,
            })?;
        let pid = child.id();
        let start_ticks = proc_stat(pid).map(|(_, s)| s).unwrap_or_default();
        let record = ProcessRecord {
            name: name.to_owned(),
            pid,
            start_ticks,
            program: program.to_owned(),
            log: log.to_owned(),
        };
        Ok(Self { record, child })
    }

    /// The identity of this process.
    pub fn record(&self) -> &ProcessRecord {
        &self.record
    }

    /// Returns an error when the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::ExitedEarly {
                name: self.record.name.clone(),
                status: status.to_string(),
                log: self.record.log.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Stops the process: SIGTERM, up to `grace` to exit, then SIGKILL; always reaps it.
    pub fn stop(&mut self, grace: Duration) {
        stop_all(std::slice::from_mut(self), grace);
    }
}

/// Stops several processes together: SIGTERM to all, wait up to `grace`, SIGKILL the rest,
/// and reap every one of them (so none is left as a zombie).
pub fn stop_all(procs: &mut [ManagedProcess], grace: Duration) {
    for p in procs.iter_mut() {
        if matches!(p.child.try_wait(), Ok(None)) {
            let _ = kill_process_by_child(&p.child, Signal::TERM);
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut running = 0;
        for p in procs.iter_mut() {
            if matches!(p.child.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in procs.iter_mut() {
        if matches!(p.child.try_wait(), Ok(None)) {
            tracing::warn!(name = %p.record.name, pid = p.record.pid, "did not stop on SIGTERM; killing");
            let _ = p.child.kill();
        }
        let _ = p.child.wait();
    }
}

fn kill_process_by_child(child: &Child, signal: Signal) -> bool {
    i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|pid| kill_process(pid, signal).is_ok())
}

/// Stops processes that this harness started in another run (from a state file): SIGTERM to
/// those still alive with the recorded start time, wait up to `grace`, then SIGKILL.
/// Returns the names of the processes that were signalled.
pub fn stop_records(records: &[ProcessRecord], grace: Duration) -> Vec<String> {
    let signalled: Vec<&ProcessRecord> = records.iter().filter(|r| r.signal(Signal::TERM)).collect();
    let deadline = Instant::now() + grace;
    while signalled.iter().any(|r| r.is_alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in &signalled {
        if r.signal(Signal::KILL) {
            tracing::warn!(name = %r.name, pid = r.pid, "did not stop on SIGTERM; killed");
        }
    }
    signalled.iter().map(|r| r.name.clone()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_utime_and_stime_after_a_command_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "42 (kube apiserver) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 3 1 20 0 12";
        assert_eq!(cpu_of_stat(stat), Some(3.25));
        assert_eq!(
            cpu_of_stat("42 (x) S 1"),
            None,
            "too short: no figure rather than zero"
        );
        let mine = cpu_seconds(std::process::id()).unwrap();
        assert!(mine >= 0.0);
        assert_eq!(cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn spawn_and_stop_leaves_no_process() {
        let log = std::env::temp_dir().join(format!("gpufed-proc-test-{}.log", std::process::id()));
        let mut p = ManagedProcess::spawn("sleep", Path::new("/bin/sleep"), &["30".into()], &log).unwrap();
        let record = p.record().clone();
        assert!(record.is_alive());
        assert!(p.check_running().is_ok());
        p.stop(Duration::from_secs(5));
        assert!(!record.is_alive());
        assert!(proc_stat(record.pid).is_none_or(|(_, start)| start != record.start_ticks));
        std::fs::remove_file(&log).unwrap();
    }

    #[test]
    fn a_tied_process_dies_with_the_thread_that_started_it() {
        let log = std::env::temp_dir().join(format!("gpufed-tied-test-{}.log", std::process::id()));
        let spawn_log = log.clone();
        let mut p = std::thread::spawn(move || {
            let p = ManagedProcess::spawn_tied("sleep", Path::new("/bin/sleep"), &["30".into()], &spawn_log)
                .unwrap();
            // setpriv must reach its prctl() before this thread exits (it does not re-check
            // its parent afterwards); the harness' threads live far longer than this.
            std::thread::sleep(Duration::from_millis(300));
            p
        })
        .join()
        .unwrap();
        let record = p.record().clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while record.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!record.is_alive(), "tied process outlived its thread");
        p.stop(Duration::from_secs(1));
        std::fs::remove_file(&log).unwrap();
    }

    #[test]
    fn a_recycled_pid_is_not_signalled() {
        let me = std::process::id();
        let (_, start) = proc_stat(me).unwrap();
        let stale = ProcessRecord {
            name: "stale".into(),
            pid: me,
            start_ticks: start + 1,
            program: PathBuf::from("/bin/false"),
            log: PathBuf::new(),
        };
        assert!(!stale.is_alive());
        assert!(!stale.signal(Signal::TERM));
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
