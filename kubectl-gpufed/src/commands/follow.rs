//! Following a state to its end: `submit --wait`, `rollout status` and `provider drain`.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::time::Duration;

use gpufed_api::ComputeJob;
use gpufed_api::formats::parse_duration;
use gpufed_api::job_status::JobPhase;
// tokio's clock, not std's: the deadline must follow the runtime's time (paused in tests).
use tokio::time::Instant;

use super::emit;
use crate::error::{Error, Result};
use crate::jobs;
use crate::output::thousands;
use crate::session::Session;

/// How often a followed object is read.
const POLL: Duration = Duration::from_secs(2);
/// Following gives up after this many consecutive failed reads.
const MAX_READ_FAILURES: u32 = 30;
/// One read without an answer this long is a failed read: the client sets no read
/// timeout, so a connection the hub stopped answering on would hang a wait for good.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `--timeout`: a year. Longer is surely a typo, and leaving the flag out
/// waits without a limit.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// `--timeout DURATION` in seconds, if given: more than 0 (a wait that may not read even
/// once would say nothing; leave the flag out to wait without a limit), at most
/// [`MAX_TIMEOUT_SECS`].
pub(crate) fn timeout_flag(value: Option<&str>) -> Result<Option<u64>> {
    let Some(text) = value else {
        return Ok(None);
    };
    let flag = |message: String| Error::Flag {
        flag: "--timeout".into(),
        message,
    };
    match parse_duration(text).map_err(|e| flag(e.to_string()))? {
        0 => Err(flag(format!(
            "{text:?} is no time to wait: give more than 0s, or leave --timeout out to wait without a limit"
        ))),
        s if s > MAX_TIMEOUT_SECS => Err(flag(format!(
            "{text:?} is longer than {}h (a year); leave --timeout out to wait without a limit",
            MAX_TIMEOUT_SECS / 3600
        ))),
        s => Ok(Some(s)),
    }
}

/// Why [`poll`] stopped, when not with an error.
enum Stop {
    /// `seen` ended it.
    Ended,
    /// The `--timeout` of this many seconds passed first.
    TimedOut(u64),
}

/// Reads with `read` every [`POLL`] and hands each object to `seen` until it breaks.
/// With `retry`, a read that failed transiently ([`Error::is_transient`]: no answer, a 5xx
/// or 429) is reported to `on_retry` and tried again, up to [`MAX_READ_FAILURES`] in a
/// row. `timeout` (seconds) bounds it all, reads that hang and retries included; one too
/// far to be a point in time ([`Instant`] overflows) is no bound.
async fn poll<T, Fut>(
    mut read: impl FnMut() -> Fut,
    mut seen: impl FnMut(T) -> ControlFlow<Result<()>>,
    retry: bool,
    timeout: Option<u64>,
    mut on_retry: impl FnMut(&Error),
) -> Result<Stop>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = timeout.and_then(|s| Some((s, Instant::now().checked_add(Duration::from_secs(s))?)));
    // Time left before the deadline, or `None` once it has passed.
    let left = || match deadline {
        None => Some(Duration::MAX),
        Some((_, at)) => at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()),
    };
    let mut failures = 0;
    loop {
        let Some(budget) = left() else {
            return Ok(Stop::TimedOut(deadline.map_or(0, |(s, _)| s)));
        };
        let result = match tokio::time::timeout(budget.min(READ_TIMEOUT), read()).await {
            Ok(result) => result,
            // Cut by the deadline: the loop's next turn says so.
            Err(_) if left().is_none() => continue,
            Err(_) => Err(Error::NoAnswer {
                seconds: READ_TIMEOUT.as_secs(),
            }),
        };
        match result {
            Ok(object) => {
                failures = 0;
                if let ControlFlow::Break(end) = seen(object) {
                    return end.map(|()| Stop::Ended);
                }
            }
            // The hub being away for a while is no reason to stop following: what is
            // followed goes on without it.
            Err(e) if retry && e.is_transient() && failures < MAX_READ_FAILURES => {
                failures += 1;
                on_retry(&e);
            }
            Err(e) => return Err(e),
        }
        if let Some(budget) = left() {
            tokio::time::sleep(budget.min(POLL)).await;
        }
    }
}

/// One look at what a progress command follows.
pub(crate) enum Step {
    /// It ended well: the last line.
    Done(String),
    /// It ended badly.
    Fail(Error),
    /// Still going: the state line.
    Line(String),
}

/// Reads with `read` every [`POLL`] and prints each new state line (stdout, as kubectl's)
/// until `step` ends it; `once`: prints the first line and stops. Transient read failures
/// are retried while following. Past `timeout` seconds, `on_timeout(seconds, last line)`
/// is the error.
pub(crate) async fn follow<T, Fut>(
    read: impl FnMut() -> Fut,
    step: impl Fn(T) -> Step,
    once: bool,
    timeout: Option<u64>,
    on_timeout: impl FnOnce(u64, String) -> Error,
) -> Result<()>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = String::new();
    let seen = |object| match step(object) {
        Step::Done(line) => ControlFlow::Break(emit(&format!("{line}\n"))),
        Step::Fail(e) => ControlFlow::Break(Err(e)),
        Step::Line(line) => {
            if line != last
                && let Err(e) = emit(&format!("{line}\n"))
            {
                return ControlFlow::Break(Err(e));
            }
            if once {
                return ControlFlow::Break(Ok(()));
            }
            last = line;
            ControlFlow::Continue(())
        }
    };
    let on_retry = |e: &Error| eprintln!("(retrying) {e}");
    match poll(read, seen, !once, timeout, on_retry).await? {
        Stop::Ended => Ok(()),
        Stop::TimedOut(seconds) => Err(on_timeout(seconds, last)),
    }
}

/// `submit --wait`: [`wait_job`] on the session's job `name`.
pub(crate) async fn wait(session: &Session, name: &str, timeout: Option<u64>, machine: bool) -> Result<()> {
    let job_ref = format!("{}/{name}", session.namespace);
    let tty = std::io::stderr().is_terminal();
    wait_job(|| session.job(name), &job_ref, timeout, machine, tty).await
}

/// Shows progress on stderr until the job `job_ref` read by `read` is terminal: redrawn
/// in place on a terminal (`tty`), one line per change otherwise. Succeeded is `Ok`,
/// Failed an error. The final line goes to stdout, or to stderr when stdout carries a
/// machine-readable document (`machine`). A job seen unfinished with a
/// `ttlSecondsAfterFinished` that is gone at a later read, no sooner than that TTL (give or
/// take a poll) after, was deleted by it before its outcome could be read
/// ([`Error::DeletedByTtl`], not a bare "not found").
async fn wait_job<Fut>(
    read: impl FnMut() -> Fut,
    job_ref: &str,
    timeout: Option<u64>,
    machine: bool,
    tty: bool,
) -> Result<()>
where
    Fut: std::future::Future<Output = Result<ComputeJob>>,
{
    let start = Instant::now();
    let mut last = String::new();
    let mut phase = crate::output::NONE.to_owned();
    // The last job's TTL, and when it was seen.
    let mut ttl = None;
    let seen = |job: ComputeJob| {
        ttl = job.spec.ttl_seconds_after_finished.map(|t| (t, Instant::now()));
        let elapsed = i64::try_from(start.elapsed().as_secs()).unwrap_or(i64::MAX);
        let line = jobs::progress_line(&job, elapsed);
        let state = line.split_once("] ").map_or(line.as_str(), |(_, s)| s).to_owned();
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if state != last {
            eprintln!("{line}");
        }
        last = state;
        phase = jobs::phase(&job);
        if !jobs::is_terminal(&job) {
            return ControlFlow::Continue(());
        }
        if tty {
            eprintln!();
        }
        ControlFlow::Break(finished(&job, machine))
    };
    let on_retry = |e: &Error| eprintln!("{}(retrying) {e}", if tty { "\r\x1b[2K" } else { "" });
    let result = poll(read, seen, true, timeout, on_retry).await;
    let stop = match (result, ttl) {
        // Finished after it was seen, then deleted once its TTL passed: not before.
        (Err(Error::NotFound { .. }), Some((ttl, seen)))
            if u64::from(ttl) <= (seen.elapsed() + POLL).as_secs() =>
        {
            if tty {
                eprintln!();
            }
            return Err(Error::DeletedByTtl {
                job: job_ref.to_owned(),
                ttl,
                phase,
            });
        }
        (stop, _) => stop?,
    };
    match stop {
        Stop::Ended => Ok(()),
        Stop::TimedOut(seconds) => {
            if tty {
                eprintln!();
            }
            Err(Error::WaitTimeout {
                job: job_ref.to_owned(),
                seconds,
                phase,
            })
        }
    }
}

/// The end of a terminal job's wait: its failure, or its last line printed.
fn finished(job: &ComputeJob, machine: bool) -> Result<()> {
    let job_ref = jobs::job_ref(job);
    if job.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Failed) {
        return Err(Error::JobFailed {
            job: job_ref,
            message: jobs::outcome_message(job),
        });
    }
    let usage = job
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .unwrap_or_default();
    let done = format!(
        "computejob {job_ref} Succeeded: {} GPU-seconds, cost {}\n",
        thousands(usage.gpu_seconds),
        if usage.cost.is_empty() { "0" } else { &usage.cost }
    );
    if machine {
        eprint!("{done}");
        return Ok(());
    }
    emit(&done)
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
