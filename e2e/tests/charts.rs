//! The Helm charts on a real API server: rendered with helm, applied to the hub and a
//! member, and the operator then runs with the chart's identities — on the hub as the
//! chart's ServiceAccount (impersonated), on the member with the token that
//! scripts/mint-provider.sh minted for the provider chart's ServiceAccount. A missing
//! permission in either chart fails a provider, a dispatch or a cleanup below. Pull mode:
//! the operator, as the chart's ServiceAccount, prepares an agent namespace (binding the
//! chart's agent ClusterRoles), the agent's and its bootstrap group's hub identities
//! request their tokens, and the provider chart's agent RBAC (mode=pull) is applied to the
//! member and used as the agent uses it. Last, that member's chart is downgraded to one
//! without the permission checkpoint credentials need: a job with credentials is not held
//! there but ends its attempt `DispatchForbidden` and waits, kept off that provider.

mod chartsupport;
mod common;
mod opsupport;

use std::path::PathBuf;
use std::process::Command;

use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::Value;

use chartsupport::access::{access, impersonating};
use chartsupport::apply::{apply_charts, create_all, mint_provider};
use chartsupport::lua::run_lua;
use chartsupport::permissions::{
    AGENT_MEMBER_DENIED, AGENT_MEMBER_EXTRA_NEEDS, DEVICE_PLUGIN_DENIED, DEVICE_PLUGIN_NEEDS, HUB_DENIED,
    HUB_NEEDS, MEMBER_DENIED, MEMBER_NEEDS,
};
use chartsupport::pull_identities::pull_mode_with_the_charts_identities;
use chartsupport::rendered::check_rendered;
use chartsupport::{AGENT_SA, DEVICE_PLUGIN_SA, HUB_SA, MEMBER_SA, MINUTE, helm};
use opsupport::{Operator, job, job_until, phase, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_render_apply_and_are_the_permissions_the_operator_runs_with() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm not found (run scripts/install-helm.sh; `make test` does)");
        return;
    };

    // Offline checks of the rendered charts.
    let rendered = check_rendered(&helm);

    // Apply to real API servers: hub (CRDs + operator chart), member (provider chart).
    let spec = FederationSpec::new("charts").member("provider-a", vec![GpuPool::rtx4090("a-rtx", 2)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED the apply and operator checks: they need the harness' own federation");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    let member = env.member_client("provider-a").await.expect("member");
    apply_charts(&hub, &member, &rendered).await;

    // The real authorizer agrees with the lists (chartsupport/permissions.rs).
    let mut wrong = access(&hub, HUB_SA, HUB_NEEDS, true).await;
    wrong.extend(access(&hub, HUB_SA, HUB_DENIED, false).await);
    wrong.extend(access(&member, MEMBER_SA, MEMBER_NEEDS, true).await);
    wrong.extend(access(&member, MEMBER_SA, MEMBER_DENIED, false).await);
    wrong.extend(access(&member, DEVICE_PLUGIN_SA, DEVICE_PLUGIN_NEEDS, true).await);
    wrong.extend(access(&member, DEVICE_PLUGIN_SA, DEVICE_PLUGIN_DENIED, false).await);
    wrong.extend(access(&member, AGENT_SA, MEMBER_NEEDS, true).await);
    wrong.extend(access(&member, AGENT_SA, AGENT_MEMBER_EXTRA_NEEDS, true).await);
    wrong.extend(access(&member, AGENT_SA, AGENT_MEMBER_DENIED, false).await);
    assert!(
        wrong.is_empty(),
        "RBAC differs from what the operator needs:\n{}",
        wrong.join("\n")
    );

    // scripts/mint-provider.sh mints the member access; its output goes to the hub.
    let minted = mint_provider(fed, &member).await;
    create_all(&hub, &minted, &["Secret", "GpuProvider"]).await;
    pull_mode_with_the_charts_identities(fed, &hub, &member).await;

    // The operator as the chart's ServiceAccount: provider Ready, a job runs and finishes,
    // and deleting it runs the finalizer (member namespace removed).
    let op_hub = impersonating(fed.hub().kubeconfig(), HUB_SA).await;
    let operator = Operator::start(op_hub, "chart-rbac");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "charts").await;
    submit(&hub, &ns, &job("rbac-1", 1, 1, serde_json::json!({}), "1.00", 2)).await;
    let done = job_until(&hub, &ns, "rbac-1", "Succeeded", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let tenant = gpufed_operator::job::names::tenant_namespace(&ns, "rbac-1");
    let tenant_exists = || async {
        Api::<Namespace>::all(member.clone())
            .get_opt(&tenant)
            .await
            .expect("tenant namespace")
            .is_some_and(|n| n.metadata.deletion_timestamp.is_none())
    };
    assert_eq!(phase(&done), "Succeeded");
    eprintln!(
        "tenant namespace {tenant} present before deletion: {}",
        tenant_exists().await
    );
    Api::<gpufed_api::ComputeJob>::namespaced(hub.clone(), &ns)
        .delete("rbac-1", &DeleteParams::default())
        .await
        .expect("delete job");
    gpufed_e2e::wait::until("job deleted (finalizer ran)", MINUTE, || async {
        let gone = Api::<gpufed_api::ComputeJob>::namespaced(hub.clone(), &ns)
            .get_opt("rbac-1")
            .await?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await
    .expect("the operator, with the chart's RBAC, removes its finalizer");
    assert!(!tenant_exists().await, "member tenant namespace {tenant} removed");
    // The same provider on an older chart, without the permission a job's checkpoint
    // credentials need: the job is not held there (chartsupport/old_chart.rs).
    chartsupport::old_chart::older_chart_fails_credentialed_jobs_over(&hub, &member, &ns).await;
    operator.stop().await;
}

/// The provider chart's device plugin DaemonSet, rendered only (no API server): its args
/// parse as the plugin's own flags and name the hostPaths it mounts, under
/// `devicePlugin.kubeletRootDir`, with `devicePlugin.priorityClassName` and its optional
/// ResourceQuota (chartsupport/device_plugin.rs). The test above runs it too; this one
/// needs only helm, so it runs where no control plane can start.
#[test]
fn device_plugin_daemonset_args_parse_and_match_its_host_paths() {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm not found (run scripts/install-helm.sh; `make test` does)");
        return;
    };
    chartsupport::device_plugin::check_device_plugin(&helm);
}

/// The hub chart's NetworkPolicy, rendered only: the admin port admits only the peers of
/// `networkPolicy.metricsFrom`, and none when it is empty (chartsupport/network_policy.rs).
#[test]
fn network_policy_admits_only_the_listed_peers() {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm not found (run scripts/install-helm.sh; `make test` does)");
        return;
    };
    chartsupport::network_policy::check_network_policy(&helm);
}

/// The Argo CD health checks shipped in charts/gpufed/files/argocd-health give the results
/// their health_test.yaml expects (run with lua5.4 when installed: `make lua`), and
/// kstatus' reading (`gpufed_api::conditions::health`, what Flux sees) agrees on every case
/// it can express (not deletion, which kstatus reads from metadata, nor Suspended).
#[test]
fn argocd_health_lua_matches_its_tests_and_agrees_with_kstatus() {
    use gpufed_api::conditions::{Health, health};
    let lua = ["lua5.4", "lua"].into_iter().map(PathBuf::from).find(|p| {
        Command::new(p)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if lua.is_none() {
        eprintln!("SKIPPED the Lua half: no lua5.4 (`make lua` installs it); kstatus half runs");
    }
    let root = common::repo_root().join("charts/gpufed/files/argocd-health/gpufed.io");
    let (mut lua_checked, mut kstatus_checked) = (0, 0);
    for kind in [
        "ComputeJob",
        "ComputeQuota",
        "ComputeService",
        "GpuProvider",
        "Stake",
    ] {
        let dir = root.join(kind);
        let script = std::fs::read_to_string(dir.join("health.lua")).expect("health.lua");
        let tests: Value = serde_yaml::from_str(
            &std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"),
        )
        .expect("health_test.yaml parses");
        let cases = tests["tests"].as_array().expect("tests");
        let statuses: std::collections::BTreeSet<&str> = cases
            .iter()
            .filter_map(|c| c["healthStatus"]["status"].as_str())
            .collect();
        for want in ["Healthy", "Degraded", "Progressing"] {
            assert!(statuses.contains(want), "{kind}: no {want} test case");
        }
        for case in cases {
            let input = case["inputPath"].as_str().expect("inputPath");
            let obj: Value =
                serde_yaml::from_str(&std::fs::read_to_string(dir.join(input)).expect("testdata"))
                    .expect("testdata parses");
            let want_status = case["healthStatus"]["status"].as_str().expect("status");
            let want_message = case["healthStatus"]["message"].as_str().unwrap_or_default();
            if let Some(lua) = &lua {
                let (status, message) = run_lua(lua, &script, &obj);
                assert_eq!(
                    (status.as_str(), message.as_str()),
                    (want_status, want_message),
                    "{kind} {input}"
                );
                lua_checked += 1;
            }
            let kstatus_want = match want_status {
                "Healthy" => Health::Current,
                "Degraded" => Health::Failed,
                "Progressing" => Health::InProgress,
                _ => continue,
            };
            if !obj["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let conditions: Vec<gpufed_api::Condition> =
                serde_json::from_value(obj["status"]["conditions"].clone()).unwrap_or_default();
            let got = health(
                obj["metadata"]["generation"].as_i64(),
                obj["status"]["observedGeneration"].as_i64(),
                &conditions,
            );
            assert_eq!(got, kstatus_want, "kstatus vs Argo CD on {kind} {input}");
            kstatus_checked += 1;
        }
    }
    assert!(
        kstatus_checked >= 15,
        "only {kstatus_checked} cases compared with kstatus"
    );
    if lua.is_some() {
        assert!(lua_checked >= 20, "only {lua_checked} Lua cases ran");
    }
}
