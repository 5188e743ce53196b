//! The Stake controller of the real operator, against a real hub API server and the real
//! local Solana test validator: deposits are real token transfers into the stake vault;
//! a real one bonds; a fake signature, too small an amount and a wrong staker are rejected
//! with a clear condition; an unbond returns the tokens exactly once; a slash moves exactly
//! its amount to the treasury once, with the evidence hash in its memo; a dismissed slash
//! moves nothing; an operator crashed while the slash is in flight is succeeded by one that
//! resolves it by signature; and a restarted operator re-executes nothing.
#![allow(clippy::unwrap_used)]

mod chainsupport;
mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::stake::StakePhase;
use gpufed_api::{ConditionStatus, Stake, conditions};
use gpufed_chain::{Keypair, Pubkey, programs, tx, verify};
use gpufed_e2e::{FederationSpec, TestEnv};
use gpufed_operator::stake::store::{StakeStore, doc_name};
use gpufed_operator::stake::{SLASH_DISMISS_ANNOTATION, SLASH_REQUEST_ANNOTATION};
use gpufed_settlement::Commitment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use opsupport::Operator;

/// One token (6 decimals).
const T: u64 = 1_000_000;
const NS: &str = "gpufed-system";
/// Deposits verify at finalized commitment: ~15 s on an idle test validator, about a minute
/// for the debug build on a busy 2-core machine.
const FINAL: Duration = Duration::from_secs(240);

async fn create_stake(hub: &Client, name: &str, amount: &str, signature: &str, staker: &Pubkey) {
    chainsupport::create_stake(hub, name, "provider-a", amount, signature, staker).await;
}

async fn patch_stake(hub: &Client, name: &str, patch: serde_json::Value) {
    Api::<Stake>::all(hub.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn phase(s: &Stake) -> Option<StakePhase> {
    s.status.as_ref().and_then(|st| st.phase)
}

fn condition(s: &Stake, t: &str) -> Option<gpufed_api::Condition> {
    s.status
        .as_ref()
        .and_then(|st| conditions::find(&st.conditions, t).cloned())
}

async fn stake_until(
    hub: &Client,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Stake) -> bool,
) -> Stake {
    let api: Api<Stake> = Api::all(hub.clone());
    let result = gpufed_e2e::wait::until(what, timeout, || async {
        let s = api.get(name).await?;
        Ok(pred(&s).then_some(s))
    })
    .await;
    match result {
        Ok(s) => s,
        Err(e) => {
            let last = api.get(name).await.ok().and_then(|s| s.status);
            panic!("Stake {name}: {e}; last status: {last:#?}");
        }
    }
}

/// Waits until the Stake is Rejected and checks Ready, DepositVerified and Stalled carry
/// `reason`.
async fn rejected(hub: &Client, name: &str, reason: &str) {
    let s = stake_until(hub, name, "Rejected", FINAL, |s| {
        phase(s) == Some(StakePhase::Rejected)
    })
    .await;
    for t in ["Ready", "DepositVerified", "Stalled"] {
        let c = condition(&s, t).unwrap_or_else(|| panic!("{name}: no {t}"));
        assert_eq!(c.reason, reason, "{name} {t}: {}", c.message);
        assert_eq!(c.observed_generation, s.metadata.generation);
    }
    assert_eq!(condition(&s, "Stalled").unwrap().status, ConditionStatus::True);
    assert!(condition(&s, "Reconciling").is_none(), "{name}");
    assert_eq!(s.status.as_ref().unwrap().bonded_amount, None, "{name}");
}

async fn bonded(hub: &Client, name: &str, amount: &str) -> Stake {
    let s = stake_until(hub, name, "Bonded", FINAL, |s| {
        phase(s) == Some(StakePhase::Bonded)
    })
    .await;
    assert_eq!(
        s.status.as_ref().unwrap().bonded_amount.as_deref(),
        Some(amount),
        "{name}"
    );
    assert_eq!(
        condition(&s, "Ready").unwrap().status,
        ConditionStatus::True,
        "{name}"
    );
    assert_eq!(
        condition(&s, "DepositVerified").unwrap().status,
        ConditionStatus::True
    );
    s
}

async fn successful_txs(chain: &chainsupport::Chain, account: &Pubkey) -> usize {
    let sigs = chain
        .rpc
        .signatures_for_address(account, Commitment::Finalized)
        .await
        .unwrap();
    sigs.iter().filter(|(_, ok)| *ok).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_controller_bonds_rejects_unbonds_and_slashes_exactly_once() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = TestEnv::start(FederationSpec::new("stake")).await.expect("hub");
    let hub = env.hub_client().await.unwrap();
    gpufed_e2e::crds::install_crds(&hub, &common::repo_root().join("crds"), Duration::from_secs(60))
        .await
        .expect("CRDs install");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(hub.clone())
        .create(&PostParams::default(), &ns)
        .await;

    // The chain: the token, the vault (owned by the stake authority), the treasury, and
    // stakers holding tokens.
    let chain = chainsupport::Chain::start(&[], &[], 0).await;
    let stake_setup = chain.stake_setup().await;
    let (vault, treasury) = (stake_setup.vault, stake_setup.treasury);
    let (a, a_ata) = chain.funded_wallet(1000 * T).await;
    let (b, _) = chain.funded_wallet(100 * T).await;
    let (c, _) = chain.funded_wallet(100 * T).await;
    let (d, _) = chain.funded_wallet(100 * T).await;
    let (e, _) = chain.funded_wallet(100 * T).await;
    let sig_a = chain.transfer(&a, &vault, 250 * T).await;
    let sig_b = chain.transfer(&b, &vault, 10 * T).await;
    let sig_c = chain.transfer(&c, &vault, 30 * T).await;
    let sig_d = chain.transfer(&d, &vault, 100 * T).await;
    let sig_e = chain.transfer(&e, &vault, 100 * T).await;
    // Well-formed, signed, never sent.
    let fake = tx::sign(&[programs::memo("never sent")], &[&Keypair::generate()], [1; 32])
        .unwrap()
        .signature;

    create_stake(&hub, "good", "250", &sig_a, &a.pubkey()).await;
    create_stake(&hub, "fake", "1", &fake, &a.pubkey()).await;
    create_stake(&hub, "small", "20", &sig_b, &b.pubkey()).await;
    create_stake(&hub, "wrong-staker", "30", &sig_c, &a.pubkey()).await;
    create_stake(&hub, "slashed", "100", &sig_d, &d.pubkey()).await;
    create_stake(&hub, "dismissed", "100", &sig_e, &e.pubkey()).await;

    let dir = tempfile::tempdir().unwrap();
    let flags = chain.stake_flags(
        &stake_setup,
        dir.path(),
        &[
            "--unbonding-period",
            "5s",
            "--dispute-window",
            "10s",
            "--deposit-grace",
            "5s",
        ],
    );
    let operator = Operator::start_with(hub.clone(), "stake-op-1", &flags);

    // Verification.
    bonded(&hub, "good", "250").await;
    rejected(&hub, "fake", "DepositNotFound").await;
    rejected(&hub, "small", "DepositInsufficient").await;
    rejected(&hub, "wrong-staker", "DepositWrongStaker").await;
    bonded(&hub, "slashed", "100").await;
    bonded(&hub, "dismissed", "100").await;
    // One deposit bonds one Stake.
    create_stake(&hub, "dup", "250", &sig_a, &a.pubkey()).await;
    let dup = stake_until(&hub, "dup", "Stalled", Duration::from_secs(30), |s| {
        condition(s, "Stalled").is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(
        condition(&dup, "Stalled").unwrap().reason,
        "DepositAlreadyClaimed"
    );
    assert_eq!(phase(&dup), Some(StakePhase::Pending));

    // A slash, and one dismissed within its dispute window.
    let h1 = "a1".repeat(32);
    let h2 = "b2".repeat(32);
    let request = |kind: &str, hash: &str, amount: &str| {
        serde_json::json!({"metadata": {"annotations": {SLASH_REQUEST_ANNOTATION:
            serde_json::json!({"kind": kind, "evidenceHash": hash, "amount": amount}).to_string()}}})
    };
    patch_stake(&hub, "slashed", request("failed-challenge", &h1, "40")).await;
    patch_stake(&hub, "dismissed", request("duplicate-gpu", &h2, "10")).await;
    stake_until(&hub, "dismissed", "slash pending", Duration::from_secs(20), |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.slashes.len() == 1 && !st.slashes[0].executed)
    })
    .await;
    patch_stake(
        &hub,
        "dismissed",
        serde_json::json!({"metadata": {"annotations": {SLASH_DISMISS_ANNOTATION: "true"}}}),
    )
    .await;
    let dismissed = stake_until(
        &hub,
        "dismissed",
        "slash dismissed",
        Duration::from_secs(20),
        |s| {
            s.status.as_ref().is_some_and(|st| st.slashes.is_empty()) && condition(s, "Reconciling").is_none()
        },
    )
    .await;
    assert_eq!(phase(&dismissed), Some(StakePhase::Bonded));

    // Unbonding returns the deposit after the period.
    patch_stake(&hub, "good", serde_json::json!({"spec": {"unbond": true}})).await;
    let unbonding = stake_until(&hub, "good", "Unbonding", Duration::from_secs(30), |s| {
        phase(s) == Some(StakePhase::Unbonding)
    })
    .await;
    assert!(unbonding.status.as_ref().unwrap().unbonding_end_time.is_some());
    // A crash while the slash is in flight (signed, persisted, sent, not final): the next
    // operator resolves it by its signature and never signs it again.
    stake_until(&hub, "slashed", "slash in flight", FINAL, |s| {
        s.status.as_ref().is_some_and(|st| {
            st.slashes.len() == 1 && !st.slashes[0].executed && st.slashes[0].signature.is_some()
        })
    })
    .await;
    operator.kill();
    let operator = Operator::start_with(hub.clone(), "stake-op-2", &flags);
    let released = stake_until(&hub, "good", "Released", FINAL, |s| {
        phase(s) == Some(StakePhase::Released)
    })
    .await;
    let release_sig = released
        .status
        .as_ref()
        .unwrap()
        .release_signature
        .clone()
        .expect("release signature");
    let slashed = stake_until(&hub, "slashed", "Slashed", FINAL, |s| {
        phase(s) == Some(StakePhase::Slashed)
    })
    .await;
    let st = slashed.status.as_ref().unwrap();
    assert_eq!(st.bonded_amount.as_deref(), Some("60"));
    assert_eq!(st.slashes.len(), 1);
    assert!(st.slashes[0].executed);
    assert_eq!(st.slashes[0].evidence_hash, h1);
    assert_eq!(st.slashes[0].amount, "40");
    let slash_sig = st.slashes[0].signature.clone().expect("slash signature");

    // On chain: the slash's memo carries the evidence hash; balances moved exactly once.
    let slash_tx = chain
        .rpc
        .transaction_when_served(&slash_sig, Commitment::Finalized, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("slash transaction finalized");
    assert!(slash_tx["meta"]["err"].is_null());
    assert_eq!(
        verify::memos(&slash_tx),
        vec![format!(
            "gpufed:v1:slash:failed-challenge:{h1}:{}",
            gpufed_settlement::memo::stake_tag(&sig_d)
        )]
    );
    let release_tx = chain
        .rpc
        .transaction_when_served(&release_sig, Commitment::Finalized, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("release transaction finalized");
    assert!(release_tx["meta"]["err"].is_null());
    // Past the dismissed slash's window: still nothing moved for it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let check = |when: &'static str| {
        let chain = &chain;
        async move {
            assert_eq!(
                chain.balance(&a_ata, Commitment::Finalized).await,
                1000 * T,
                "{when}: staker a"
            );
            assert_eq!(
                chain.balance(&treasury, Commitment::Finalized).await,
                40 * T,
                "{when}: treasury"
            );
            assert_eq!(
                chain.balance(&vault, Commitment::Finalized).await,
                (250 + 10 + 30 + 100 + 100 - 250 - 40) * T,
                "{when}: vault"
            );
            // Creation, five deposits, one release, one slash.
            assert_eq!(
                successful_txs(chain, &vault).await,
                8,
                "{when}: vault transactions"
            );
        }
    };
    check("after the effects").await;
    let dismissed = bonded(&hub, "dismissed", "100").await;
    assert!(dismissed.status.unwrap().slashes.is_empty());

    // The state is in the hub; a new operator resolves, and re-executes nothing.
    let mut store = StakeStore::new(hub.clone(), NS);
    let doc = store.load("good").await.unwrap().expect("state of good");
    assert_eq!(doc.state.phase, gpufed_settlement::stake::StakePhase::Released);
    let cms: Api<ConfigMap> = Api::namespaced(hub.clone(), NS);
    assert!(cms.get_opt(&doc_name("slashed")).await.unwrap().is_some());
    operator.stop().await;
    let operator = Operator::start_with(hub.clone(), "stake-op-3", &flags);
    tokio::time::sleep(Duration::from_secs(15)).await;
    check("after a restart").await;
    for (name, want) in [
        ("good", StakePhase::Released),
        ("slashed", StakePhase::Slashed),
        ("dismissed", StakePhase::Bonded),
        ("fake", StakePhase::Rejected),
    ] {
        let s = Api::<Stake>::all(hub.clone()).get(name).await.unwrap();
        assert_eq!(phase(&s), Some(want), "{name} after a restart");
    }
    operator.stop().await;
}
