//! `gpufed-e2e chain`: a real local Solana test validator with a settlement token, funded
//! and delegated escrows for the given tenants, and payout accounts for the given wallets —
//! what the demo's operator settles on. Runs in the foreground until SIGTERM/SIGINT and
//! writes the settings to `<dir>/chain.env` (shell syntax) once ready.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use gpufed_chain::{Keypair, Pubkey, Rpc, setup};
use gpufed_e2e::Validator;

/// Decimals of the demo token.
const DECIMALS: u8 = 6;
/// What each tenant's escrow holds: 1000 tokens.
const ESCROW: u64 = 1_000_000_000;

/// Starts the chain, prepares accounts, writes `chain.env`, waits for a signal.
pub async fn run(dir: &Path, tenants: &[String], payout_wallets: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let validator = Validator::start(&dir.join("solana")).await?;
    let rpc = Rpc::new(&validator.rpc_url(), Duration::from_secs(10))?;
    let authority = Keypair::generate();
    setup::airdrop(&rpc, &authority.pubkey(), 10_000_000_000).await?;
    let mint = setup::create_mint(&rpc, &authority, &authority.pubkey(), DECIMALS).await?;
    let mut env = String::new();
    writeln!(env, "SOLANA_RPC={}", validator.rpc_url())?;
    writeln!(env, "SETTLEMENT_MINT={mint}")?;
    for t in tenants {
        let owner = Keypair::generate();
        let escrow = setup::create_escrow(
            &rpc,
            &authority,
            &mint,
            &authority,
            DECIMALS,
            &owner,
            &authority.pubkey(),
            ESCROW,
            u64::MAX,
        )
        .await?;
        writeln!(env, "ESCROW_{}={escrow}", t.replace('-', "_"))?;
    }
    for w in payout_wallets {
        let wallet = Pubkey::parse(w)?;
        let ata = setup::ensure_associated_account(&rpc, &authority, &wallet, &mint).await?;
        writeln!(env, "# payout account of {w}: {ata}")?;
    }
    let keypair = dir.join("settlement-authority.json");
    std::fs::write(&keypair, authority.to_json()).context("writing the authority keypair")?;
    writeln!(env, "SETTLEMENT_KEYPAIR={}", keypair.display())?;
    let tmp = dir.join("chain.env.tmp");
    std::fs::write(&tmp, env)?;
    std::fs::rename(&tmp, dir.join("chain.env"))?;
    tracing::info!(rpc = %validator.rpc_url(), %mint, "local Solana validator ready");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(validator);
    Ok(())
}
