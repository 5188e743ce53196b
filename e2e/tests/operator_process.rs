//! The operator as a real, separate OS process (`gpufed-e2e operator`), so that faults are
//! real: SIGKILL at random moments during a burst of jobs, and SIGSTOP of the leader for
//! longer than its Lease, then SIGCONT. GPU nodes are SIMULATED; API servers, scheduler and
//! controller-manager are real.
//!
//! What "no gang bound twice" and "no orphan" mean here:
//! - a watch on the member's gpufed pods (`app.kubernetes.io/managed-by=gpufed`) records
//!   every `(gpufed.io/job-uid, gpufed.io/attempt, pod name)` it ever sees, including pods
//!   that were created and deleted between two looks. A job passes when it is Succeeded
//!   with exactly one attempt record (attempt 1, Succeeded), and the watch saw pods of
//!   attempt 1 only, exactly one pod per worker;
//! - an orphan is a member pod, not being deleted, labeled `managed-by=gpufed`, whose job
//!   uid is none of the hub's jobs, or whose attempt is not its job's final attempt. The
//!   test waits up to two minutes for there to be none.

mod common;
mod opsupport;
mod procsupport;

use std::time::{Duration, Instant};

use gpufed_e2e::{FederationSpec, GpuPool};
use opsupport::{job, phase, submit};
use procsupport::*;
use rustix::process::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_repeatedly_during_a_burst() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let n = env_u32("GPUFED_KILL_JOBS", 60) as usize;
    let kills = env_u32("GPUFED_KILLS", 6);
    let seed = std::env::var("GPUFED_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("{n} jobs, {kills} kills, seed {seed} (GPUFED_KILL_SEED={seed} repeats the timings)");
    let mut rng = Rng(seed);
    // 3 nodes × 4 GPUs; every job is 1 worker × 1 GPU running 3 s.
    let gpus = 12;
    let run_secs = 3;
    let spec = FederationSpec::new("opp-kill").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 3)]);
    let Some((env, hub, kubeconfig)) = federation(spec).await else {
        return;
    };
    let logs = log_dir("kill");
    let mut op = OperatorProcess::start(&kubeconfig, "op-1", &logs);
    opsupport::providers_ready(&hub, 1).await;
    let member = env.member_client("provider-a").await.expect("member");
    let (seen, watch) = watch_member_pods(member.clone());
    let ns = common::namespace(&hub, "kill").await;

    let t0 = Instant::now();
    let submitter = {
        let (hub, ns) = (hub.clone(), ns.clone());
        tokio::spawn(async move {
            for i in 0..n {
                let spec = job(
                    &format!("burst-{i}"),
                    1,
                    1,
                    serde_json::json!({}),
                    "1.00",
                    run_secs,
                );
                submit(&hub, &ns, &spec).await;
            }
        })
    };
    // The time the unfinished jobs still need, spread over the kills still to come, so that
    // every kill lands inside the burst (whatever N).
    let remaining = |unfinished: usize| {
        let waves = unfinished.div_ceil(gpus) as u64;
        Duration::from_secs(waves * (u64::from(run_secs) + 2))
    };
    let mut unfinished_at_kill = Vec::new();
    for k in 0..kills {
        let jobs = list_jobs(&hub, &ns).await;
        let unfinished = n - succeeded(&jobs);
        let mean = (remaining(unfinished) / (kills - k + 1)).max(Duration::from_secs(1));
        let target = rng.duration(Duration::from_millis(200), 2 * mean);
        // The estimate can be slow (a faster operator finished the burst before the last
        // kill once): once only the last wave is left, kill at once, so every kill still
        // lands inside the burst (a killed leader's Lease must run out before anything
        // finishes again, so the kills that follow land there too).
        let waited = Instant::now();
        let unfinished = loop {
            let unfinished = n - succeeded(&list_jobs(&hub, &ns).await);
            if waited.elapsed() >= target || unfinished <= gpus {
                break unfinished;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        op.kill();
        unfinished_at_kill.push(unfinished);
        let down = rng.duration(Duration::ZERO, Duration::from_millis(1500));
        eprintln!(
            "kill {}/{kills} at {:.1} s with {unfinished} jobs unfinished; down {down:?}",
            k + 1,
            t0.elapsed().as_secs_f64()
        );
        tokio::time::sleep(down).await;
        op = OperatorProcess::start(&kubeconfig, "op-1", &logs);
    }
    submitter.await.expect("all jobs submitted");
    let timeout = 3 * remaining(n) + 2 * MINUTE;
    let jobs = all_succeeded(&hub, &ns, n, timeout).await;
    eprintln!(
        "all {n} jobs Succeeded after {:.1} s and {kills} kills",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        unfinished_at_kill.iter().all(|u| *u > 0),
        "every kill landed during the burst: unfinished jobs at each kill {unfinished_at_kill:?}"
    );
    // Let the watch catch up with the last changes before judging.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_each_gang_bound_once(&jobs, &seen);
    assert_no_orphans(&hub, &ns, &member).await;
    watch.abort();
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_resumed_writes_nothing() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // 1 node × 4 GPUs; 12 jobs of 1 GPU × 4 s run in three waves.
    let spec = FederationSpec::new("opp-freeze").member("provider-a", vec![GpuPool::a100_40gb("a-a100", 1)]);
    let Some((env, hub, kubeconfig)) = federation(spec).await else {
        return;
    };
    let logs = log_dir("freeze");
    let op1 = OperatorProcess::start(&kubeconfig, "op-1", &logs);
    opsupport::providers_ready(&hub, 1).await;
    holder_becomes(&hub, "op-1", 30 * Duration::from_secs(1)).await;
    let op2 = OperatorProcess::start(&kubeconfig, "op-2", &logs);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lease_holder(&hub).await.as_deref(),
        Some("op-1"),
        "the first replica leads"
    );

    let member = env.member_client("provider-a").await.expect("member");
    let (seen, watch) = watch_member_pods(member.clone());
    let ns = common::namespace(&hub, "freeze").await;
    let n = 12;
    for i in 0..n {
        submit(
            &hub,
            &ns,
            &job(&format!("burst-{i}"), 1, 1, serde_json::json!({}), "1.00", 4),
        )
        .await;
    }
    // Freeze the leader in the middle of dispatching the first wave.
    opsupport::job_until(&hub, &ns, "burst-0", "first dispatch", MINUTE, |j| {
        !phase(j).is_empty() && phase(j) != "Queued"
    })
    .await;
    op1.signal(Signal::STOP);
    let frozen = Instant::now();
    eprintln!("op-1 frozen");
    holder_becomes(&hub, "op-2", 5 * LEASE).await;
    let takeover = frozen.elapsed();
    eprintln!(
        "op-2 holds the Lease {:.1} s after the freeze",
        takeover.as_secs_f64()
    );
    // op-1 renewed at most a third of the lease (+ a round) before it froze, and the Lease
    // counts whole seconds: anything sooner than this was taken from a live lease.
    let earliest = LEASE - LEASE / 3 - Duration::from_secs(1);
    assert!(
        takeover >= earliest,
        "taken over {takeover:?} after the freeze, before the lease ran out"
    );
    // Jobs keep progressing under the new leader while the old one is still frozen.
    let done_at_takeover = succeeded(&list_jobs(&hub, &ns).await);
    gpufed_e2e::wait::until(
        "a job completes under op-2",
        40 * Duration::from_secs(1),
        || async { Ok((succeeded(&list_jobs(&hub, &ns).await) > done_at_takeover).then_some(())) },
    )
    .await
    .expect("progress while op-1 is frozen");
    let min_freeze = Duration::from_secs(15);
    tokio::time::sleep(min_freeze.saturating_sub(frozen.elapsed())).await;
    // Jobs placed by now: op-1 may still log `placed` for writes it sent before the freeze
    // (the API server answered while it was stopped), never for any other job.
    let placed_before_resume = placed_jobs(&list_jobs(&hub, &ns).await);
    let offset = op1.log_len();
    op1.signal(Signal::CONT);
    eprintln!("op-1 resumed after {:.1} s", frozen.elapsed().as_secs_f64());

    // The resumed replica must not take the Lease back while op-2 renews it.
    let watch_until = Instant::now() + 2 * LEASE;
    while Instant::now() < watch_until {
        assert_eq!(
            lease_holder(&hub).await.as_deref(),
            Some("op-2"),
            "Lease holder after op-1 resumed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let jobs = all_succeeded(&hub, &ns, n, 3 * MINUTE).await;
    assert_eq!(
        lease_holder(&hub).await.as_deref(),
        Some("op-2"),
        "op-2 still leads"
    );
    let after = op1.log_since(offset);
    // Neither a won Lease round nor a placement decided after the resume.
    let late: Vec<_> = logged_placements(&after)
        .filter(|j| !placed_before_resume.contains(*j))
        .collect();
    assert!(
        !after.contains("leader=true") && late.is_empty(),
        "op-1 acted as leader again after resuming (placed {late:?}):\n{after}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_each_gang_bound_once(&jobs, &seen);
    assert_no_orphans(&hub, &ns, &member).await;
    watch.abort();
    drop((op1, op2));
}

/// `namespace/name` of every job that has a placement (current or past).
fn placed_jobs(jobs: &[gpufed_api::ComputeJob]) -> std::collections::BTreeSet<String> {
    use kube::ResourceExt;
    jobs.iter()
        .filter(|j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.placement.is_some() || !s.attempts.is_empty())
        })
        .map(|j| format!("{}/{}", j.namespace().unwrap_or_default(), j.name_any()))
        .collect()
}

/// The `job=` field of each `placed` line the operator logged.
fn logged_placements(log: &str) -> impl Iterator<Item = &str> {
    log.lines()
        .filter(|l| l.contains("gpufed_operator::placement: placed"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("job=")))
}
