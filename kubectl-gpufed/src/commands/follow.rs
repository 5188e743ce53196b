//! Following a state to its end: `rollout status` and `provider drain`.

use std::time::Instant;

use super::{MAX_READ_FAILURES, POLL, emit};
use crate::error::{Error, Result};

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
/// until `step` ends it; `once`: prints the first line and stops. Unreachable reads are
/// retried while following. Past `timeout` seconds, `on_timeout(seconds, last line)` is
/// the error.
pub(crate) async fn follow<T, Fut>(
    mut read: impl FnMut() -> Fut,
    step: impl Fn(T) -> Step,
    once: bool,
    timeout: Option<u64>,
    on_timeout: impl FnOnce(u64, String) -> Error,
) -> Result<()>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut last = String::new();
    let mut failures = 0;
    loop {
        let seen = match read().await {
            Ok(seen) => {
                failures = 0;
                seen
            }
            Err(e @ Error::Unreachable { .. }) if !once && failures < MAX_READ_FAILURES => {
                failures += 1;
                eprintln!("(retrying) {e}");
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match step(seen) {
            Step::Done(line) => return emit(&format!("{line}\n")),
            Step::Fail(e) => return Err(e),
            Step::Line(line) => {
                if line != last {
                    emit(&format!("{line}\n"))?;
                }
                if once {
                    return Ok(());
                }
                last = line;
            }
        }
        if let Some(limit) = timeout
            && start.elapsed().as_secs() >= limit
        {
            return Err(on_timeout(limit, last));
        }
        tokio::time::sleep(POLL).await;
    }
}
