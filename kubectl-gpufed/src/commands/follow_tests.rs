use std::future::{Ready, pending, ready};

use serde_json::json;

use super::*;
use crate::fixtures::job;

fn api(code: u16) -> Error {
    Error::Api {
        what: "reading computejob team/train".into(),
        message: format!("HTTP {code}"),
        code: Some(code),
    }
}

fn unreachable() -> Error {
    Error::Unreachable {
        server: "https://hub".into(),
        message: "Connection refused".into(),
    }
}

fn succeeded() -> ComputeJob {
    job(
        "train",
        "team",
        Some(json!({"phase": "Succeeded", "usage": {"gpuSeconds": 60, "cost": "0.1"}})),
    )
}

/// A read answering `answers` in turn, then the last one for good.
fn reads<T: Clone>(answers: Vec<Result<T, u16>>) -> impl FnMut() -> Ready<Result<T>> {
    let mut next = 0;
    move || {
        let answer = answers[next.min(answers.len() - 1)].clone();
        next += 1;
        ready(answer.map_err(|code| if code == 0 { unreachable() } else { api(code) }))
    }
}

/// `submit --wait` on `read` with a 10s `--timeout`, machine-readable (no stdout).
async fn wait_10s<Fut>(read: impl FnMut() -> Fut) -> (Result<()>, Duration)
where
    Fut: std::future::Future<Output = Result<ComputeJob>>,
{
    let start = Instant::now();
    let result = wait_job(read, "team/train", Some(10), true, false).await;
    (result, start.elapsed())
}

fn assert_timed_out_at_10s((result, took): (Result<()>, Duration)) {
    match result {
        Err(Error::WaitTimeout { job, seconds, phase }) => {
            assert_eq!((job.as_str(), seconds, phase.as_str()), ("team/train", 10, "-"));
        }
        other => panic!("expected the wait to time out, got {other:?}"),
    }
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hub_that_stays_away_ends_at_the_timeout() {
    // Unreachable on every read: retried, but only until the deadline.
    assert_timed_out_at_10s(wait_10s(reads::<ComputeJob>(vec![Err(0)])).await);
    // A server error on every read: the same.
    assert_timed_out_at_10s(wait_10s(reads::<ComputeJob>(vec![Err(503)])).await);
}

#[tokio::test(start_paused = true)]
async fn a_read_that_never_answers_ends_at_the_timeout() {
    assert_timed_out_at_10s(wait_10s(pending).await);
}

#[tokio::test(start_paused = true)]
async fn without_a_timeout_a_silent_hub_still_ends_the_wait() {
    // No --timeout: each read is cut after READ_TIMEOUT and retried, MAX_READ_FAILURES
    // times, then the wait ends instead of hanging for good.
    let start = Instant::now();
    let result = wait_job(pending, "team/train", None, true, false).await;
    assert!(
        matches!(result, Err(Error::NoAnswer { seconds: 30 })),
        "{result:?}"
    );
    let reads = READ_TIMEOUT * (MAX_READ_FAILURES + 1) + POLL * MAX_READ_FAILURES;
    assert!(start.elapsed() >= reads, "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_until_the_job_ends() {
    for code in [503, 500, 429] {
        let read = reads(vec![Err(code), Ok(succeeded())]);
        let (result, took) = wait_10s(read).await;
        assert!(result.is_ok(), "{code}: {result:?}");
        assert_eq!(took, POLL, "{code}: one retry, one poll later");
    }
    let read = reads(vec![Err(0), Err(503), Ok(succeeded())]);
    assert!(wait_10s(read).await.0.is_ok());
}

#[tokio::test(start_paused = true)]
async fn refusals_end_the_wait_at_once() {
    for code in [403, 404, 422] {
        let (result, took) = wait_10s(reads::<ComputeJob>(vec![Err(code), Ok(succeeded())])).await;
        match result {
            Err(Error::Api { code: c, .. }) => assert_eq!(c, Some(code)),
            other => panic!("{code}: expected the refusal, got {other:?}"),
        }
        assert_eq!(took, Duration::ZERO);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_is_the_waits_error() {
    let failed = job("train", "team", Some(json!({"phase": "Failed"})));
    let (result, _) = wait_10s(reads(vec![Ok(failed)])).await;
    assert!(matches!(result, Err(Error::JobFailed { .. })), "{result:?}");
}

/// `rollout status`-like following of numbers: 2 is done, anything else a state line.
async fn follow_numbers<Fut>(read: impl FnMut() -> Fut, once: bool) -> Result<()>
where
    Fut: std::future::Future<Output = Result<u32>>,
{
    follow_numbers_with(read, once, Some(10)).await
}

/// [`follow_numbers`], watching, with `timeout`.
async fn follow_with<Fut>(read: impl FnMut() -> Fut, timeout: Option<u64>) -> Result<()>
where
    Fut: std::future::Future<Output = Result<u32>>,
{
    follow_numbers_with(read, false, timeout).await
}

async fn follow_numbers_with<Fut>(read: impl FnMut() -> Fut, once: bool, timeout: Option<u64>) -> Result<()>
where
    Fut: std::future::Future<Output = Result<u32>>,
{
    let step = |n: u32| match n {
        2 => Step::Done("done".into()),
        _ => Step::Line(format!("waiting at {n}")),
    };
    follow(read, step, once, timeout, |seconds, last| Error::RolloutTimeout {
        service: "team/llm".into(),
        seconds,
        last,
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn following_ends_at_the_timeout_however_the_hub_answers() {
    for read in [reads::<u32>(vec![Err(0)]), reads(vec![Err(502)])] {
        let start = Instant::now();
        let result = follow_numbers(read, false).await;
        assert!(
            matches!(&result, Err(Error::RolloutTimeout { seconds: 10, last, .. }) if last.is_empty()),
            "{result:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(11));
    }
    let result = follow_numbers(pending, false).await;
    assert!(
        matches!(result, Err(Error::RolloutTimeout { seconds: 10, .. })),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn following_retries_server_errors_but_not_once() {
    assert!(follow_numbers(reads(vec![Err(503), Ok(2)]), false).await.is_ok());
    // `--watch=false` reads once: a failed read is the answer.
    let once = follow_numbers(reads(vec![Err(503), Ok(2)]), true).await;
    assert!(
        matches!(once, Err(Error::Api { code: Some(503), .. })),
        "{once:?}"
    );
}

#[test]
fn timeouts_are_more_than_zero_and_at_most_a_year() {
    assert_eq!(timeout_flag(None).unwrap(), None);
    assert_eq!(timeout_flag(Some("30m")).unwrap(), Some(1800));
    assert_eq!(timeout_flag(Some("8760h")).unwrap(), Some(MAX_TIMEOUT_SECS));
    // Far past any deadline a clock can hold: refused, not a panic after the cluster
    // was already changed.
    for (text, says) in [
        ("8760h1s", "longer than 8760h (a year)"),
        ("18446744073709551615s", "longer than 8760h"),
        ("0s", "no time to wait"),
        ("0h0m", "no time to wait"),
    ] {
        let e = timeout_flag(Some(text)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("invalid --timeout: ") && msg.contains(says),
            "{text}: {msg}"
        );
        assert!(msg.contains("leave --timeout out"), "{msg}");
    }
    assert!(
        timeout_flag(Some("soon"))
            .unwrap_err()
            .to_string()
            .starts_with("invalid --timeout")
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_past_the_clocks_end_is_no_deadline() {
    // poll is also reached by callers other than the flag: no panic, no timeout.
    let result = wait_job(
        reads(vec![Ok(succeeded())]),
        "team/train",
        Some(u64::MAX),
        true,
        false,
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let result = follow_with(reads(vec![Ok(1), Ok(2)]), Some(u64::MAX)).await;
    assert!(result.is_ok(), "{result:?}");
}

fn not_found() -> Error {
    Error::NotFound {
        kind: "computejob",
        namespace: "team".into(),
        name: "train".into(),
    }
}

/// Reads `jobs` in turn, then "not found" for good.
fn then_gone(jobs: Vec<ComputeJob>) -> impl FnMut() -> Ready<Result<ComputeJob>> {
    let mut jobs = jobs.into_iter();
    move || ready(jobs.next().ok_or_else(not_found))
}

#[tokio::test(start_paused = true)]
async fn a_job_deleted_by_its_ttl_between_reads_says_so() {
    let mut running = job("train", "team", Some(json!({"phase": "Running"})));
    running.spec.ttl_seconds_after_finished = Some(0);
    let (result, _) = wait_10s(then_gone(vec![running.clone()])).await;
    match result {
        Err(e @ Error::DeletedByTtl { .. }) => assert_eq!(
            e.to_string(),
            "computejob team/train was deleted by its ttlSecondsAfterFinished (0s) before its outcome was read (last phase Running)"
        ),
        other => panic!("expected the TTL deletion, got {other:?}"),
    }
    // Gone one poll after it was seen running: a TTL of a few seconds may have done it,
    // one of an hour may not (deleted by someone); nor can no TTL, or a job never seen.
    running.spec.ttl_seconds_after_finished = Some(3);
    let (result, _) = wait_10s(then_gone(vec![running.clone()])).await;
    assert!(
        matches!(result, Err(Error::DeletedByTtl { ttl: 3, .. })),
        "{result:?}"
    );
    for ttl in [Some(3600), None] {
        running.spec.ttl_seconds_after_finished = ttl;
        let (result, _) = wait_10s(then_gone(vec![running.clone()])).await;
        assert!(
            matches!(result, Err(Error::NotFound { .. })),
            "{ttl:?}: {result:?}"
        );
    }
    let (result, _) = wait_10s(then_gone(Vec::new())).await;
    assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}");
}
