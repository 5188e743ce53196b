//! The hub's clock on a challenge: it runs from the hub's request to the moment the hub
//! sees the node's commitment, and a band's `roundTripSlackMs` is all the time it grants
//! beyond the device's. Whatever lies between the node publishing its commitment and the
//! hub reading it weakens what the clock proves (docs/trust.md, "What the hub's clock
//! proves"). These tests hold both connection modes to 5 s of slack while every periodic
//! probe and report is 20 s apart, so only the at-once paths can pass; and they check that
//! a round challenges every provider at its start, not at each one's next heartbeat
//! (docs/trust.md, "Rounds").

mod common;
mod opsupport;
mod pullsupport;
mod trustsupport;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use gpufed_api::GpuProvider;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use kube::Api;
use opsupport::Operator;
use trustsupport::{fake_plugin, verified};

/// The operator with 20 s heartbeats and a 20 s challenge poll, and a band of 5 s slack
/// (its bands file in `dir`): only a commitment that wakes the hub is seen in time.
fn slow_polls(hub: &kube::Client, identity: &str, dir: &tempfile::TempDir) -> Operator {
    slow_polls_with(hub, identity, dir, &[])
}

/// [`slow_polls`] with more flags.
fn slow_polls_with(hub: &kube::Client, identity: &str, dir: &tempfile::TempDir, more: &[&str]) -> Operator {
    let bands = dir.path().join("bands.yaml");
    std::fs::write(&bands, trustsupport::bands_with_slack(5000)).expect("bands file");
    Operator::start_tuned(
        hub.clone(),
        identity,
        &[("--heartbeat-interval", "20s")],
        &[
            "--challenge-bands".into(),
            bands.display().to_string(),
            "--challenge-poll".into(),
            "20s".into(),
            // Long enough for a commitment seen at the next poll to be judged too: it
            // would fail RoundTripTooSlow, not time out.
            "--challenge-timeout".into(),
            "100s".into(),
        ]
        .into_iter()
        .chain(more.iter().map(|f| (*f).to_owned()))
        .collect::<Vec<_>>(),
    )
}

/// The value of the first sample of `metrics` that starts with `name` (labels included).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Makes `name` of `fed` a pull-mode provider (the hub's members, the agents' roles, its
/// hub namespace); its agent starts once the operator runs.
async fn pull_member(fed: &gpufed_e2e::Federation, hub: &kube::Client, name: &str) {
    opsupport::setup_members(fed, hub, &[], &[]).await;
    pullsupport::install_agent_roles(hub).await;
    pullsupport::pull_provider(fed, hub, name, "1.00", "3m").await;
}

/// Waits (180 s at most) until all 8 GPUs of `name` are judged; asserts all verified.
async fn all_eight_verify(hub: &kube::Client, name: &str) {
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let v = gpufed_e2e::wait::until(&format!("{name} judged"), Duration::from_secs(180), || async {
        let p = providers.get(name).await?;
        let v = p.status.and_then(|s| s.verification);
        Ok(v.filter(|v| v.verified_gpus + v.failed_gpus == 8))
    })
    .await
    .expect("the challenge completes");
    assert_eq!(
        (v.verified_gpus, v.failed_gpus),
        (8, 0),
        "every GPU within the band's slack: {:?}",
        v.failures
    );
    let p = providers.get(name).await.expect("provider");
    assert_eq!(verified(&p), Some(("True".into(), "ChallengesPassed".into())));
}

/// Push mode: the node's new signed report wakes the provider's reconcile through the
/// hub's watch of the member's nodes, so the hub sees the commitment within the watch's
/// latency. Heartbeats and the challenge poll are both 20 s here: waiting for the next
/// probe would see it 20 s after the request, far past the band's 5 s of slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_providers_commitment_wakes_the_hub_at_once() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("clock-push").member("push-c", vec![GpuPool::h100_nvlink("pc", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    opsupport::setup(fed, &hub, &[]).await;
    let member = env.member_client("push-c").await.expect("member");
    let plugin = fake_plugin(member, Arc::new(AtomicBool::new(true)));
    let dir = tempfile::tempdir().expect("tempdir");
    let op = slow_polls(&hub, "clock-push-op", &dir);
    all_eight_verify(&hub, "push-c").await;
    plugin.abort();
    op.stop().await;
    drop(env);
}

/// A pull-mode provider proves as much as a push-mode one: its agent relays a challenge
/// request as soon as its watch of the hub's challenge ConfigMap fires, reports its nodes'
/// signed reports as soon as its watch of its nodes sees a new one, and the hub's watch
/// of the agents' reports wakes the provider's check. Heartbeats (so the agent's rounds)
/// and the challenge poll (so the agent's reports-only rounds and the hub's probes) are
/// 20 s here: any of those waits would put the round trip far past the band's 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_providers_challenges_go_through_its_agent_at_once() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("verify-pull").member("pull-v", vec![GpuPool::h100_nvlink("pv", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    let member = env.member_client("pull-v").await.expect("member");
    pull_member(fed, &hub, "pull-v").await;
    let plugin = fake_plugin(member.clone(), Arc::new(AtomicBool::new(true)));
    let dir = tempfile::tempdir().expect("tempdir");
    let op = slow_polls(&hub, "verify-pull-op", &dir);
    let (agent, _files) = pullsupport::Agent::bootstrap(fed, &hub, member, "pull-v").await;
    all_eight_verify(&hub, "pull-v").await;
    agent.stop().await;
    plugin.abort();
    op.stop().await;
    drop(env);
}

/// Periodic challenges come in fleet-wide rounds: two providers that joined apart are
/// challenged again at the same instant, each round's start (every 30 s on the clock
/// here), though their heartbeats (20 s) have phases of their own. Each provider's
/// reconcile is timed for the round, so the lag of every round challenge behind its round's
/// start stays far under a heartbeat; both pass their round as they passed their join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_challenges_every_provider_at_its_start() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("rounds")
        .member("round-a", vec![GpuPool::h100_nvlink("ra", 1)])
        .member("round-b", vec![GpuPool::h100_nvlink("rb", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    opsupport::setup(fed, &hub, &[]).await;
    let plugins = [
        fake_plugin(
            env.member_client("round-a").await.expect("member"),
            Arc::new(AtomicBool::new(true)),
        ),
        fake_plugin(
            env.member_client("round-b").await.expect("member"),
            Arc::new(AtomicBool::new(true)),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = opsupport::free_admin_addr();
    let admin_flag = admin.to_string();
    let op = slow_polls_with(
        &hub,
        "rounds-op",
        &dir,
        &[
            "--verify-interval",
            "30s",
            "--challenge-round-grace",
            "2s",
            "--admin-addr",
            &admin_flag,
        ],
    );
    all_eight_verify(&hub, "round-a").await;
    all_eight_verify(&hub, "round-b").await;
    // Two whole rounds after both joined: 4 round challenges, 16 GPUs judged each round.
    let metrics = gpufed_e2e::wait::until("two rounds judged", Duration::from_secs(150), || async {
        let m = opsupport::reqwest_metrics(admin).await;
        let rounds = sample(&m, "gpufed_challenges_started_total{why=\"round\"}");
        let passed = sample(&m, "gpufed_challenges_total{result=\"passed\"}");
        Ok((rounds >= 4.0 && passed >= 48.0).then_some(m))
    })
    .await
    .expect("rounds");
    // For BENCHMARKS.md ("Challenge rounds"), with --nocapture.
    eprintln!(
        "{}",
        opsupport::lines_with(&metrics, "gpufed_challenge_round_lag_seconds")
    );
    let lag = |what: &str| sample(&metrics, &format!("gpufed_challenge_round_lag_seconds{what}"));
    let within = lag("_bucket{le=\"1.28\"}");
    assert!(
        lag("_count") >= 4.0 && within == lag("_count"),
        "every round challenge issued within 1.28 s of its round's start (a heartbeat is 20 s):\n{}",
        opsupport::lines_with(&metrics, "gpufed_challenge")
    );
    assert_eq!(
        sample(&metrics, "gpufed_challenges_total{result=\"RoundTripTooSlow\"}"),
        0.0,
        "{}",
        opsupport::lines_with(&metrics, "gpufed_challenges_total")
    );
    for p in ["round-a", "round-b"] {
        let provider = Api::<GpuProvider>::all(hub.clone())
            .get(p)
            .await
            .expect("provider");
        assert_eq!(
            verified(&provider),
            Some(("True".into(), "ChallengesPassed".into())),
            "{p}"
        );
        // The status says when the next round comes: a multiple of 30 s on the clock.
        let next = provider
            .status
            .and_then(|s| s.verification?.next_round_time)
            .and_then(|t| gpufed_operator::time::parse(&t))
            .expect("nextRoundTime");
        assert_eq!(next % 30, 0, "{p}: {next}");
    }
    for p in plugins {
        p.abort();
    }
    op.stop().await;
    drop(env);
}

/// Pull mode with the device plugin's own publisher (`--simulate`: its results are
/// checked, its timing is not, so it is never verified): the hub's clock sees its
/// commitment through the agent's relay and its watch of the nodes, and the hub's watch of
/// the agents' reports, with every periodic probe and report 20 s apart. Prints the round
/// trip for BENCHMARKS.md ("Challenge round trip") with `--nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_plugins_commitment_reaches_the_hub_through_a_pull_agent_at_once() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("clock-sim-pull").member("pull-s", vec![GpuPool::h100_nvlink("ps", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    let member = env.member_client("pull-s").await.expect("member");
    pull_member(fed, &hub, "pull-s").await;
    let node = GpuPool::h100_nvlink("ps", 1).node_names()[0].clone();
    let (stop, publisher) = trustsupport::simulated_publisher(member.clone(), node, "pull-sim", 6);
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = opsupport::free_admin_addr();
    let admin_flag = admin.to_string();
    let op = slow_polls_with(&hub, "clock-sim-pull-op", &dir, &["--admin-addr", &admin_flag]);
    let (agent, _files) = pullsupport::Agent::bootstrap(fed, &hub, member, "pull-s").await;
    trustsupport::all_eight_simulated(&hub, "pull-s", Duration::from_secs(180)).await;
    let metrics = opsupport::reqwest_metrics(admin).await;
    let (mean, count) = trustsupport::mean_round_trip(&metrics);
    eprintln!("challenge round trip, pull mode, the plugin's own publisher: {mean:.3} s (mean of {count})");
    assert!(
        count >= 1.0 && mean < 5.0,
        "seen at once, not at the next 20 s poll: {}",
        opsupport::lines_with(&metrics, "round_trip")
    );
    agent.stop().await;
    let _ = stop.send(true);
    let _ = publisher.await;
    op.stop().await;
    drop(env);
}
