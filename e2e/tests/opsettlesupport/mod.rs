//! `operator_settlement`'s helpers: the market's set-up (payout wallets, escrows, the
//! operator's flags), what "metered" and "settled" mean on a job, a stopped job's usage
//! followed until it settles, and the operator's admin server (`/readyz`, `/metrics`). The
//! checks against the chain are in `checks`.

mod checks;

pub use checks::{
    balances_agree, journal_dump, secrets_stay_where_kept, tenant_released_once_settled, verify_journal,
};

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_api::ComputeJob;
use gpufed_api::job_status::JobPhase;
use gpufed_chain::JournalStore;
use gpufed_operator::settlement::ESCROW_ANNOTATION;
use gpufed_operator::settlement::store::ConfigMapStore;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::chainsupport::Chain;

/// The job has journaled usage (`status.billing.records` > 0).
pub fn metered(j: &ComputeJob) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.billing.as_ref())
        .is_some_and(|b| b.records > 0)
}

/// The job succeeded and every record of its usage is settled on chain.
pub fn settled(j: &ComputeJob) -> bool {
    let st = j.status.as_ref();
    let done = st.and_then(|s| s.phase) == Some(JobPhase::Succeeded);
    let b = st.and_then(|s| s.billing.as_ref());
    done && b.is_some_and(|b| b.records > 0 && b.settled_records == b.records)
}

/// Waits until each of `jobs` (namespace, name) succeeded and settled; returns them in order.
pub async fn all_settled<'a>(
    hub: &Client,
    jobs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<ComputeJob> {
    let mut out = Vec::new();
    for (ns, name) in jobs {
        let what = "succeeded and settled";
        out.push(crate::opsupport::job_until(hub, ns, name, what, Duration::from_secs(240), settled).await);
    }
    out
}

/// `flags` with the value after `flag` replaced.
pub fn flags_with(flags: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = flags.to_vec();
    let i = out.iter().position(|f| f == flag).expect("flag present");
    out[i + 1] = value.to_string();
    out
}

/// Waits until `job` (stopped by its service or deleted while running) is gone and its
/// journaled usage settled; asserts it was metered up to its stop: not lost, not past it.
pub async fn gone_and_settled(
    hub: &Client,
    ns: &str,
    job: &ComputeJob,
) -> gpufed_settlement::position::JobBilling {
    let name = job.name_any();
    let uid = job.metadata.uid.clone().unwrap();
    let used_before = job.status.as_ref().unwrap().usage.as_ref().unwrap().gpu_seconds;
    let api: Api<ComputeJob> = Api::namespaced(hub.clone(), ns);
    let gone = gpufed_e2e::wait::until(&format!("{name} gone"), Duration::from_secs(120), || async {
        Ok(api.get_opt(&name).await?.is_none().then_some(()))
    })
    .await;
    if let Err(e) = gone {
        // Flaked once (2026-12-01): show what the operator said about it.
        let left = api.get_opt(&name).await.ok().flatten();
        let services: Api<gpufed_api::ComputeService> = Api::namespaced(hub.clone(), ns);
        let owner = services.list(&Default::default()).await.ok().map(|l| {
            l.items
                .into_iter()
                .map(|s| (s.name_any(), s.metadata.finalizers, s.status))
                .collect::<Vec<_>>()
        });
        let tail = crate::common::log_tail(
            |l| l.contains(&name) || l.contains("WARN") || l.contains("service"),
            120,
        );
        panic!(
            "{e}: {}\nservices: {}\n{tail}",
            serde_json::to_string_pretty(&left.map(|j| {
                (
                    j.spec.suspend,
                    j.metadata.deletion_timestamp,
                    j.metadata.finalizers,
                    j.status,
                )
            }))
            .unwrap_or_default(),
            serde_json::to_string_pretty(&owner).unwrap_or_default()
        );
    }
    // After the validator's outage a batch in flight at the stop (sometimes confirmed in a
    // slot the restart dropped) is re-signed only once its blockhash has expired on the
    // restarted chain: ~150 blocks past its signing height plus the dropped slots, about
    // 1.5 minutes at 0.57 s a slot (5 at the 1.4 s of a starved validator's clock) and more
    // on a loaded machine — hence the long wait.
    let settled = gpufed_e2e::wait::until(&format!("{name} settled"), Duration::from_secs(600), || async {
        let mut store = ConfigMapStore::new(hub.clone(), "gpufed-system");
        let journal = store.load().await.unwrap().expect("journal");
        let b = journal.billing(&uid);
        Ok((b.records > 0 && b.settled.records == b.records).then_some(b))
    })
    .await;
    let billing = match settled {
        Ok(b) => b,
        // The namespace is the tenant here.
        Err(e) => panic!("{e}\n{}", journal_dump(hub, ns).await),
    };
    assert!(
        billing.gpu_seconds >= used_before && billing.gpu_seconds < used_before + 90,
        "{name}: metered to the stop, not lost nor past it: {} vs {used_before} before",
        billing.gpu_seconds
    );
    assert_eq!(billing.settled.amount, billing.amount, "{name}");
    billing
}

/// Waits for `/readyz` to answer 200 (its caches listed). It never did before
/// 2026-12-02: several tasks waited on one kube-runtime store gate that wakes only one.
pub async fn readyz(addr: std::net::SocketAddr, who: &str) {
    let ready = gpufed_e2e::wait::until(&format!("{who} /readyz"), Duration::from_secs(60), || async {
        let r = crate::opsupport::admin_get(addr, "/readyz")
            .await
            .unwrap_or_default();
        Ok(r.starts_with("HTTP/1.1 200").then_some(()))
    })
    .await;
    ready.unwrap_or_else(|e| panic!("{e}"));
}

/// `providers` are paid to their payout wallets; `tenants` pay from annotated escrows, but
/// `unannotated` starts without the annotation: its usage cannot be charged.
pub async fn pay_to_wallets_from_escrows(
    hub: &Client,
    chain: &Chain,
    providers: &[&str],
    tenants: &[&str],
    unannotated: &str,
) {
    let gp: Api<gpufed_api::GpuProvider> = Api::all(hub.clone());
    for &p in providers {
        let wallet = chain.accounts.payout_wallets[p].to_string();
        let patch = serde_json::json!({"spec": {"payoutWallet": wallet}});
        gp.patch(p, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(hub.clone());
    for &t in tenants {
        let annotations = (t != unannotated).then(|| {
            BTreeMap::from([(
                ESCROW_ANNOTATION.to_string(),
                chain.accounts.escrows[t].to_string(),
            )])
        });
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(t.into()),
                annotations,
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces.create(&PostParams::default(), &ns).await.unwrap();
    }
}

/// The operator's flags: admin server, the chain, the settlement authority's keypair
/// (written into `dir`), and short metering slices so that long jobs bill live.
pub fn operator_flags(chain: &Chain, dir: &std::path::Path, admin: std::net::SocketAddr) -> Vec<String> {
    let keypair = dir.join("authority.json");
    std::fs::write(&keypair, chain.authority().to_json()).unwrap();
    [
        "--admin-addr",
        &admin.to_string(),
        "--solana-rpc",
        &chain.validator.rpc_url(),
        "--settlement-keypair",
        &keypair.display().to_string(),
        "--settlement-mint",
        &chain.accounts.mint.to_string(),
        "--settlement-interval",
        "1s",
        "--meter-slice",
        "5s",
        "--meter-lag",
        "20s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
