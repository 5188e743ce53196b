//! The Stake controller: verifies deposits on chain, bonds, unbonds and slashes, each
//! effect exactly once (docs/settlement.md, "Stake").
//!
//! One task, active only while this process holds the Lease (like settlement). Each round
//! lists the `Stake`s and, per Stake: reads its persisted state ([`store`]; created on
//! first sight), feeds the pure machine (`gpufed_settlement::stake::step`) what the spec
//! and annotations ask ([`plan::inputs`]: `spec.unbond`, [`SLASH_REQUEST_ANNOTATION`],
//! [`SLASH_DISMISS_ANNOTATION`]) and a tick, **persists the new state before executing the
//! actions it returned** (deposit lookups, release and slash transactions), feeds their
//! answers back the same way, and writes `status` ([`status::status`]). The first round of a
//! leadership term resolves every effect in flight by its signature (`Restarted`).

pub mod apply;
pub mod inputs;
pub mod plan;
pub mod reuse;
pub mod status;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpufed_api::Stake;
use gpufed_chain::stake_tx::StakeAccounts;
use gpufed_chain::{ChainError, Keypair, Pubkey, Rpc};
use gpufed_settlement::stake::StakeConfig;
use gpufed_settlement::{Commitment, MachineConfig};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::context::Context;
pub use plan::{SLASH_DISMISS_ANNOTATION, SLASH_REQUEST_ANNOTATION};

/// Stake controller settings (from flags).
#[derive(Debug, Clone)]
pub struct StakeControllerConfig {
    /// Solana JSON-RPC URL.
    pub rpc_url: String,
    /// Mint of the stake token.
    pub mint: String,
    /// Vault token account.
    pub vault: String,
    /// Stake authority keypair file (owner of the vault).
    pub keypair: PathBuf,
    /// Treasury token account (receives slashes).
    pub treasury: String,
    /// Unbonding period.
    pub unbonding_period: Duration,
    /// Dispute window of a slash.
    pub dispute_window: Duration,
    /// How long an unknown deposit is retried.
    pub deposit_grace: Duration,
    /// Commitment at which a release or slash counts as done.
    pub commitment: Commitment,
    /// Period of rounds.
    pub interval: Duration,
    /// Namespace of the state ConfigMaps (and of the evidence ConfigMaps).
    pub namespace: String,
    /// Share of the bonded amount one slash for recorded evidence takes, basis points.
    pub slash_bps: u32,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the Stake controller until shutdown; idles while not leader.
pub async fn run(ctx: Arc<Context>, cfg: StakeControllerConfig, shutdown: watch::Receiver<bool>) {
    crate::lease::per_term(&ctx.leadership, "stake controller", shutdown, |mut rx, term| {
        let (ctx, cfg) = (ctx.clone(), cfg.clone());
        async move { session(&ctx, &cfg, &mut rx, term).await }
    })
    .await;
}

/// One leadership term.
async fn session(
    ctx: &Context,
    cfg: &StakeControllerConfig,
    shutdown: &mut watch::Receiver<bool>,
    term: u64,
) -> Result<(), ChainError> {
    // Bonded stake is read anew each term: until then providers are `Staked=Unknown`
    // (a view from an earlier term may be stale by now).
    if let Ok(mut view) = ctx.stakes.write() {
        *view = None;
    }
    let authority = Keypair::read(&cfg.keypair)?;
    let mint = Pubkey::parse(&cfg.mint)?;
    let vault = Pubkey::parse(&cfg.vault)?;
    let treasury = Pubkey::parse(&cfg.treasury)?;
    let rpc = Rpc::new(&cfg.rpc_url, Duration::from_secs(10))?;
    let decimals = rpc.mint_decimals(&mint).await?;
    let verify = ctx.verifier.config();
    // A --stake-per-gpu the mint cannot express makes every provider
    // `Staked=Unknown/InvalidStakePolicy` (the provider controller reads the same policy
    // with these decimals), so no GPU counts as staked on it. The Stakes themselves are
    // still driven: deposits verified, releases paid, dismissals recorded inside their
    // dispute window — stopping them would protect nothing and let windows close.
    if let Err(why) = crate::verification::plan::stake_policy(
        &verify.stake_per_gpu,
        &verify.stake_multipliers,
        Some(decimals),
    ) {
        error!(reason = %why, decimals, "fix --stake-per-gpu: the stake mint cannot represent it; no provider counts as staked until then");
    }
    info!(authority = %authority.pubkey(), %mint, %vault, %treasury, decimals, "stake controller starting");
    let mut driver = apply::Driver {
        rpc,
        authority,
        accounts: StakeAccounts {
            mint,
            decimals,
            vault,
            treasury,
        },
        cfg: StakeConfig {
            stake_mint: mint.to_string(),
            vault: vault.to_string(),
            unbonding_period_ms: ms(cfg.unbonding_period),
            dispute_window_ms: ms(cfg.dispute_window),
            deposit_not_found_grace_ms: ms(cfg.deposit_grace),
        },
        machine: MachineConfig {
            commitment: cfg.commitment,
            poll_ms: 1_000,
            ..Default::default()
        },
        store: store::StakeStore::new(ctx.hub.clone(), &cfg.namespace),
        resumed: HashSet::new(),
        saved: HashMap::new(),
        slash_bps: cfg.slash_bps,
        history: Default::default(),
        paused: None,
    };
    let stakes: Api<Stake> = Api::all(ctx.hub.clone());
    let mut reconciled: HashSet<String> = HashSet::new();
    while ctx.leadership.holds(term) && !*shutdown.borrow() {
        // Evidence recorded by verification (docs/trust.md); unreadable: no slash this round.
        let evidence = crate::verification::evidence::list(&ctx.hub, &cfg.namespace)
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot list evidence");
                Default::default()
            });
        driver.check_history().await;
        match stakes.list(&Default::default()).await {
            Ok(list) => {
                let mut bonded: std::collections::BTreeMap<String, u64> = Default::default();
                // Overturned on one of a provider's Stakes: overturned for all of them.
                let dismissed = plan::dismissed_by_provider(
                    list.items
                        .iter()
                        .filter_map(|s| Some((s.spec.provider.as_str(), driver.saved.get(&s.name_any())?))),
                );
                let none = Default::default();
                // A provider with a Stake not reconciled yet this term (its dismissals not
                // read yet) has no evidence raised against it until the next round.
                let unopened: std::collections::BTreeSet<&str> = list
                    .items
                    .iter()
                    .filter(|s| !reconciled.contains(&s.name_any()))
                    .map(|s| s.spec.provider.as_str())
                    .collect();
                reconciled.extend(list.items.iter().map(|s| s.name_any()));
                for stake in &list.items {
                    if !ctx.leadership.holds(term) {
                        break;
                    }
                    let dismissed = dismissed.get(&stake.spec.provider).unwrap_or(&none);
                    let against: Vec<plan::EvidenceRef> = evidence
                        .get(&stake.spec.provider)
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .filter(|_| !unopened.contains(stake.spec.provider.as_str()))
                        .filter(|e| !dismissed.contains(&e.hash.to_hex()))
                        .cloned()
                        .collect();
                    if let Err(e) = driver.reconcile(&ctx.hub, stake, &against, dismissed).await {
                        warn!(stake = %stake.name_any(), error = %e, "stake not reconciled; next round retries");
                    }
                    if let Some((provider, amount)) = driver.saved.get(&stake.name_any()).and_then(|doc| {
                        reuse::credits(doc, &stake.uid().unwrap_or_default(), &stake.spec.provider)
                    }) {
                        *bonded.entry(provider.to_owned()).or_default() += amount;
                    }
                }
                if let Ok(mut view) = ctx.stakes.write() {
                    *view = Some(crate::context::StakeView { decimals, bonded });
                }
            }
            Err(e) => warn!(error = %e, "cannot list Stakes"),
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(cfg.interval) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use crate::cli::Args;

    const KEY: &str = "So11111111111111111111111111111111111111112";

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["gpufed-operator"].iter().chain(extra))
    }

    #[test]
    fn stake_controller_is_off_without_its_flags() {
        assert!(args(&[]).unwrap().stake().unwrap().is_none());
        let rpc_only = args(&["--solana-rpc", "http://127.0.0.1:8899"]).unwrap();
        assert!(rpc_only.stake().unwrap().is_none());
        // Stake flags need the RPC endpoint.
        assert!(args(&["--stake-mint", KEY]).is_err());
    }

    #[test]
    fn stake_flags_build_the_config_or_name_what_is_missing() {
        let full = [
            "--solana-rpc",
            "http://127.0.0.1:8899",
            "--stake-mint",
            KEY,
            "--stake-vault",
            KEY,
            "--stake-authority-keypair",
            "/k.json",
            "--stake-treasury",
            KEY,
            "--unbonding-period",
            "5s",
            "--dispute-window",
            "1m",
        ];
        let cfg = args(&full).unwrap().stake().unwrap().unwrap();
        assert_eq!(cfg.unbonding_period.as_secs(), 5);
        assert_eq!(cfg.dispute_window.as_secs(), 60);
        assert_eq!(cfg.deposit_grace.as_secs(), 600, "default");
        assert_eq!(cfg.commitment, gpufed_settlement::Commitment::Finalized);
        let without_treasury: Vec<&str> = full[..8].to_vec();
        let err = args(&without_treasury).unwrap().stake().unwrap_err();
        assert!(err.contains("--stake-treasury"), "{err}");
    }
}
