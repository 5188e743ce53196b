//! The stake effects on chain: building and signing the release (vault → the staker's
//! associated token account, created idempotently in the same transaction) and the slash
//! (vault → treasury, with the memo that carries the evidence hash), and executing the
//! transaction machine's actions for them against an RPC node.
//!
//! The vault is a token account owned by the stake authority, which signs both effects as
//! owner and pays their fees. As in [`crate::settler`], the caller persists the state the
//! machine returned **before** calling [`execute`] with one of its actions.

use gpufed_settlement::machine::{Intent, SigStatus};
use gpufed_settlement::stake::Effect;
use gpufed_settlement::{Action, Commitment, Observation, QueryId};
use tracing::{debug, info, warn};

use crate::error::ChainError;
use crate::programs;
use crate::pubkey::{Keypair, Pubkey};
use crate::rpc::Rpc;
use crate::tx::{self, Instruction};

/// The token and accounts of the stake effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeAccounts {
    /// Mint of the stake token.
    pub mint: Pubkey,
    /// Its decimals (TransferChecked verifies them on chain).
    pub decimals: u8,
    /// Vault token account (owner: the stake authority).
    pub vault: Pubkey,
    /// Treasury token account that receives slashes.
    pub treasury: Pubkey,
}

/// The instructions of an effect, signed by `authority` (the vault's owner, fee payer).
pub fn effect_instructions(
    accounts: &StakeAccounts,
    effect: &Effect,
    authority: Pubkey,
) -> Result<Vec<Instruction>, ChainError> {
    Ok(match effect {
        Effect::Release {
            to_owner,
            amount,
            memo,
        } => {
            let owner = Pubkey::parse(to_owner)?;
            let ata = programs::associated_token_address(&owner, &accounts.mint);
            vec![
                programs::create_associated_token_account_idempotent(authority, owner, accounts.mint),
                programs::transfer_checked(
                    accounts.vault,
                    accounts.mint,
                    ata,
                    authority,
                    *amount,
                    accounts.decimals,
                ),
                programs::memo(memo),
            ]
        }
        Effect::Slash { amount, memo } => vec![
            programs::transfer_checked(
                accounts.vault,
                accounts.mint,
                accounts.treasury,
                authority,
                *amount,
                accounts.decimals,
            ),
            programs::memo(memo),
        ],
    })
}

/// Signs an effect with `blockhash` (valid until `last_valid_block_height`).
pub fn sign_effect(
    accounts: &StakeAccounts,
    effect: &Effect,
    authority: &Keypair,
    blockhash: [u8; 32],
    last_valid_block_height: u64,
    signed_at_slot: Option<u64>,
) -> Result<Intent, ChainError> {
    let ixs = effect_instructions(accounts, effect, authority.pubkey())?;
    let signed = tx::sign(&ixs, &[authority], blockhash)?;
    Ok(Intent {
        signature: signed.signature.clone(),
        blockhash: bs58::encode(blockhash).into_string(),
        last_valid_block_height,
        transaction: signed.base64(),
        signed_at_slot,
    })
}

fn rpc_error(query: QueryId, e: &ChainError) -> Observation {
    debug!(error = %e, "stake effect: rpc error; backing off");
    Observation::RpcError {
        query,
        message: e.to_string(),
    }
}

/// Executes one transaction action of an effect and returns the observation to feed
/// back (`None` for the final `MarkSettled` / `MarkFailed`). `signed_at`: the slot the
/// effect's in-flight transaction was signed at ([`Intent::signed_at_slot`]), if known. RPC errors, and a transaction
/// that cannot be built, come back as [`Observation::RpcError`]: the machine backs off.
pub async fn execute(
    rpc: &Rpc,
    accounts: &StakeAccounts,
    authority: &Keypair,
    effect: &Effect,
    action: Action,
    signed_at: Option<u64>,
) -> Option<Observation> {
    match action {
        Action::SignAndPersistIntent { query } => {
            let signed = match rpc.latest_blockhash(Commitment::Confirmed).await {
                Ok((hash, last_valid, slot)) => {
                    sign_effect(accounts, effect, authority, hash, last_valid, Some(slot))
                }
                Err(e) => Err(e),
            };
            Some(match signed {
                Ok(intent) => Observation::Signed { query, intent },
                Err(e) => {
                    if !e.is_transient() {
                        warn!(error = %e, "stake effect cannot be signed");
                    }
                    rpc_error(query, &e)
                }
            })
        }
        Action::Broadcast {
            query,
            signature,
            transaction,
        } => Some(match rpc.send_transaction(&transaction).await {
            Ok(_) => {
                debug!(%signature, "stake effect broadcast");
                Observation::Broadcasted { query }
            }
            Err(e) => rpc_error(query, &e),
        }),
        Action::QuerySignatureStatus {
            query,
            signature,
            min_context_slot,
        } => Some(
            match rpc
                .signature_status_seen_from(&signature, min_context_slot, signed_at)
                .await
            {
                Ok(st) => Observation::SignatureStatus {
                    query,
                    status: st.map(|s| SigStatus {
                        slot: s.slot,
                        commitment: s.commitment,
                        error: s.error,
                    }),
                },
                Err(e) => rpc_error(query, &e),
            },
        ),
        Action::QueryBlockHeight { query } => Some(match rpc.finalized_height_and_slot().await {
            Ok((height, slot)) => Observation::BlockHeight { query, height, slot },
            Err(e) => rpc_error(query, &e),
        }),
        Action::MarkSettled { signature, slot } => {
            info!(%signature, slot, "stake effect final");
            None
        }
        Action::MarkFailed { signature, error } => {
            warn!(%signature, %error, "stake effect transaction failed on chain; it will be re-signed");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tx::Message;

    fn accounts() -> StakeAccounts {
        StakeAccounts {
            mint: Pubkey([3; 32]),
            decimals: 6,
            vault: Pubkey([4; 32]),
            treasury: Pubkey([5; 32]),
        }
    }

    #[test]
    fn release_creates_the_staker_account_then_transfers_from_the_vault() {
        let authority = Keypair::generate();
        let staker = Keypair::generate().pubkey();
        let effect = Effect::Release {
            to_owner: staker.to_string(),
            amount: 42,
            memo: "gpufed:v1:release:0123456789abcdef".into(),
        };
        let ixs = effect_instructions(&accounts(), &effect, authority.pubkey()).unwrap();
        assert_eq!(ixs.len(), 3);
        assert_eq!(ixs[2], programs::memo("gpufed:v1:release:0123456789abcdef"));
        assert_eq!(ixs[0].program, *programs::ATA);
        let ata = programs::associated_token_address(&staker, &accounts().mint);
        assert_eq!(ixs[0].accounts[1].key, ata);
        assert_eq!(
            ixs[1],
            programs::transfer_checked(accounts().vault, accounts().mint, ata, authority.pubkey(), 42, 6)
        );
        let intent = sign_effect(&accounts(), &effect, &authority, [7; 32], 99, None).unwrap();
        assert_eq!(intent.last_valid_block_height, 99);
        assert_eq!(intent.blockhash, bs58::encode([7u8; 32]).into_string());
        // The authority is the only signer (fee payer and vault owner).
        let msg = Message::compile(authority.pubkey(), &ixs, [7; 32]).unwrap();
        assert_eq!(msg.required_signatures, 1);
    }

    #[test]
    fn slash_goes_to_the_treasury_with_the_memo() {
        let authority = Keypair::generate();
        let memo = format!("gpufed:v1:slash:failed-challenge:{}", "ab".repeat(32));
        let effect = Effect::Slash {
            amount: 5,
            memo: memo.clone(),
        };
        let ixs = effect_instructions(&accounts(), &effect, authority.pubkey()).unwrap();
        assert_eq!(
            ixs,
            vec![
                programs::transfer_checked(
                    accounts().vault,
                    accounts().mint,
                    accounts().treasury,
                    authority.pubkey(),
                    5,
                    6
                ),
                programs::memo(&memo),
            ]
        );
        let a = sign_effect(&accounts(), &effect, &authority, [1; 32], 10, None).unwrap();
        let b = sign_effect(&accounts(), &effect, &authority, [1; 32], 10, None).unwrap();
        assert_eq!(a, b, "ed25519 signing is deterministic");
        let c = sign_effect(&accounts(), &effect, &authority, [2; 32], 10, None).unwrap();
        assert_ne!(a.signature, c.signature, "a new blockhash is a new transaction");
        let other_stake = Effect::Slash {
            amount: 5,
            memo: format!("{memo}:0123456789abcdef"),
        };
        let d = sign_effect(&accounts(), &other_stake, &authority, [1; 32], 10, None).unwrap();
        assert_ne!(
            a.signature, d.signature,
            "another Stake's slash is another transaction"
        );
    }

    #[test]
    fn release_to_an_invalid_wallet_is_refused() {
        let effect = Effect::Release {
            to_owner: "not-a-key".into(),
            amount: 1,
            memo: String::new(),
        };
        assert!(matches!(
            effect_instructions(&accounts(), &effect, Pubkey([1; 32])),
            Err(ChainError::InvalidKey(_))
        ));
    }
}
