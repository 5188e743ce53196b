//! Benchmark: what N pull-mode agents cost the hub. One real hub control plane and the
//! gpufed operator (a child process, so its CPU and memory are its own); N SIMULATED
//! agents, each speaking the real agent protocol with its own identity (bootstrap token →
//! ServiceAccount token): agent config, challenges, report (heartbeat), Assignments and
//! their status. Their member clusters are synthetic (2 nodes × 4 RTX 4090 each).
//! Measured: CPU seconds and RSS of the hub's kube-apiserver, etcd, controller-manager
//! and the operator over a steady window with N agents and N one-GPU jobs running,
//! against the same window of the same hub idle (no providers) in the same run.
//! Run: `cargo bench -p gpufed-e2e --bench pull_agents` (100 agents, 60 s windows).
//! Without `--bench` (e.g. `cargo test --all-targets`) a smoke run: 5 agents, 10 s.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/opsupport/mod.rs"]
mod opsupport;
#[path = "../tests/pullsupport/mod.rs"]
mod pullsupport;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser as _;
use gpufed_api::Assignment;
use gpufed_api::assignment::{AssignedPod, AssignmentStatus};
use gpufed_api::pull::{AGENT_CONFIGMAP, CHALLENGE_CONFIGMAP, REPORT_CONFIGMAP, REPORT_KEY};
use gpufed_e2e::process::ProcessRecord;
use gpufed_e2e::{Federation, FederationSpec};
use gpufed_operator::fleet::{GpuNode, GpuPod, MemberView};
use gpufed_operator::member::pull::{AgentConfig, AgentReport};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

const MODEL: &str = "NVIDIA-GeForce-RTX-4090";

/// (CPU seconds, RSS MiB) of a process now.
fn usage(pid: u32) -> (f64, f64) {
    let cpu = gpufed_e2e::process::cpu_seconds(pid).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

/// CPU seconds used per process over `window`, and RSS at its end.
async fn measure(procs: &[(String, u32)], window: Duration) -> BTreeMap<String, (f64, f64)> {
    let before: Vec<f64> = procs.iter().map(|(_, p)| usage(*p).0).collect();
    tokio::time::sleep(window).await;
    procs
        .iter()
        .zip(before)
        .map(|((name, pid), b)| {
            let (cpu, rss) = usage(*pid);
            (name.clone(), (cpu - b, rss))
        })
        .collect()
}

/// One simulated agent: registers, then reports and acknowledges its assignments.
async fn sim_agent(fed_hub: (String, Vec<u8>), provider: String, bearer: String) {
    let endpoint = gpufed_agent::identity::HubEndpoint {
        server: fed_hub.0,
        ca_pem: fed_hub.1,
        namespace: gpufed_api::pull::agent_namespace(&provider),
        timeout: Duration::from_secs(10),
    };
    let hub = loop {
        let Ok(boot) = endpoint.client(&bearer).await else {
            continue;
        };
        match endpoint
            .request_token(&boot, Duration::from_secs(3600), gpufed_operator::time::now())
            .await
        {
            Ok(id) => break endpoint.client(&id.token).await.expect("agent client"),
            // The operator has not bound the bootstrap group yet.
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let cms: Api<ConfigMap> = Api::default_namespaced(hub.clone());
    let assignments: Api<Assignment> = Api::default_namespaced(hub.clone());
    let pp = PatchParams::apply(gpufed_api::pull::AGENT_FIELD_MANAGER).force();
    let nodes: Vec<GpuNode> = (0..2)
        .map(|i| GpuNode {
            name: format!("{provider}-n{i}"),
            model: MODEL.into(),
            memory_mib: 24_564,
            compute: (8, 9),
            nvlink_domain: None,
            allocatable: 4,
            ready: true,
            taints: Vec::new(),
            labels: Default::default(),
            resources: None,
        })
        .collect();
    let mut sequence = 0;
    loop {
        let interval = match cms.get_opt(AGENT_CONFIGMAP).await {
            Ok(Some(cm)) => {
                AgentConfig::from_data(&cm.data.unwrap_or_default()).map_or(5, |c| c.interval_seconds)
            }
            _ => 5,
        };
        let challenges = cms
            .get_opt(CHALLENGE_CONFIGMAP)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data)
            .unwrap_or_default();
        let list = assignments
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let pods: Vec<GpuPod> = list
            .iter()
            .map(|a| GpuPod {
                node: format!("{provider}-n0"),
                gpus: 1,
                attempt_key: Some(format!("{}/{}", a.spec.job_uid, a.spec.attempt)),
                requests: Default::default(),
                extended: Default::default(),
            })
            .collect();
        sequence += 1;
        let report = AgentReport {
            view: MemberView {
                nodes: nodes.clone(),
                pods,
                reports: BTreeMap::new(),
                challenges: challenges.into_iter().collect(),
            },
            interval_seconds: interval,
            sequence,
            agent_version: "sim".into(),
        };
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": REPORT_CONFIGMAP},
            "data": {REPORT_KEY: serde_json::to_string(&report).unwrap_or_default()}});
        let _ = cms.patch(REPORT_CONFIGMAP, &pp, &Patch::Apply(&body)).await;
        for a in list {
            let status = AssignmentStatus {
                observed_generation: a.metadata.generation,
                pods: vec![AssignedPod {
                    name: format!("{}-w0", a.name_any()),
                    rank: 0,
                    phase: "Running".into(),
                    node_name: Some(format!("{provider}-n0")),
                    node_ready: true,
                    ..Default::default()
                }],
                ..Default::default()
            };
            if a.status.as_ref().map(|s| (&s.observed_generation, &s.pods))
                != Some((&status.observed_generation, &status.pods))
            {
                let body = serde_json::json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "Assignment",
                    "metadata": {"name": a.name_any()}, "status": status});
                let _ = assignments
                    .patch_status(&a.name_any(), &pp, &Patch::Apply(&body))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
    }
}

fn pid_of(records: &[ProcessRecord], suffix: &str) -> Option<u32> {
    records.iter().find(|r| r.name.ends_with(suffix)).map(|r| r.pid)
}

fn print_table(title: &str, m: &BTreeMap<String, (f64, f64)>, window: Duration) {
    println!("{title}");
    for (name, (cpu, rss)) in m {
        println!(
            "  {name:<20} CPU {cpu:7.2} s ({:5.1}% of a core)  RSS {rss:7.1} MiB",
            100.0 * cpu / window.as_secs_f64()
        );
    }
}

#[tokio::main]
async fn main() {
    // Child mode: the operator, re-executed from this binary.
    if std::env::var_os("GPUFED_BENCH_OPERATOR").is_some() {
        let args = gpufed_operator::cli::Args::parse_from(std::env::args().skip_while(|a| a != "--").skip(1));
        gpufed_operator::telemetry::init(false);
        gpufed_operator::run(args).await.expect("operator");
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        common::init_tracing();
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (agents, window) = if smoke {
        (5, Duration::from_secs(10))
    } else {
        (100, Duration::from_secs(60))
    };
    let fed = Federation::start(FederationSpec::new("bench-pull"))
        .await
        .expect("hub");
    let hub = fed.hub().client().await.expect("hub client");
    opsupport::setup_members(&fed, &hub, &[], &[]).await;
    pullsupport::install_agent_roles(&hub).await;
    let mut operator = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("GPUFED_BENCH_OPERATOR", "1")
        .env("KUBECONFIG", fed.hub().kubeconfig())
        .env("RUST_LOG", "warn")
        .args([
            "--",
            "gpufed-operator",
            "--admin-addr",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "5s",
        ])
        .spawn()
        .expect("operator process");
    let records = fed.processes();
    let procs: Vec<(String, u32)> = [
        ("hub kube-apiserver", pid_of(&records, "hub/kube-apiserver")),
        ("etcd", pid_of(&records, "etcd")),
        (
            "hub controller-mgr",
            pid_of(&records, "hub/kube-controller-manager"),
        ),
        ("gpufed-operator", Some(operator.id())),
    ]
    .into_iter()
    .filter_map(|(n, p)| Some((n.to_owned(), p?)))
    .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = measure(&procs, window).await;

    let started = Instant::now();
    let endpoint = pullsupport::hub_endpoint(&fed);
    for i in 0..agents {
        let name = format!("sim-{i:03}");
        pullsupport::pull_provider(&fed, &hub, &name, "0.30", "1m").await;
        let token = pullsupport::mint_token(&hub, &name).await;
        tokio::spawn(sim_agent(endpoint.clone(), name, token.bearer()));
    }
    opsupport::providers_ready(&hub, agents).await;
    let registered = started.elapsed();
    let ns = common::namespace(&hub, "pullbench").await;
    for i in 0..agents {
        let j = opsupport::job(
            &format!("job-{i:03}"),
            1,
            1,
            serde_json::json!({}),
            "1.00",
            100_000,
        );
        opsupport::submit(&hub, &ns, &j).await;
    }
    let jobs: Api<gpufed_api::ComputeJob> = Api::namespaced(hub.clone(), &ns);
    gpufed_e2e::wait::until("every job Running", Duration::from_secs(600), || async {
        let running = jobs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|j| opsupport::phase(j) == "Running")
            .count();
        Ok((running == agents).then_some(()))
    })
    .await
    .expect("jobs Running through the simulated agents");
    let running = started.elapsed();
    let loaded = measure(&procs, window).await;
    let _ = operator.kill();
    let _ = operator.wait();
    println!(
        "{agents} simulated pull-mode agents; all Ready after {:.1} s, {agents} jobs Running after {:.1} s",
        registered.as_secs_f64(),
        running.as_secs_f64()
    );
    print_table(
        &format!("idle hub, {} s window:", window.as_secs()),
        &idle,
        window,
    );
    print_table(
        &format!(
            "{agents} agents + {agents} running jobs, {} s window:",
            window.as_secs()
        ),
        &loaded,
        window,
    );
    let sum = |m: &BTreeMap<String, (f64, f64)>| m.values().map(|v| v.0).sum::<f64>();
    let (i, l) = (sum(&idle), sum(&loaded));
    println!(
        "hub CPU total: idle {i:.2} s, loaded {l:.2} s: ratio {:.1}×, {:.1} ms of hub CPU per agent per second",
        l / i.max(0.01),
        1000.0 * (l - i) / window.as_secs_f64() / agents as f64
    );
    fed.down();
}
