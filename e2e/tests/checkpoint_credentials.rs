//! Checkpoint credentials end to end on real API servers and the real scheduler (GPU
//! nodes SIMULATED): a job naming a Secret that does not exist waits unplaced and says
//! so; once the tenant creates it, the job is placed, its attempt's copy reaches the
//! provider (data, attempt label) before its pods, every container gets it as variables
//! and files; when the attempt ends the copy leaves the provider with its pods.

mod common;
mod opsupport;

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_api::conditions::{self, types};
use gpufed_operator::job::build::credentials::{MEMBER_SECRET, MOUNT_PATH, attempt_of};
use gpufed_operator::job::names;
use gpufed_operator::job::plan::CREDENTIALS_UNAVAILABLE;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use opsupport::{Operator, federation_with_providers, job, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_gets_its_checkpoint_credentials_at_its_provider_and_only_while_it_runs() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = gpufed_e2e::FederationSpec::new("ckpt-creds")
        .member("provider-a", vec![gpufed_e2e::GpuPool::a100_40gb("a-a100", 1)]);
    let Some((env, hub)) = federation_with_providers(spec, &[("provider-a", "1.00")]).await else {
        return;
    };
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 1).await;
    let member = env.member_client("provider-a").await.expect("member");
    let ns = common::namespace(&hub, "team").await;

    let mut spec = job("ckpt", 1, 1, serde_json::json!({}), "2.00", 15);
    spec["spec"]["checkpoint"] = serde_json::json!({"uri": "s3://bucket/run-1/", "credentialsSecret": "s3"});
    submit(&hub, &ns, &spec).await;
    let waiting = job_until(&hub, &ns, "ckpt", "waits for its Secret", MINUTE, |j| {
        j.status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::STALLED))
            .is_some_and(|c| c.reason == CREDENTIALS_UNAVAILABLE)
    })
    .await;
    let st = waiting.status.expect("status");
    let c = conditions::find(&st.conditions, types::STALLED).expect("Stalled");
    assert!(
        c.message.contains(&format!("Secret {ns}/s3")) && c.message.contains("does not exist"),
        "{}",
        c.message
    );
    assert!(
        st.placement.is_none() && st.attempts.is_empty(),
        "not placed, no attempt used"
    );

    let data = BTreeMap::from([
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            ByteString(b"AKIAEXAMPLE".to_vec()),
        ),
        (
            "key.json".to_owned(),
            ByteString(br#"{"type":"service_account"}"#.to_vec()),
        ),
    ]);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3".into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data.clone()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(hub.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("the tenant's Secret");
    // Checked again within 30 s, then placed and started.
    let running = job_until(
        &hub,
        &ns,
        "ckpt",
        "placed with its credentials",
        2 * MINUTE,
        |j| phase(j) == "Running",
    )
    .await;
    let st = running.status.as_ref().expect("status");
    assert!(conditions::find(&st.conditions, types::STALLED).is_none());
    let tenant = names::tenant_namespace(&ns, "ckpt");
    let copy = Api::<Secret>::namespaced(member.clone(), &tenant)
        .get(MEMBER_SECRET)
        .await
        .expect("the attempt's copy at the provider");
    assert_eq!(copy.data.as_ref(), Some(&data), "the tenant's keys, unchanged");
    assert_eq!(attempt_of(&copy), Some(1));
    let uid = running.uid().expect("uid");
    let pods = Api::<Pod>::namespaced(member.clone(), &tenant)
        .list(&kube::api::ListParams::default().labels(&format!("{}={uid}", names::LABEL_JOB_UID)))
        .await
        .expect("pods");
    assert_eq!(pods.items.len(), 1);
    let pod = pods.items[0].spec.clone().expect("pod spec");
    let container = &pod.containers[0];
    let from = container.env_from.clone().unwrap_or_default();
    assert!(
        from.iter()
            .any(|f| f.secret_ref.as_ref().is_some_and(|s| s.name == MEMBER_SECRET)),
        "{from:?}"
    );
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    assert!(mounts.iter().any(|m| m.mount_path == MOUNT_PATH), "{mounts:?}");

    // The attempt ends: its pods and the copy leave the provider.
    job_until(&hub, &ns, "ckpt", "completes", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    opsupport::pods_removed(&member, &uid, "the finished attempt's pods", MINUTE).await;
    let secrets = Api::<Secret>::namespaced(member.clone(), &tenant);
    gpufed_e2e::wait::until("the copy removed with its attempt", MINUTE, || async {
        Ok(secrets.get_opt(MEMBER_SECRET).await?.is_none().then_some(()))
    })
    .await
    .expect("no credentials left at the provider");
    drop(operator);
}
