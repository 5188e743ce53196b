//! Which token accounts a batch moves money between, and the batch transaction itself.

use std::collections::BTreeMap;

use gpufed_settlement::Batch;

use crate::error::ChainError;
use crate::programs;
use crate::pubkey::Pubkey;
use crate::tx::Instruction;

/// The token and the accounts of tenants and providers.
#[derive(Debug, Clone, Default)]
pub struct SettlementAccounts {
    /// Mint of the settlement token.
    pub mint: Pubkey,
    /// Its decimals (TransferChecked verifies them on chain).
    pub decimals: u8,
    /// Tenant (namespace) → escrow token account, delegated to the settlement authority.
    pub escrows: BTreeMap<String, Pubkey>,
    /// Provider → payout *wallet*; the payout token account is its associated token account.
    pub payout_wallets: BTreeMap<String, Pubkey>,
    /// Priority fee, micro-lamports per compute unit (0 = none).
    pub compute_unit_price: u64,
}

impl SettlementAccounts {
    /// The payout token account of a provider.
    pub fn payout_account(&self, provider: &str) -> Option<Pubkey> {
        self.payout_wallets
            .get(provider)
            .map(|w| programs::associated_token_address(w, &self.mint))
    }

    /// The batch transaction's instructions: compute budget, one `TransferChecked` per
    /// (tenant escrow → provider payout) aggregate signed by the authority as delegate, and
    /// the memo anchoring the batch's Merkle root. Record and payment land together.
    pub fn batch_instructions(
        &self,
        batch: &Batch,
        authority: Pubkey,
    ) -> Result<Vec<Instruction>, ChainError> {
        let transfers = batch.transfers.len() as u32;
        // ≈ 6k CU per TransferChecked, the memo ≈ 30k for ~100 bytes; generous headroom.
        let mut ixs = vec![
            programs::set_compute_unit_limit(60_000 + 12_000 * transfers),
            programs::set_compute_unit_price(self.compute_unit_price),
        ];
        for t in &batch.transfers {
            let escrow = self
                .escrows
                .get(&t.tenant)
                .ok_or_else(|| ChainError::Config(format!("tenant {:?} has no escrow account", t.tenant)))?;
            let payout = self.payout_account(&t.provider).ok_or_else(|| {
                ChainError::Config(format!("provider {:?} has no payout wallet", t.provider))
            })?;
            ixs.push(programs::transfer_checked(
                *escrow,
                self.mint,
                payout,
                authority,
                t.amount,
                self.decimals,
            ));
        }
        ixs.push(programs::memo(&batch.memo));
        Ok(ixs)
    }
}
