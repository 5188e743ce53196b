//! A slow or lying member API server hurts only its own provider (reliability issue #10).
//!
//! Three providers; the operator reaches provider-a through a [`TcpProxy`] (its kubeconfig
//! Secret names the proxy's port). With jobs running on all three, provider-a's proxy is
//! stalled (a hung API server: connections accepted, nothing answered), then made to lie
//! (junk that is neither HTTP nor TLS), then restored. Throughout, jobs for provider-b and
//! provider-c are placed and finish as fast as before the fault, their heartbeats keep
//! coming, and their running jobs are not touched; provider-a turns NotReady within its
//! grace period, its job fails over, its condition names the error, and when it comes back
//! it is Ready again and the failed-over attempt's pods there are removed.

mod common;
mod opsupport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use gpufed_api::conditions;
use gpufed_api::job_status::AttemptOutcome;
use gpufed_api::{ComputeJob, Condition, ConditionStatus, GpuProvider};
use gpufed_e2e::tcpproxy::TcpProxy;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use opsupport::{Operator, job, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);
/// The providers' heartbeat grace period (set by `opsupport::setup`).
const GRACE: Duration = Duration::from_secs(10);
/// How long the short jobs run on the simulated nodes.
const SHORT_RUN: u32 = 3;

/// A one-GPU job that may run on `providers` only (any provider when empty).
fn job_on(name: &str, providers: &[&str], run_seconds: u32) -> serde_json::Value {
    let mut j = job(name, 1, 1, serde_json::json!({}), "1.00", run_seconds);
    if !providers.is_empty() {
        j["spec"]["placement"]["providers"] = serde_json::json!(providers);
    }
    j
}

fn placed_on(job: &ComputeJob) -> Option<(String, u32)> {
    let p = job.status.as_ref()?.placement.as_ref()?;
    Some((p.provider.clone(), p.attempt))
}

/// Waits until `pred` holds for the provider, returning it; panics with its status.
async fn provider_until(
    hub: &Client,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&GpuProvider) -> bool,
) -> GpuProvider {
    let api: Api<GpuProvider> = Api::all(hub.clone());
    let got = gpufed_e2e::wait::until(what, timeout, || async {
        let p = api.get(name).await?;
        Ok(pred(&p).then_some(p))
    })
    .await;
    match got {
        Ok(p) => p,
        Err(e) => {
            let status = api.get(name).await.ok().and_then(|p| p.status);
            panic!("{name}: {e}; last status: {status:?}")
        }
    }
}

fn condition(p: &GpuProvider, type_: &str) -> Option<Condition> {
    conditions::find(&p.status.as_ref()?.conditions, type_).cloned()
}

fn is_true(p: &GpuProvider, type_: &str) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, type_))
}

/// Submits one short job per provider (pinned there) and waits for each to be placed
/// there, Running and Succeeded with a single attempt; returns the slowest
/// submit-to-Succeeded time.
async fn short_batch(hub: &Client, ns: &str, prefix: &str, providers: &[&str]) -> Duration {
    let start = Instant::now();
    for p in providers {
        submit(hub, ns, &job_on(&format!("{prefix}-{p}"), &[p], SHORT_RUN)).await;
    }
    let mut slowest = Duration::ZERO;
    for p in providers {
        let name = format!("{prefix}-{p}");
        let running = job_until(hub, ns, &name, "Running (or done)", 2 * MINUTE, |j| {
            matches!(phase(j).as_str(), "Running" | "Succeeded")
        })
        .await;
        assert_eq!(placed_on(&running), Some((p.to_string(), 1)), "{name}");
        let done = job_until(hub, ns, &name, "Succeeded", 2 * MINUTE, |j| {
            phase(j) == "Succeeded"
        })
        .await;
        slowest = slowest.max(start.elapsed());
        let st = done.status.expect("status");
        assert_eq!(st.attempts.len(), 1, "{name}: {:?}", st.attempts);
        assert_eq!(placed_on_status(&st), Some((p.to_string(), 1)), "{name}");
    }
    slowest
}

fn placed_on_status(st: &gpufed_api::ComputeJobStatus) -> Option<(String, u32)> {
    st.placement.as_ref().map(|p| (p.provider.clone(), p.attempt))
}

/// Watches provider-b and provider-c from the hub every 500 ms: the largest heartbeat
/// age seen (seconds) and whether either was ever not Ready.
struct Watchdog {
    max_age: Arc<AtomicI64>,
    not_ready: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    fn start(hub: &Client, providers: &'static [&'static str]) -> Self {
        let (max_age, not_ready) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicBool::new(false)));
        let api: Api<GpuProvider> = Api::all(hub.clone());
        let (m, n) = (max_age.clone(), not_ready.clone());
        let task = tokio::spawn(async move {
            loop {
                for name in providers {
                    if let Ok(p) = api.get(name).await {
                        if !is_true(&p, "Ready") {
                            tracing::error!(provider = name, status = ?p.status, "not Ready during the fault");
                            n.store(true, Ordering::SeqCst);
                        }
                        let beat = p
                            .status
                            .as_ref()
                            .and_then(|s| s.last_heartbeat_time.as_deref())
                            .and_then(gpufed_operator::time::parse);
                        if let Some(beat) = beat {
                            m.fetch_max(gpufed_operator::time::now() - beat, Ordering::SeqCst);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self {
            max_age,
            not_ready,
            task,
        }
    }

    /// (largest heartbeat age seen, ever not Ready), and resets both.
    fn take(&self) -> (i64, bool) {
        (
            self.max_age.swap(0, Ordering::SeqCst),
            self.not_ready.swap(false, Ordering::SeqCst),
        )
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_lying_member_api_server_hurts_only_its_own_provider() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let test_start = Instant::now();
    let spec = FederationSpec::new("hostile-api")
        .member("provider-a", vec![GpuPool::rtx4090("a-rtx", 2)])
        .member("provider-b", vec![GpuPool::rtx4090("b-rtx", 3)])
        .member("provider-c", vec![GpuPool::rtx4090("c-rtx", 3)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    // provider-a is the cheapest, so an unpinned job goes there first and fails over to
    // provider-b next.
    opsupport::setup(
        fed,
        &hub,
        &[
            ("provider-a", "0.30"),
            ("provider-b", "0.40"),
            ("provider-c", "0.50"),
        ],
    )
    .await;

    // provider-a's kubeconfig Secret names a proxy in front of its API server (the serving
    // certificate covers 127.0.0.1 on any port).
    let member_a = fed.cluster("provider-a").expect("provider-a");
    let upstream = format!("127.0.0.1:{}", member_a.ports().apiserver);
    let proxy = TcpProxy::start(upstream.parse().expect("addr"))
        .await
        .expect("proxy");
    let kubeconfig = std::fs::read_to_string(member_a.kubeconfig()).expect("kubeconfig");
    let direct = format!("server: https://{upstream}");
    assert!(kubeconfig.contains(&direct), "{kubeconfig}");
    let via_proxy = kubeconfig.replace(&direct, &format!("server: https://127.0.0.1:{}", proxy.port()));
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), "gpufed-system");
    secrets
        .patch(
            "provider-a-kubeconfig",
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "provider-a-kubeconfig"},
                "data": {"kubeconfig": ByteString(via_proxy.into_bytes())},
            })),
        )
        .await
        .expect("provider-a's Secret via the proxy");

    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 3).await;
    let ns = common::namespace(&hub, "hostile").await;
    let others: &'static [&'static str] = &["provider-b", "provider-c"];

    // Baseline: how long a short job on b and c takes with nothing wrong.
    let baseline = short_batch(&hub, &ns, "base", others).await;
    let bound = (3 * baseline).max(Duration::from_secs(20));
    eprintln!("baseline submit→Succeeded {baseline:?}; bound under faults {bound:?}");

    // Jobs running on all three providers.
    submit(&hub, &ns, &job_on("long-a", &[], 20)).await;
    submit(&hub, &ns, &job_on("long-b", &["provider-b"], 40)).await;
    submit(&hub, &ns, &job_on("long-c", &["provider-c"], 40)).await;
    for (name, provider) in [
        ("long-a", "provider-a"),
        ("long-b", "provider-b"),
        ("long-c", "provider-c"),
    ] {
        let running = job_until(&hub, &ns, name, "Running", MINUTE, |j| phase(j) == "Running").await;
        assert_eq!(placed_on(&running), Some((provider.to_owned(), 1)), "{name}");
    }
    let long_a_uid = Api::<ComputeJob>::namespaced(hub.clone(), &ns)
        .get("long-a")
        .await
        .expect("long-a")
        .metadata
        .uid
        .expect("uid");
    let watchdog = Watchdog::start(&hub, others);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (calm_age, calm_not_ready) = watchdog.take();
    assert!(!calm_not_ready, "b and c Ready before the fault");

    // --- Stall: provider-a's API server hangs.
    proxy.stall();
    let stalled_at = Instant::now();
    let batch = async {
        let t = short_batch(&hub, &ns, "stall", others).await;
        eprintln!("stall: b/c batch submit→Succeeded {t:?}");
        assert!(
            t <= bound,
            "b/c jobs slowed by a stalled provider-a: {t:?} > {bound:?}"
        );
    };
    let lost = async {
        let a = provider_until(&hub, "provider-a", "provider-a NotReady", GRACE + MINUTE, |p| {
            !is_true(p, "Ready")
                && condition(p, "Reachable").is_some_and(|c| c.status == ConditionStatus::False)
        })
        .await;
        let after = stalled_at.elapsed();
        let reachable = condition(&a, "Reachable").expect("Reachable");
        eprintln!(
            "stall: provider-a NotReady after {after:?}; Reachable: {}",
            reachable.message
        );
        assert!(
            after <= GRACE + Duration::from_secs(20),
            "provider-a NotReady only after {after:?}"
        );
        assert_eq!(
            condition(&a, "Ready").map(|c| c.reason),
            Some("HeartbeatLost".to_owned())
        );
        // The condition names the timeout, not only "client error (Connect)".
        assert!(
            ["deadline has elapsed", "timed out"]
                .iter()
                .any(|t| reachable.message.contains(t)),
            "{}",
            reachable.message
        );
        reachable.message
    };
    let failover = async {
        let moved = job_until(
            &hub,
            &ns,
            "long-a",
            "long-a attempt 2 on b or c",
            2 * MINUTE,
            |j| placed_on(j).is_some_and(|(_, attempt)| attempt == 2),
        )
        .await;
        eprintln!("stall: long-a failed over after {:?}", stalled_at.elapsed());
        let (provider, _) = placed_on(&moved).expect("placement");
        assert!(others.contains(&provider.as_str()), "failed over to {provider}");
        let st = moved.status.expect("status");
        assert_eq!(st.attempts[0].outcome, AttemptOutcome::ProviderLost);
        let done = job_until(&hub, &ns, "long-a", "long-a Succeeded", 2 * MINUTE, |j| {
            phase(j) == "Succeeded"
        })
        .await;
        assert_eq!(placed_on(&done).map(|p| p.1), Some(2));
    };
    let ((), stall_message, ()) = tokio::join!(batch, lost, failover);
    // The running jobs on b and c were never touched: one attempt each, to the end.
    for (name, provider) in [("long-b", "provider-b"), ("long-c", "provider-c")] {
        let done = job_until(&hub, &ns, name, "Succeeded", 2 * MINUTE, |j| {
            phase(j) == "Succeeded"
        })
        .await;
        let st = done.status.expect("status");
        assert_eq!(st.attempts.len(), 1, "{name}: {:?}", st.attempts);
        assert_eq!(placed_on_status(&st), Some((provider.to_owned(), 1)), "{name}");
    }
    let (stall_age, stall_not_ready) = watchdog.take();
    eprintln!("b/c heartbeat age: before the fault ≤ {calm_age} s, while stalled ≤ {stall_age} s");
    assert!(
        !stall_not_ready,
        "b or c turned NotReady while provider-a was stalled"
    );

    // --- Garbage: provider-a's endpoint answers junk.
    proxy.garbage();
    let t = short_batch(&hub, &ns, "garbage", others).await;
    eprintln!("garbage: b/c batch submit→Succeeded {t:?}");
    assert!(
        t <= bound,
        "b/c jobs slowed by a lying provider-a: {t:?} > {bound:?}"
    );
    let lying = provider_until(
        &hub,
        "provider-a",
        "provider-a's condition names the TLS error",
        MINUTE,
        // rustls' words for a first byte that is no TLS record type.
        |p| {
            condition(p, "Reachable")
                .is_some_and(|c| c.status == ConditionStatus::False && c.message.contains("corrupt message"))
        },
    )
    .await;
    let message = condition(&lying, "Reachable").expect("Reachable").message;
    eprintln!("garbage: provider-a Reachable: {message}");
    assert!(!is_true(&lying, "Ready"));
    assert!(message.starts_with("provider provider-a: "), "{message}");
    assert_ne!(message, stall_message);
    let (garbage_age, garbage_not_ready) = watchdog.take();
    eprintln!("b/c heartbeat age while lying ≤ {garbage_age} s");
    assert!(
        !garbage_not_ready,
        "b or c turned NotReady while provider-a was lying"
    );
    assert!(operator.is_running(), "the operator survived the lying member");

    // --- Restore: provider-a is Ready again and the failed-over attempt's pods go.
    proxy.restore();
    let restored_at = Instant::now();
    provider_until(&hub, "provider-a", "provider-a Ready again", MINUTE, |p| {
        is_true(p, "Ready") && is_true(p, "Reachable")
    })
    .await;
    eprintln!("restore: provider-a Ready after {:?}", restored_at.elapsed());
    let direct_a = env.member_client("provider-a").await.expect("member a");
    opsupport::pods_removed(
        &direct_a,
        &long_a_uid,
        "long-a attempt 1 removed from provider-a",
        2 * MINUTE,
    )
    .await;
    eprintln!("restore: stale pods removed after {:?}", restored_at.elapsed());
    job_until(&hub, &ns, "long-a", "attempt 1 marked removed", MINUTE, |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.attempts.first().is_some_and(|a| a.removed))
    })
    .await;
    // And provider-a takes work again.
    let t = short_batch(&hub, &ns, "after", &["provider-a"]).await;
    eprintln!("restore: a job on provider-a submit→Succeeded {t:?}");
    assert!(operator.is_running(), "the operator is still running");
    drop(watchdog);
    operator.stop().await;
    eprintln!("test wall time {:?}", test_start.elapsed());
}
