//! Set-up transactions: funding, mints, token accounts, escrow delegation. Used by the
//! tests, the demo and operators preparing a deployment; settlement itself never calls
//! these.

use std::time::Duration;

use gpufed_settlement::Commitment;

use crate::error::ChainError;
use crate::programs;
use crate::pubkey::{Keypair, Pubkey};
use crate::rpc::Rpc;
use crate::tx::{self, Instruction};

/// How long set-up transactions may take to confirm.
const CONFIRM: Duration = Duration::from_secs(60);

/// Signs with `signers` (first pays), sends with preflight and waits for `confirmed`.
pub async fn send_and_confirm(
    rpc: &Rpc,
    ixs: &[Instruction],
    signers: &[&Keypair],
) -> Result<String, ChainError> {
    let (blockhash, _, _) = rpc.latest_blockhash(Commitment::Confirmed).await?;
    let signed = tx::sign(ixs, signers, blockhash)?;
    let sig = rpc.send_checked(&signed.wire).await?;
    let st = rpc.wait_for(&sig, Commitment::Confirmed, CONFIRM).await?;
    match st.error {
        None => Ok(sig),
        Some(e) => Err(ChainError::Rpc {
            method: "sendTransaction",
            code: 0,
            message: format!("transaction {sig} failed: {e}"),
        }),
    }
}

/// Airdrops lamports (test validators) and waits for confirmation.
pub async fn airdrop(rpc: &Rpc, to: &Pubkey, lamports: u64) -> Result<(), ChainError> {
    let sig = rpc.request_airdrop(to, lamports).await?;
    rpc.wait_for(&sig, Commitment::Confirmed, CONFIRM).await?;
    Ok(())
}

/// Creates a mint with `authority` as mint authority; returns its address.
pub async fn create_mint(
    rpc: &Rpc,
    payer: &Keypair,
    authority: &Pubkey,
    decimals: u8,
) -> Result<Pubkey, ChainError> {
    let mint = Keypair::generate();
    let rent = rpc.rent_exempt_minimum(programs::MINT_LEN).await?;
    let ixs = [
        programs::create_account(
            payer.pubkey(),
            mint.pubkey(),
            rent,
            programs::MINT_LEN,
            *programs::TOKEN,
        ),
        programs::initialize_mint2(mint.pubkey(), decimals, *authority),
    ];
    send_and_confirm(rpc, &ixs, &[payer, &mint]).await?;
    Ok(mint.pubkey())
}

/// Creates a plain token account (its own keypair) owned by `owner`.
pub async fn create_token_account(
    rpc: &Rpc,
    payer: &Keypair,
    mint: &Pubkey,
    owner: &Pubkey,
) -> Result<Pubkey, ChainError> {
    let acct = Keypair::generate();
    let rent = rpc.rent_exempt_minimum(programs::TOKEN_ACCOUNT_LEN).await?;
    let ixs = [
        programs::create_account(
            payer.pubkey(),
            acct.pubkey(),
            rent,
            programs::TOKEN_ACCOUNT_LEN,
            *programs::TOKEN,
        ),
        programs::initialize_account3(acct.pubkey(), *mint, *owner),
    ];
    send_and_confirm(rpc, &ixs, &[payer, &acct]).await?;
    Ok(acct.pubkey())
}

/// Creates (idempotently) the associated token account of `wallet`; returns its address.
pub async fn ensure_associated_account(
    rpc: &Rpc,
    payer: &Keypair,
    wallet: &Pubkey,
    mint: &Pubkey,
) -> Result<Pubkey, ChainError> {
    let ata = programs::associated_token_address(wallet, mint);
    if rpc.token_balance(&ata, Commitment::Confirmed).await?.is_none() {
        let ix = programs::create_associated_token_account_idempotent(payer.pubkey(), *wallet, *mint);
        send_and_confirm(rpc, &[ix], &[payer]).await?;
    }
    Ok(ata)
}

/// Mints `amount` base units to `to`.
pub async fn mint_to(
    rpc: &Rpc,
    payer: &Keypair,
    mint: &Pubkey,
    authority: &Keypair,
    to: &Pubkey,
    amount: u64,
    decimals: u8,
) -> Result<String, ChainError> {
    let ix = programs::mint_to_checked(*mint, *to, authority.pubkey(), amount, decimals);
    send_and_confirm(rpc, &[ix], &[payer, authority]).await
}

/// A tenant's escrow: a token account of `owner`, funded with `amount` and delegated to
/// the settlement `authority` for `allowance`. Returns the escrow account.
#[allow(clippy::too_many_arguments)]
pub async fn create_escrow(
    rpc: &Rpc,
    payer: &Keypair,
    mint: &Pubkey,
    mint_authority: &Keypair,
    decimals: u8,
    owner: &Keypair,
    authority: &Pubkey,
    amount: u64,
    allowance: u64,
) -> Result<Pubkey, ChainError> {
    let escrow = create_token_account(rpc, payer, mint, &owner.pubkey()).await?;
    if amount > 0 {
        mint_to(rpc, payer, mint, mint_authority, &escrow, amount, decimals).await?;
    }
    let ix = programs::approve_checked(escrow, *mint, *authority, owner.pubkey(), allowance, decimals);
    send_and_confirm(rpc, &[ix], &[payer, owner]).await?;
    Ok(escrow)
}
