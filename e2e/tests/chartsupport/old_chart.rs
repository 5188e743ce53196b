//! A provider on an older provider chart: its hub-access ClusterRole lacks the
//! `secrets/gpufed-checkpoint` rule, so the member's real authorizer forbids the copy of a
//! job's checkpoint credentials. The dispatch is retried through the grace period, then the
//! attempt ends `DispatchForbidden` (nothing billed, no pod created) and the job is kept off
//! that provider: with no other provider it waits unplaced, saying why, holding no GPUs.

use std::collections::BTreeMap;

use gpufed_api::ComputeJob;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::AttemptOutcome;
use gpufed_operator::job::names;
use gpufed_operator::job::plan::DISPATCH_FORBIDDEN;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use super::{HUB_SA, MINUTE};
use crate::opsupport::{job, job_until, submit};

/// The provider chart's hub-access ClusterRole (release `gpufed-provider`).
const MEMBER_ROLE: &str = "gpufed-provider-hub";

pub async fn older_chart_fails_credentialed_jobs_over(hub: &Client, member: &Client, ns: &str) {
    // Downgrade: the member's ClusterRole without the rule for the credentials' copy.
    let roles = Api::<ClusterRole>::all(member.clone());
    let mut role = roles
        .get(MEMBER_ROLE)
        .await
        .expect("the chart's hub-access ClusterRole");
    let checkpoint_rule = |r: &PolicyRule| r.resources.iter().flatten().any(|x| x == "secrets");
    let rules = role.rules.get_or_insert_with(Vec::new);
    let before = rules.len();
    rules.retain(|r| !checkpoint_rule(r));
    assert_eq!(rules.len() + 1, before, "the chart has exactly one Secret rule");
    roles
        .replace(MEMBER_ROLE, &PostParams::default(), &role)
        .await
        .expect("downgraded ClusterRole");

    // The tenant's credentials, readable by the operator's ServiceAccount.
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    let secret = Secret {
        metadata: meta("ckpt"),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([("TOKEN".to_owned(), ByteString(b"t".to_vec()))])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(hub.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("tenant Secret");
    let grant = Role {
        metadata: meta("gpufed-checkpoint"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec!["ckpt".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(hub.clone(), ns)
        .create(&PostParams::default(), &grant)
        .await
        .expect("Role");
    let (sa_ns, sa) = HUB_SA
        .trim_start_matches("system:serviceaccount:")
        .split_once(':')
        .expect("SA name");
    let binding = RoleBinding {
        metadata: meta("gpufed-checkpoint"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "gpufed-checkpoint".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(sa_ns.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(hub.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding");

    let mut spec = job("old-chart", 1, 1, serde_json::json!({}), "1.00", 10);
    spec["spec"]["checkpoint"] =
        serde_json::json!({"uri": "pvc://ckpt/old-chart", "credentialsSecret": "ckpt"});
    submit(hub, ns, &spec).await;
    let ended = job_until(
        hub,
        ns,
        "old-chart",
        "attempt 1 ended DispatchForbidden",
        3 * MINUTE,
        |j| {
            j.status.as_ref().is_some_and(|s| {
                s.attempts
                    .iter()
                    .any(|a| a.reason.as_deref() == Some(DISPATCH_FORBIDDEN))
            })
        },
    )
    .await;
    let st = ended.status.clone().expect("status");
    let a = &st.attempts[0];
    assert_eq!(
        (a.attempt, a.outcome, a.provider.as_str(), a.gpu_seconds),
        (1, AttemptOutcome::Failed, "provider-a", 0)
    );
    assert!(
        a.message.contains("forbids the attempt's objects") && a.message.contains("secrets"),
        "the record quotes the member's answer: {}",
        a.message
    );
    // Kept off provider-a, the only one: it waits unplaced, saying why.
    let waiting = job_until(hub, ns, "old-chart", "waits, kept off provider-a", MINUTE, |j| {
        j.status.as_ref().is_some_and(|s| {
            s.placement.is_none()
                && conditions::find(&s.conditions, types::PLACED).is_some_and(|c| {
                    c.message
                        .contains("refused or did not start this job's last attempt")
                })
        })
    })
    .await;
    let st = waiting.status.expect("status");
    assert_eq!(
        st.attempts.len(),
        1,
        "not placed on provider-a again: {:?}",
        st.attempts
    );
    let uid = waiting.metadata.uid.clone().expect("uid");
    let tenant = names::tenant_namespace(ns, "old-chart");
    let pods = Api::<Pod>::namespaced(member.clone(), &tenant)
        .list(&ListParams::default().labels(&format!("{}={uid}", names::LABEL_JOB_UID)))
        .await
        .expect("pods");
    assert!(
        pods.items.is_empty(),
        "no worker was created without its credentials"
    );
    Api::<ComputeJob>::namespaced(hub.clone(), ns)
        .delete("old-chart", &Default::default())
        .await
        .expect("delete job");
}
