//! Pull mode end to end on real API servers (GPU nodes SIMULATED): a provider whose
//! cluster the hub cannot reach runs jobs through its agent — registration with a
//! bootstrap token, an identity that reaches nothing but its own assignments, a hub
//! outage and agent restarts that kill no job and lose no usage, token renewal, and
//! failover away from it when the agent goes silent; a serving replica exposed and
//! reported through the agent.

mod common;
mod opsupport;
mod pullsupport;

use std::time::Duration;

use gpufed_api::job_status::AttemptOutcome;
use gpufed_api::{Assignment, ComputeJob, ComputeService, GpuProvider};
use gpufed_e2e::nodesim::READY_ANNOTATION;
use gpufed_e2e::tcpproxy::TcpProxy;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use gpufed_operator::job::build::credentials::MEMBER_SECRET;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use opsupport::{Operator, job, job_until, phase, submit};
use pullsupport::{Agent, AgentFiles};

const MINUTE: Duration = Duration::from_secs(60);

fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

async fn provider(hub: &Client, name: &str) -> GpuProvider {
    Api::<GpuProvider>::all(hub.clone())
        .get(name)
        .await
        .expect("provider")
}

async fn provider_ready(hub: &Client, name: &str) {
    let api: Api<GpuProvider> = Api::all(hub.clone());
    gpufed_e2e::wait::until(&format!("{name} Ready with GPUs"), 2 * MINUTE, || async {
        let p = api.get(name).await?;
        let ok = p.status.as_ref().is_some_and(|s| {
            gpufed_api::conditions::is_true(&s.conditions, "Ready")
                && s.inventory.as_ref().is_some_and(|i| i.gpus > 0)
        });
        Ok(ok.then_some(()))
    })
    .await
    .expect("provider Ready");
}

/// The pods of the job's attempt: an error rather than none when the list fails, so that
/// a wait for their removal tries again instead of passing.
async fn pods_of(member: &Client, uid: &str, attempt: u32) -> kube::Result<Vec<Pod>> {
    let sel = format!("gpufed.io/job-uid={uid},gpufed.io/attempt={attempt}");
    Api::<Pod>::all(member.clone())
        .list(&ListParams::default().labels(&sel))
        .await
        .map(|l| l.items)
}

/// `(resourceVersion, sequence)` of pull-a's agent report at the hub: the agent numbers
/// its reports, and only it writes them (the stopped one no longer does).
async fn report_stamp(hub: &Client) -> gpufed_e2e::Result<(String, u64)> {
    let ns = gpufed_api::pull::agent_namespace("pull-a");
    let cm = Api::<ConfigMap>::namespaced(hub.clone(), &ns)
        .get(gpufed_api::pull::REPORT_CONFIGMAP)
        .await?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(gpufed_api::pull::REPORT_KEY))
        .ok_or_else(|| gpufed_e2e::Error::State("no report in the ConfigMap".into()))?;
    let report: serde_json::Value =
        serde_json::from_str(text).map_err(|e| gpufed_e2e::Error::State(format!("report: {e}")))?;
    let sequence = report["sequence"]
        .as_u64()
        .ok_or_else(|| gpufed_e2e::Error::State(format!("report without a sequence: {report}")))?;
    Ok((cm.metadata.resource_version.unwrap_or_default(), sequence))
}

fn placed(j: &ComputeJob) -> Option<(String, u32)> {
    let p = j.status.as_ref()?.placement.as_ref()?;
    Some((p.provider.clone(), p.attempt))
}

/// The tenant's checkpoint credentials Secret `s3` in `ns` at the hub.
async fn checkpoint_secret(hub: &Client, ns: &str) -> Secret {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3".into()),
            ..Default::default()
        },
        data: Some(std::collections::BTreeMap::from([(
            "AWS_ACCESS_KEY_ID".to_owned(),
            k8s_openapi::ByteString(b"AKIAPULL".to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(hub.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("the tenant's Secret")
}

/// The agent's identity may read its own assignments and nothing else that matters.
async fn identity_is_confined(fed: &gpufed_e2e::Federation, member: &Client, bootstrap: &str) {
    let (token, _) = pullsupport::stored_identity(member)
        .await
        .expect("stored identity");
    let me = pullsupport::client_as(fed, "pull-a", &token).await;
    let own = gpufed_api::pull::agent_namespace("pull-a");
    let other = gpufed_api::pull::agent_namespace("pull-other");
    Api::<Assignment>::namespaced(me.clone(), &own)
        .list(&ListParams::default())
        .await
        .expect("own assignments are readable");
    forbidden(
        "another provider's assignments",
        Api::<Assignment>::namespaced(me.clone(), &other)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "all assignments",
        Api::<Assignment>::all(me.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "Secrets in its own namespace",
        Api::<Secret>::namespaced(me.clone(), &own)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "Secrets anywhere",
        Api::<Secret>::all(me.clone()).list(&ListParams::default()).await,
    );
    forbidden(
        "tenants' ComputeJobs",
        Api::<ComputeJob>::all(me.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "its GpuProvider",
        Api::<GpuProvider>::all(me.clone()).get("pull-a").await,
    );
    let fake = serde_json::json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": "pull-a"}, "status": {"reputation": {"score": "100"}}});
    forbidden(
        "writing its GpuProvider's status",
        Api::<GpuProvider>::all(me.clone())
            .patch_status("pull-a", &PatchParams::apply("liar"), &Patch::Apply(&fake))
            .await,
    );
    let report = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": gpufed_api::pull::REPORT_CONFIGMAP}, "data": {"report.json": "{}"}});
    forbidden(
        "another provider's report",
        Api::<ConfigMap>::namespaced(me.clone(), &other)
            .patch(
                gpufed_api::pull::REPORT_CONFIGMAP,
                &PatchParams::apply("liar"),
                &Patch::Apply(&report),
            )
            .await,
    );
    let tr = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 600}});
    forbidden(
        "a token for another ServiceAccount",
        Api::<ServiceAccount>::namespaced(me.clone(), &own)
            .create_subresource::<_, serde_json::Value>("token", "default", &PostParams::default(), &tr)
            .await,
    );
    // The registration token only registers.
    let boot = pullsupport::client_as(fed, "pull-a", bootstrap).await;
    forbidden(
        "assignments with the bootstrap token",
        Api::<Assignment>::namespaced(boot.clone(), &own)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "another provider's agent token with the bootstrap token",
        Api::<ServiceAccount>::namespaced(boot, &other)
            .create_subresource::<_, serde_json::Value>("token", "gpufed-agent", &PostParams::default(), &tr)
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_behind_nat_runs_jobs_through_its_agent() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("pull")
        .member("pull-a", vec![GpuPool::rtx4090("pa-rtx", 2)])
        .member("push-b", vec![GpuPool::rtx4090("pb-rtx", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    let member = env.member_client("pull-a").await.expect("member");
    // Only the pull providers at first (push-b joins for the failover), so placement
    // has no choice to make and the jobs land on pull-a.
    opsupport::setup_members(fed, &hub, &[], &[]).await;
    pullsupport::install_agent_roles(&hub).await;
    // A 3m grace: the hub outage below (2 min) must not fail anything over.
    pullsupport::pull_provider(fed, &hub, "pull-a", "0.30", "3m").await;
    pullsupport::pull_provider(fed, &hub, "pull-other", "0.30", "3m").await;
    let operator = Operator::start(hub.clone(), "op-1");

    // Registration through a proxy the test can cut: the agent's only way to the hub.
    let token = pullsupport::mint_token(&hub, "pull-a").await;
    let files = AgentFiles::new(fed, &token);
    let proxy = TcpProxy::start(([127, 0, 0, 1], fed.hub().ports().apiserver).into())
        .await
        .expect("proxy");
    let via_proxy = format!("https://127.0.0.1:{}", proxy.port());
    let agent = Agent::start(
        member.clone(),
        "pull-a",
        &via_proxy,
        &files.ca,
        Some(&files.token),
    );
    provider_ready(&hub, "pull-a").await;
    let p = provider(&hub, "pull-a").await;
    assert!(
        p.spec.kubeconfig_secret_ref.is_none(),
        "the hub holds no kubeconfig for a pull provider"
    );
    assert_eq!(p.status.and_then(|s| s.inventory).map(|i| i.gpus), Some(2));
    let (_, first_issue) = pullsupport::stored_identity(&member)
        .await
        .expect("identity stored");
    identity_is_confined(fed, &member, &token.bearer()).await;

    // Two jobs on the cheaper pull provider: one long, one that ends during the outage.
    let ns = common::namespace(&hub, "pull").await;
    submit(&hub, &ns, &job("long", 1, 1, serde_json::json!({}), "1.00", 900)).await;
    // The short one checkpoints with credentials: their copy travels in its Assignment.
    let creds = checkpoint_secret(&hub, &ns).await;
    let mut short = job("short", 1, 1, serde_json::json!({}), "1.00", 45);
    short["spec"]["checkpoint"] = serde_json::json!({"uri": "s3://b/short/", "credentialsSecret": "s3"});
    submit(&hub, &ns, &short).await;
    let mut uids = Vec::new();
    for name in ["long", "short"] {
        let j = job_until(&hub, &ns, name, "Running on pull-a", 2 * MINUTE, |j| {
            phase(j) == "Running"
        })
        .await;
        assert_eq!(placed(&j), Some(("pull-a".to_owned(), 1)), "{name}");
        let uid = j.metadata.uid.clone().expect("uid");
        assert_eq!(
            pods_of(&member, &uid, 1).await.expect("list pods").len(),
            1,
            "{name}: the agent created its pod"
        );
        uids.push(uid);
    }
    let short_tenant = gpufed_operator::job::names::tenant_namespace(&ns, "short");
    let copies = Api::<Secret>::namespaced(member.clone(), &short_tenant);
    let copy = copies
        .get(MEMBER_SECRET)
        .await
        .expect("the agent wrote the credentials");
    assert_eq!(copy.data, creds.data, "the tenant's keys, through the agent");

    // The hub is unreachable for the agent for 2 minutes: nothing fails over, no pod dies.
    proxy.cut().await;
    let cut_at = std::time::Instant::now();
    while cut_at.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let long = Api::<ComputeJob>::namespaced(hub.clone(), &ns)
            .get("long")
            .await
            .expect("long");
        assert_eq!(
            placed(&long),
            Some(("pull-a".to_owned(), 1)),
            "no failover during the outage"
        );
        assert_eq!(
            pods_of(&member, &uids[0], 1).await.expect("list pods").len(),
            1,
            "the long job's pod lives on"
        );
    }
    proxy.restore();
    let short = job_until(&hub, &ns, "short", "short Succeeded", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let st = short.status.expect("status");
    assert!(
        st.attempts
            .iter()
            .all(|a| a.outcome != AttemptOutcome::ProviderLost)
    );
    gpufed_e2e::wait::until(
        "the agent removed the credentials with the attempt",
        MINUTE,
        || async { Ok(copies.get_opt(MEMBER_SECRET).await?.is_none().then_some(())) },
    )
    .await
    .expect("no credentials left at the pull provider");
    let used = st.usage.map(|u| u.gpu_seconds).unwrap_or(0);
    assert!(
        (25..=60).contains(&used),
        "usage ends when the pod did during the outage (45 s run), not when the hub heard: {used} GPU-s"
    );
    let long = Api::<ComputeJob>::namespaced(hub.clone(), &ns)
        .get("long")
        .await
        .expect("long");
    assert_eq!(
        (phase(&long).as_str(), placed(&long)),
        ("Running", Some(("pull-a".to_owned(), 1)))
    );

    // The identity was renewed by the agent itself while jobs ran.
    gpufed_e2e::wait::until("identity renewed", MINUTE, || async {
        let renewed = pullsupport::stored_identity(&member)
            .await
            .is_some_and(|(_, at)| at > first_issue);
        Ok(renewed.then_some(()))
    })
    .await
    .expect("renewal");

    serving_through_the_agent(&hub, &member, &ns).await;

    // Restart without the bootstrap token (revoked): the stored identity carries on.
    agent.stop().await;
    Api::<Secret>::namespaced(hub.clone(), "kube-system")
        .delete(&format!("bootstrap-token-{}", token.id), &DeleteParams::default())
        .await
        .expect("revoke the bootstrap token");
    // The agent's own report, not the provider's lastHeartbeatTime: the operator stamps
    // that every round while the last report is under its silence limit, restarted agent
    // or not.
    let before = report_stamp(&hub).await.expect("the agent's report");
    let agent = Agent::start(member.clone(), "pull-a", &via_proxy, &files.ca, None);
    gpufed_e2e::wait::until("a report of the restarted agent", MINUTE, || async {
        let now = report_stamp(&hub).await?;
        Ok((now.0 != before.0 && now.1 != before.1).then_some(()))
    })
    .await
    .expect("heartbeat resumes");
    assert_eq!(
        pods_of(&member, &uids[0], 1).await.expect("list pods").len(),
        1,
        "the restart killed nothing"
    );

    // The agent goes silent for good: the long job fails over to a push provider.
    opsupport::setup_members(fed, &hub, &["push-b"], &[("push-b", "0.40")]).await;
    provider_ready(&hub, "push-b").await;
    pullsupport::set_grace(&hub, "pull-a", "15s").await;
    agent.kill();
    let moved = job_until(&hub, &ns, "long", "attempt 2 on push-b", 2 * MINUTE, |j| {
        placed(j) == Some(("push-b".to_owned(), 2))
    })
    .await;
    let first = moved.status.expect("status").attempts[0].clone();
    assert_eq!((first.attempt, first.outcome), (1, AttemptOutcome::ProviderLost));

    // When the agent returns, it removes the attempt the hub withdrew.
    let agent = Agent::start(member.clone(), "pull-a", &via_proxy, &files.ca, None);
    gpufed_e2e::wait::until("attempt 1 removed from pull-a", 2 * MINUTE, || async {
        Ok(pods_of(&member, &uids[0], 1).await?.is_empty().then_some(()))
    })
    .await
    .expect("withdrawn attempt removed");
    agent.stop().await;
    operator.stop().await;
    drop(env);
}

/// A serving replica on the pull provider: the agent applies its exposing Service,
/// reports the node port it got and the pod's readiness; scaled to zero it goes.
async fn serving_through_the_agent(hub: &Client, member: &Client, ns: &str) {
    let svc = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "infer"},
        "spec": {"replicas": 1, "gpusPerReplica": 1, "maxPricePerGpuHour": "1.00",
                 "port": {"port": 8080}, "placement": {"verifiedOnly": false},
                 "template": {"spec": {"containers": [{"name": "server", "image": "registry.example.com/tgi:1"}]}}}
    });
    let services: Api<ComputeService> = Api::namespaced(hub.clone(), ns);
    services
        .patch(
            "infer",
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(&svc),
        )
        .await
        .expect("service applies");
    let ready =
        |want: u32| move |s: &ComputeService| s.status.as_ref().is_some_and(|st| st.ready_replicas == want);
    let up = opsupport::object_until(
        hub,
        ns,
        "infer",
        "replica ready via the agent",
        2 * MINUTE,
        ready(1),
    )
    .await;
    let r = up.status.expect("status").replica_status[0].clone();
    assert_eq!(r.provider.as_deref(), Some("pull-a"));
    let addr = r.address.expect("the agent reported the node port");
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port");
    assert!((30000..=32767).contains(&port), "{addr}");
    // Readiness travels through the agent's report too.
    let pods = Api::<Pod>::all(member.clone())
        .list(&ListParams::default().labels(&format!("gpufed.io/job-name={}", r.name)))
        .await
        .expect("pods");
    let pod = pods.items.first().expect("the replica's pod").clone();
    let api: Api<Pod> = Api::namespaced(member.clone(), pod.metadata.namespace.as_deref().expect("ns"));
    let annotate = |v: &str| serde_json::json!({"metadata": {"annotations": {READY_ANNOTATION: v}}});
    let name = pod.metadata.name.clone().expect("name");
    api.patch(&name, &PatchParams::default(), &Patch::Merge(annotate("false")))
        .await
        .expect("annotate");
    opsupport::object_until(hub, ns, "infer", "not ready via the agent", MINUTE, ready(0)).await;
    api.patch(&name, &PatchParams::default(), &Patch::Merge(annotate("true")))
        .await
        .expect("annotate");
    opsupport::object_until(hub, ns, "infer", "ready again", MINUTE, ready(1)).await;
    services
        .patch(
            "infer",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale to 0");
    gpufed_e2e::wait::until("the replica's pod removed by the agent", 2 * MINUTE, || async {
        Ok(api.get_opt(&name).await?.is_none().then_some(()))
    })
    .await
    .expect("retired replica removed");
}
