//! Providers choose their tenants, end to end on real API servers and the real scheduler
//! (GPU nodes SIMULATED; two 4-GPU nodes per provider, whole-node jobs, so best-fit
//! packing never outweighs price): a GpuProvider whose `spec.tenants.namespaceSelector` admits
//! only namespaces labelled `gpufed.io/kyc=verified` gets the vetted team's job (it is the
//! cheaper provider), while an unlabelled team's job goes to the dearer one; with that one
//! paused the unlabelled team's job waits, `Placed=False` naming the policy, and runs on
//! the selective provider as soon as its namespace is labelled (the operator watches
//! namespaces). Excluding a namespace later stops none of its running work, and its next
//! job goes elsewhere — until the policy sets `evictRunning`: then the excluded
//! namespace's running job is evicted (`Preempted`), and placed back once admitted again.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::AttemptOutcome;
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_e2e::{FederationSpec, GpuPool};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use opsupport::{Operator, federation_with_providers, job, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);
const KYC: &str = "gpufed.io/kyc";

fn provider_of(j: &ComputeJob) -> Option<&str> {
    Some(j.status.as_ref()?.placement.as_ref()?.provider.as_str())
}

fn attempts(j: &ComputeJob) -> usize {
    j.status.as_ref().map_or(0, |s| s.attempts.len())
}

fn runs_on(provider: &'static str) -> impl Fn(&ComputeJob) -> bool {
    move |j| phase(j) == "Running" && provider_of(j) == Some(provider)
}

async fn patch_spec<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("patch {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_take_work_only_from_the_tenants_they_admit() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("tenants")
        .member("provider-a", vec![GpuPool::a100_40gb("a-a100", 2)])
        .member("provider-b", vec![GpuPool::a100_40gb("b-a100", 2)]);
    let Some((_env, hub)) =
        federation_with_providers(spec, &[("provider-a", "1.00"), ("provider-b", "1.50")]).await
    else {
        return;
    };
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let namespaces: Api<Namespace> = Api::all(hub.clone());
    // The cheaper provider serves vetted tenants only.
    patch_spec(
        &providers,
        "provider-a",
        serde_json::json!({"spec": {"tenants": {"namespaceSelector": {"matchLabels": {KYC: "verified"}}}}}),
    )
    .await;
    let vetted = common::namespace(&hub, "vetted").await;
    let team = common::namespace(&hub, "team").await;
    patch_spec(
        &namespaces,
        &vetted,
        serde_json::json!({"metadata": {"labels": {KYC: "verified"}}}),
    )
    .await;
    // Started after the label: its first rounds wait for the namespace cache, so the
    // vetted job never goes to the dearer provider for want of the label.
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 2).await;

    submit(
        &hub,
        &vetted,
        &job("v1", 1, 4, serde_json::json!({}), "5.00", 600),
    )
    .await;
    submit(&hub, &team, &job("t1", 1, 4, serde_json::json!({}), "5.00", 600)).await;
    let v1 = job_until(
        &hub,
        &vetted,
        "v1",
        "the vetted job runs on provider-a",
        MINUTE,
        runs_on("provider-a"),
    )
    .await;
    job_until(
        &hub,
        &team,
        "t1",
        "the other team's job runs on provider-b",
        MINUTE,
        runs_on("provider-b"),
    )
    .await;

    // With provider-b paused, the unlabelled team's next job has nowhere to go: it waits,
    // told that a provider's tenant policy keeps it out.
    patch_spec(
        &providers,
        "provider-b",
        serde_json::json!({"spec": {"paused": true}}),
    )
    .await;
    submit(&hub, &team, &job("t2", 1, 4, serde_json::json!({}), "5.00", 600)).await;
    let t2 = job_until(
        &hub,
        &team,
        "t2",
        "t2 waits for a provider that admits it",
        MINUTE,
        |j| {
            phase(j) == "Queued"
                && j.status
                    .as_ref()
                    .and_then(|s| conditions::find(&s.conditions, types::PLACED))
                    .is_some_and(|c| {
                        c.reason == "TenantNotAdmitted"
                            && c.message.contains("takes no work from this namespace")
                    })
        },
    )
    .await;
    assert!(provider_of(&t2).is_none(), "{:?}", t2.status);

    // Vetting the namespace is enough: the operator's namespace cache sees the label.
    patch_spec(
        &namespaces,
        &team,
        serde_json::json!({"metadata": {"labels": {KYC: "verified"}}}),
    )
    .await;
    job_until(
        &hub,
        &team,
        "t2",
        "t2 runs on provider-a once vetted",
        MINUTE,
        runs_on("provider-a"),
    )
    .await;

    // Excluding a namespace stops none of its running work; its next job goes elsewhere.
    patch_spec(
        &providers,
        "provider-b",
        serde_json::json!({"spec": {"paused": false}}),
    )
    .await;
    patch_spec(
        &providers,
        "provider-a",
        serde_json::json!({"spec": {"tenants": {"excludedNamespaces": [vetted.clone()]}}}),
    )
    .await;
    submit(
        &hub,
        &vetted,
        &job("v2", 1, 4, serde_json::json!({}), "5.00", 600),
    )
    .await;
    job_until(
        &hub,
        &vetted,
        "v2",
        "v2 goes to provider-b",
        MINUTE,
        runs_on("provider-b"),
    )
    .await;
    let v1_now = job_until(&hub, &vetted, "v1", "v1 still on provider-a", MINUTE, |_| true).await;
    assert!(runs_on("provider-a")(&v1_now), "{:?}", v1_now.status);
    assert_eq!(
        (attempts(&v1_now), v1_now.metadata.uid.as_deref()),
        (attempts(&v1), v1.metadata.uid.as_deref()),
        "the running job kept its attempt"
    );

    // With evictRunning the policy also evicts: v1 ends Preempted (not counted against
    // its attempts) and waits, provider-b being full; the admitted team's job runs on.
    patch_spec(
        &providers,
        "provider-a",
        serde_json::json!({"spec": {"tenants": {"evictRunning": true}}}),
    )
    .await;
    let evicted = job_until(
        &hub,
        &vetted,
        "v1",
        "v1 evicted by the tenant policy",
        MINUTE,
        |j| {
            j.status.as_ref().is_some_and(|s| {
                s.placement.is_none()
                    && s.attempts.first().is_some_and(|a| {
                        a.outcome == AttemptOutcome::Preempted
                            && a.message.contains("no longer takes work from this namespace")
                    })
            })
        },
    )
    .await;
    assert_eq!(evicted.status.as_ref().map(|s| s.preemptions), Some(1));
    let t2_now = job_until(&hub, &team, "t2", "t2 runs on", MINUTE, |_| true).await;
    assert!(runs_on("provider-a")(&t2_now), "{:?}", t2_now.status);
    assert_eq!(
        attempts(&t2_now),
        0,
        "the admitted namespace's job was not touched"
    );
    // Admitted again, the evicted job comes back to the freed GPUs as attempt 2.
    patch_spec(
        &providers,
        "provider-a",
        serde_json::json!({"spec": {"tenants": {"excludedNamespaces": null}}}),
    )
    .await;
    let back = job_until(
        &hub,
        &vetted,
        "v1",
        "v1 back on provider-a",
        MINUTE,
        runs_on("provider-a"),
    )
    .await;
    assert_eq!(
        back.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .map(|p| p.attempt),
        Some(2)
    );
    operator.stop().await;
}

/// The settlement guard on a real API server and namespace controller: a billable tenant
/// namespace gains the finalizer beside another's; deleted, its contents go but the name
/// stays taken (Terminating) while it may still be billed — the server refuses new
/// finalizers by then, which is why the guard is set while jobs exist — a write planned
/// from an old read changes nothing, and once released the namespace goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used)]
async fn a_tenant_namespace_stays_taken_until_its_usage_is_settled() {
    use gpufed_operator::settlement::guard::{self, FINALIZER};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = gpufed_e2e::TestEnv::start(FederationSpec::new("tenant-guard"))
        .await
        .expect("hub starts");
    let hub = env.hub_client().await.expect("hub client");
    let namespaces: Api<Namespace> = Api::all(hub.clone());
    let ns = common::namespace(&hub, "billed").await;
    let bystander = common::namespace(&hub, "bystander").await;
    let other = "example.com/keep";
    patch_spec(
        &namespaces,
        &ns,
        serde_json::json!({"metadata": {"finalizers": [other]}}),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(hub.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "work"}})).unwrap();
    cms.create(&Default::default(), &cm).await.unwrap();
    let billable: std::collections::BTreeSet<String> = [ns.clone()].into();
    let read = || async { namespaces.get(&ns).await.unwrap() };
    let all = || async { vec![read().await, namespaces.get(&bystander).await.unwrap()] };

    assert_eq!(guard::apply(&hub, &guard::plan(&all().await, &billable)).await, 1);
    let guarded = read().await;
    assert_eq!(guarded.finalizers(), [other.to_owned(), FINALIZER.to_owned()]);
    assert!(namespaces.get(&bystander).await.unwrap().finalizers().is_empty());
    // Idle: nothing more to write.
    assert!(guard::plan(&all().await, &billable).is_empty());

    namespaces.delete(&ns, &Default::default()).await.unwrap();
    gpufed_e2e::wait::until("contents deleted", Duration::from_secs(120), || async {
        Ok(cms.get_opt("work").await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    // Still there, still guarded: nobody can create the name again.
    let held = read().await;
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held.finalizers().iter().any(|f| f == FINALIZER));
    let again: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    let refused = namespaces.create(&Default::default(), &again).await.unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(e) if e.code == 409),
        "{refused}"
    );
    // A finalizer cannot be added once deletion started (why the guard comes early).
    let late = namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"finalizers": [other, FINALIZER, "example.com/late"]}}),
            ),
        )
        .await;
    assert!(late.is_err(), "the server refuses new finalizers while deleting");

    // A release planned from an old read is refused by its resourceVersion: no finalizer lost.
    let stale = guard::plan(&[guarded], &Default::default());
    patch_spec(
        &namespaces,
        &ns,
        serde_json::json!({"metadata": {"annotations": {"touched": "1"}}}),
    )
    .await;
    assert_eq!(guard::apply(&hub, &stale).await, 0);
    assert!(read().await.finalizers().iter().any(|f| f == FINALIZER));

    // Settled: released; the other finalizer stays until its owner removes it.
    assert_eq!(
        guard::apply(&hub, &guard::plan(&[read().await], &Default::default())).await,
        1
    );
    assert_eq!(read().await.finalizers(), [other.to_owned()]);
    patch_spec(
        &namespaces,
        &ns,
        serde_json::json!({"metadata": {"finalizers": null}}),
    )
    .await;
    gpufed_e2e::wait::until("namespace gone", Duration::from_secs(120), || async {
        Ok(namespaces.get_opt(&ns).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
}
