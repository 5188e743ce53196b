//! Trust and stake together, on real API servers and the real local Solana validator:
//! two providers, each with 8 (fake-plugin) H100s and a bonded Stake. Both verify and are
//! Staked; then both start failing challenges. Each gets one evidence document; the Stake
//! controller raises one slash per evidence. Provider A's dispute runs out and exactly
//! `--slash-bps` of its stake moves to the treasury, once, with the evidence hash in the
//! memo; provider B's dispute is overturned (dismissed) and nothing moves. More failing
//! rounds inside the evidence cooldown slash nothing more.
#![allow(clippy::unwrap_used)]

mod chainsupport;
mod common;
mod opsupport;
mod trustsupport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gpufed_api::conditions::{find, types};
use gpufed_api::{ConditionStatus, GpuProvider, Stake};
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use gpufed_operator::stake::SLASH_DISMISS_ANNOTATION;
use gpufed_settlement::Commitment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use opsupport::Operator;
use trustsupport::{BANDS, fake_plugin};

/// One token (6 decimals).
const T: u64 = 1_000_000;
const NS: &str = "gpufed-system";
const FINAL: Duration = Duration::from_secs(240);

async fn wait<T, F>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn condition(p: &GpuProvider, t: &str) -> Option<(ConditionStatus, String)> {
    let c = find(&p.status.as_ref()?.conditions, t)?;
    Some((c.status, c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_challenges_slash_once_after_the_dispute_window_and_a_dismissal_slashes_nothing() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("trust-slash")
        .member("provider-a", vec![GpuPool::h100_nvlink("a", 1)])
        .member("provider-b", vec![GpuPool::h100_nvlink("b", 1)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes");
        return;
    };
    let hub = env.hub_client().await.unwrap();
    opsupport::setup(fed, &hub, &[]).await;
    let honest = Arc::new(AtomicBool::new(true));
    let mut plugins = Vec::new();
    for m in ["provider-a", "provider-b"] {
        let member = fed.cluster(m).unwrap().client().await.unwrap();
        plugins.push(fake_plugin(member, honest.clone()));
    }

    let chain = chainsupport::Chain::start(&[], &[], 0).await;
    let stake_setup = chain.stake_setup().await;
    let (vault, treasury) = (stake_setup.vault, stake_setup.treasury);
    let (a, _) = chain.funded_wallet(100 * T).await;
    let (b, _) = chain.funded_wallet(100 * T).await;
    let sig_a = chain.transfer(&a, &vault, 100 * T).await;
    let sig_b = chain.transfer(&b, &vault, 100 * T).await;
    chainsupport::create_stake(&hub, "stake-a", "provider-a", "100", &sig_a, &a.pubkey()).await;
    chainsupport::create_stake(&hub, "stake-b", "provider-b", "100", &sig_b, &b.pubkey()).await;

    let dir = tempfile::tempdir().unwrap();
    let bands = dir.path().join("bands.yaml");
    std::fs::write(&bands, BANDS).unwrap();
    let flags = chain.stake_flags(
        &stake_setup,
        dir.path(),
        &[
            "--dispute-window",
            "25s",
            "--slash-bps",
            "2000",
            "--stake-per-gpu",
            "5",
            "--stake-multiplier",
            "NVIDIA-H100-80GB-HBM3=2",
            "--challenge-bands",
            &bands.display().to_string(),
            "--verify-interval",
            "5s",
            "--challenge-round-grace",
            "1s",
            "--challenge-timeout",
            "30s",
        ],
    );
    let operator = Operator::start_with(hub.clone(), "trust-op", &flags);
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let stakes: Api<Stake> = Api::all(hub.clone());

    // Honest and bonded: 8 verified H100s need 8 × 5 × 2 = 80 tokens; 100 are bonded.
    for p in ["provider-a", "provider-b"] {
        wait(&format!("{p} verified and staked"), FINAL, async || {
            let got = providers.get(p).await.ok()?;
            (condition(&got, types::VERIFIED) == Some((ConditionStatus::True, "ChallengesPassed".into()))
                && condition(&got, types::STAKED) == Some((ConditionStatus::True, "Bonded".into())))
            .then_some(())
        })
        .await;
    }

    // Both start lying.
    honest.store(false, Ordering::SeqCst);
    for p in ["provider-a", "provider-b"] {
        wait(&format!("{p} caught"), Duration::from_secs(90), async || {
            let got = providers.get(p).await.ok()?;
            (condition(&got, types::VERIFIED) == Some((ConditionStatus::False, "ChallengeFailed".into())))
                .then_some(())
        })
        .await;
    }
    let pending = |name: &'static str| {
        let stakes = stakes.clone();
        async move {
            wait(
                &format!("{name}: slash pending"),
                Duration::from_secs(60),
                async || {
                    let s = stakes.get(name).await.ok()?;
                    let slash = s.status?.slashes.into_iter().next()?;
                    (!slash.executed).then_some(slash)
                },
            )
            .await
        }
    };
    // B disputes in time: the slash is overturned.
    pending("stake-b").await;
    stakes
        .patch(
            "stake-b",
            &PatchParams::default(),
            &Patch::Merge(
                &serde_json::json!({"metadata": {"annotations": {SLASH_DISMISS_ANNOTATION: "true"}}}),
            ),
        )
        .await
        .unwrap();
    let slash_a = pending("stake-a").await;
    assert_eq!(slash_a.amount, "20", "20% of 100");
    // The evidence document behind the slash is in the hub, and hashes to what is slashed.
    let cms: Api<ConfigMap> = Api::namespaced(hub.clone(), NS);
    let evidence = cms
        .list(&ListParams::default().labels("gpufed.io/evidence=true"))
        .await
        .unwrap()
        .items;
    assert_eq!(evidence.len(), 2, "one evidence per provider");
    let hashes: Vec<String> = evidence
        .iter()
        .map(|c| c.data.as_ref().unwrap()["hash"].clone())
        .collect();
    assert!(hashes.contains(&slash_a.evidence_hash), "{hashes:?}");

    let executed = wait("stake-a: slash executed", FINAL, async || {
        let s = stakes.get("stake-a").await.ok()?;
        let slash = s.status?.slashes.into_iter().next()?;
        slash.executed.then_some(slash)
    })
    .await;
    // On chain: the memo names the kind and the evidence document's hash.
    let slash_sig = executed.signature.clone().expect("slash signature");
    let slash_tx = wait("slash transaction finalized", FINAL, async || {
        chain
            .rpc
            .transaction(&slash_sig, Commitment::Finalized)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(slash_tx["meta"]["err"].is_null());
    assert_eq!(
        gpufed_chain::verify::memos(&slash_tx),
        vec![format!(
            "gpufed:v1:slash:failed-challenge:{}:{}",
            slash_a.evidence_hash,
            gpufed_settlement::memo::stake_tag(&sig_a)
        )]
    );
    wait("treasury credited", FINAL, async || {
        (chain.balance(&treasury, Commitment::Finalized).await == 20 * T).then_some(())
    })
    .await;
    // More failing rounds (every 5 s) inside the cooldown: nothing more moves.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let b = stakes.get("stake-b").await.unwrap().status.unwrap();
    assert!(b.slashes.is_empty(), "dismissed: {:?}", b.slashes);
    assert_eq!(b.bonded_amount.as_deref(), Some("100"));
    let a = stakes.get("stake-a").await.unwrap().status.unwrap();
    assert_eq!(a.slashes.len(), 1, "{:?}", a.slashes);
    assert_eq!(a.bonded_amount.as_deref(), Some("80"));
    assert_eq!(chain.balance(&treasury, Commitment::Finalized).await, 20 * T);
    let txs = chain
        .rpc
        .signatures_for_address(&treasury, Commitment::Finalized)
        .await
        .unwrap();
    // The treasury account's creation, and exactly one slash.
    assert_eq!(
        txs.iter().filter(|(_, ok)| *ok).count(),
        2,
        "creation + one slash transaction"
    );
    // Vault: creation, two deposits, one slash (the dismissed one never moved anything).
    let vault_txs = chain
        .rpc
        .signatures_for_address(&vault, Commitment::Finalized)
        .await
        .unwrap();
    assert_eq!(vault_txs.iter().filter(|(_, ok)| *ok).count(), 4);
    assert_eq!(chain.balance(&vault, Commitment::Finalized).await, 180 * T);
    assert_eq!(
        cms.list(&ListParams::default().labels("gpufed.io/evidence=true"))
            .await
            .unwrap()
            .items
            .len(),
        2,
        "no new evidence inside the cooldown"
    );
    for p in plugins {
        p.abort();
    }
    operator.stop().await;
    drop(env);
}
