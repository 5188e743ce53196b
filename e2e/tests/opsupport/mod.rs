//! Running the real gpufed operator against a harness federation: CRDs, provider
//! registration (kubeconfig Secrets + GpuProviders), the operator in-process, and
//! waiting on ComputeJob status.
#![allow(dead_code)] // each test binary uses a different subset

mod admin;
pub mod budgets;
pub mod labels;

#[allow(unused_imports)] // each test binary uses a different subset
pub use admin::{admin_get, free_admin_addr, lines_with, reqwest_metrics};

use std::time::Duration;

use clap::Parser;
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_e2e::Federation;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::common;

/// An operator running in this test process.
/// The operator flags of the e2e tests: short heartbeats, rounds, timeouts and Lease.
pub const TEST_FLAGS: [&str; 8] = [
    "--heartbeat-interval",
    "1s",
    "--placement-interval",
    "1s",
    "--member-timeout",
    "3s",
    "--lease-duration",
    "6s",
];

pub struct Operator {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    /// Starts the operator on `hub` with short heartbeats, as replica `identity`.
    pub fn start(hub: Client, identity: &str) -> Self {
        Self::start_with(hub, identity, &[])
    }

    /// Like [`Self::start`], with extra flags (e.g. settlement).
    pub fn start_with(hub: Client, identity: &str, extra: &[String]) -> Self {
        Self::start_tuned(hub, identity, &[], extra)
    }

    /// Like [`Self::start_with`], with some of [`TEST_FLAGS`]' values replaced
    /// (`(flag, value)`, e.g. a longer `--heartbeat-interval`).
    pub fn start_tuned(hub: Client, identity: &str, tuned: &[(&str, &str)], extra: &[String]) -> Self {
        // An ephemeral admin port unless the test asks for one (to read /metrics).
        let admin = if extra.iter().any(|a| a == "--admin-addr") {
            Vec::new()
        } else {
            vec!["--admin-addr", "127.0.0.1:0"]
        };
        let flags = TEST_FLAGS.chunks(2).flat_map(|pair| {
            let value = tuned
                .iter()
                .find(|(flag, _)| *flag == pair[0])
                .map_or(pair[1], |(_, v)| *v);
            [pair[0], value]
        });
        let base = ["gpufed-operator", "--identity", identity];
        Self::start_args(
            hub,
            base.into_iter()
                .chain(flags)
                .chain(admin)
                .map(str::to_owned)
                .chain(extra.iter().cloned()),
        )
    }

    /// Starts the operator with exactly these command-line arguments (the first is the
    /// program name), e.g. its production defaults for a benchmark.
    pub fn start_args(hub: Client, args: impl IntoIterator<Item = String>) -> Self {
        let args = gpufed_operator::cli::Args::parse_from(args);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(gpufed_operator::run_with(hub, args, rx));
        Self { stop, task }
    }

    /// Stops it gracefully (drains, releases the Lease).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }

    /// Whether its task is still running (it has neither returned nor panicked).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Kills it without any cleanup, as a crash would.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Installs the CRDs and registers every member of `fed` as a provider, with the given
/// price per GPU-hour for each member's GPU model, and a 10 s heartbeat grace period.
/// Sets `provider`'s `heartbeatGracePeriod` (e.g. `"30s"`): how long it, and a node of it
/// that its member lost contact with, may stay silent before its jobs fail over.
pub async fn set_grace(hub: &Client, provider: &str, grace: &str) {
    Api::<GpuProvider>::all(hub.clone())
        .patch(
            provider,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"heartbeatGracePeriod": grace}})),
        )
        .await
        .expect("grace period");
}

pub async fn setup(fed: &Federation, hub: &Client, prices: &[(&str, &str)]) {
    let members: Vec<&str> = fed.members().iter().map(|m| m.name()).collect();
    setup_members(fed, hub, &members, prices).await;
}

/// Like [`setup`], registering only the named members.
pub async fn setup_members(fed: &Federation, hub: &Client, members: &[&str], prices: &[(&str, &str)]) {
    gpufed_e2e::crds::install_crds(hub, &common::repo_root().join("crds"), Duration::from_secs(60))
        .await
        .expect("CRDs install");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("gpufed-system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(hub.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), "gpufed-system");
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    for member in fed.members().iter().filter(|m| members.contains(&m.name())) {
        let name = member.name().to_owned();
        let kubeconfig = std::fs::read(member.kubeconfig()).expect("member kubeconfig");
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(format!("{name}-kubeconfig")),
                ..Default::default()
            },
            data: Some([("kubeconfig".to_owned(), ByteString(kubeconfig))].into()),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret");
        let price = prices
            .iter()
            .find(|(m, _)| *m == name)
            .map_or("1.00", |(_, p)| *p);
        let models: Vec<serde_json::Value> = member_models(fed, &name)
            .into_iter()
            .map(|m| serde_json::json!({"model": m, "pricePerGpuHour": price}))
            .collect();
        let provider = serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecretRef": {"namespace": "gpufed-system", "name": format!("{name}-kubeconfig")},
                     "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu-west",
                     "prices": models, "heartbeatGracePeriod": "10s"}
        });
        providers
            .patch(
                &name,
                &PatchParams::apply("gpufed-e2e").force(),
                &Patch::Apply(&provider),
            )
            .await
            .expect("provider");
    }
}

fn member_models(fed: &Federation, member: &str) -> Vec<String> {
    let Some(sim) = fed.simulator(member) else {
        return Vec::new();
    };
    let mut models: Vec<String> = sim.config().pools.iter().map(|p| p.model.clone()).collect();
    models.sort();
    models.dedup();
    models
}

/// Waits until every provider reports Ready.
pub async fn providers_ready(hub: &Client, count: usize) {
    let api: Api<GpuProvider> = Api::all(hub.clone());
    gpufed_e2e::wait::until("providers Ready", Duration::from_secs(60), || async {
        let list = api.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| gpufed_api::conditions::is_true(&s.conditions, "Ready"))
            })
            .count();
        Ok((ready == count).then_some(()))
    })
    .await
    .expect("providers become Ready");
}

/// A job manifest: `workers × gpus`, the given GPU requirements, finishing after
/// `run_seconds` on the simulated nodes.
pub fn job(
    name: &str,
    workers: u32,
    gpus: u32,
    gpu: serde_json::Value,
    max_price: &str,
    run_seconds: u32,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {"workers": workers, "gpusPerWorker": gpus, "gpu": gpu, "maxPricePerGpuHour": max_price,
                 "placement": {"verifiedOnly": false},
                 "template": {"metadata": {"annotations": {"gpufed.io/sim-run-seconds": run_seconds.to_string()}},
                              "spec": {"containers": [{"name": "main", "image": "registry.example.com/main:1"}]}}}
    })
}

/// Applies a job in `ns`.
pub async fn submit(hub: &Client, ns: &str, job: &serde_json::Value) {
    let api: Api<ComputeJob> = Api::namespaced(hub.clone(), ns);
    let name = job["metadata"]["name"].as_str().expect("name");
    api.patch(
        name,
        &PatchParams::apply("gpufed-e2e").force(),
        &Patch::Apply(job),
    )
    .await
    .expect("job applies");
}

/// Waits until `pred` holds for the job, returning it.
pub async fn job_until(
    hub: &Client,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ComputeJob) -> bool,
) -> ComputeJob {
    object_until(hub, ns, name, what, timeout, pred).await
}

/// Waits until `pred` holds for the namespaced object, returning it; panics with its
/// last status (as JSON) when it does not in time.
pub async fn object_until<K>(
    hub: &Client,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(hub.clone(), ns);
    let result = gpufed_e2e::wait::until(what, timeout, || async {
        let obj = api.get(name).await?;
        Ok(pred(&obj).then_some(obj))
    })
    .await;
    match result {
        Ok(obj) => obj,
        Err(e) => {
            let last = api
                .get(name)
                .await
                .ok()
                .and_then(|o| serde_json::to_value(o).ok())
                .map(|v| serde_json::to_string_pretty(&v["status"]).unwrap_or_default());
            // Tests that capture the operator's tracing show its last words on this object.
            let tail = crate::common::log_tail(
                |l| l.contains(name) || l.contains("WARN") || l.contains("ERROR"),
                60,
            );
            panic!(
                "{name}: {e}; last status: {}\noperator log ({name}, warnings):\n{tail}",
                last.unwrap_or_default()
            );
        }
    }
}

/// The job's phase as text.
pub fn phase(job: &ComputeJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_default()
}

/// Waits until the hub has Events (events.k8s.io) with each of `reasons` on the
/// ComputeJob `ns/name`, and returns all of them as (type, reason, note).
pub async fn events_until(
    hub: &Client,
    ns: &str,
    name: &str,
    reasons: &[&str],
) -> Vec<(String, String, String)> {
    kind_events_until(hub, ns, "ComputeJob", name, reasons).await
}

/// [`events_until`] on an object of any `kind`.
pub async fn kind_events_until(
    hub: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    reasons: &[&str],
) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(hub.clone(), ns);
    gpufed_e2e::wait::until(
        &format!("Events {reasons:?} on {ns}/{name}"),
        Duration::from_secs(60),
        || async {
            let told: Vec<(String, String, String)> = api
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .filter(|e| {
                    let r = e.regarding.as_ref();
                    r.and_then(|r| r.kind.as_deref()) == Some(kind)
                        && r.and_then(|r| r.name.as_deref()) == Some(name)
                })
                .map(|e| {
                    (
                        e.type_.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.note.unwrap_or_default(),
                    )
                })
                .collect();
            let all = reasons.iter().all(|want| told.iter().any(|(_, r, _)| r == want));
            Ok(all.then_some(told))
        },
    )
    .await
    .expect("Events on the job")
}

/// The member pods of job `job_uid` (any attempt), by the label dispatch puts on them.
pub async fn list_member_pods(
    client: &Client,
    job_uid: &str,
) -> kube::Result<Vec<k8s_openapi::api::core::v1::Pod>> {
    Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone())
        .list(&kube::api::ListParams::default().labels(&format!("gpufed.io/job-uid={job_uid}")))
        .await
        .map(|l| l.items)
}

/// [`list_member_pods`], none when the list fails: only for counting pods that must be
/// there (a failed list then fails the check rather than passing it).
pub async fn member_pods(client: &Client, job_uid: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    list_member_pods(client, job_uid).await.unwrap_or_default()
}

/// Waits up to `within` until every member pod of job `job_uid` is gone or terminating.
pub async fn pods_removed(client: &Client, job_uid: &str, what: &str, within: Duration) {
    gpufed_e2e::wait::until(what, within, || async {
        // A failed list is tried again: "no pods" from an error would pass at once.
        let pods = list_member_pods(client, job_uid).await?;
        Ok(pods
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await
    .expect("stale pods removed");
}

/// Starts `spec` and registers its members as providers with `prices`; `None` (the skip
/// printed) against an external cluster, which has neither simulated nodes nor members
/// to cut off.
pub async fn federation_with_providers(
    spec: gpufed_e2e::FederationSpec,
    prices: &[(&str, &str)],
) -> Option<(gpufed_e2e::TestEnv, Client)> {
    let env = gpufed_e2e::TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return None;
    };
    let hub = env.hub_client().await.expect("hub");
    setup(fed, &hub, prices).await;
    Some((env, hub))
}

/// Federation `name` of two providers of one A100 node (4 GPUs) each — `provider-a` at
/// 1.00 and the dearer `provider-b` at 1.50 per GPU-hour, its pool edited by `b_pool` —
/// both Ready, with an operator running; `None` (the skip printed) against an external
/// cluster.
pub async fn cheap_and_dear(
    name: &str,
    b_pool: impl FnOnce(gpufed_e2e::GpuPool) -> gpufed_e2e::GpuPool,
) -> Option<(gpufed_e2e::TestEnv, Client, Operator)> {
    use gpufed_e2e::GpuPool;
    let spec = gpufed_e2e::FederationSpec::new(name)
        .member("provider-a", vec![GpuPool::a100_40gb("a-a100", 1)])
        .member("provider-b", vec![b_pool(GpuPool::a100_40gb("b-a100", 1))]);
    let prices = [("provider-a", "1.00"), ("provider-b", "1.50")];
    let (env, hub) = federation_with_providers(spec, &prices).await?;
    let operator = Operator::start(hub.clone(), "op-1");
    providers_ready(&hub, 2).await;
    Some((env, hub, operator))
}

/// Who holds the operator's leader Lease in the hub, if anyone.
pub async fn lease_holder(hub: &Client) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(hub.clone(), "gpufed-system");
    leases
        .get_opt(gpufed_operator::lease::LEASE_NAME)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}
