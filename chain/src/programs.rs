//! Instructions of the programs gpufed uses, encoded from their published layouts:
//! System, SPL Token, Associated Token Account, SPL Memo and Compute Budget.

use std::sync::LazyLock;

use crate::pubkey::Pubkey;
use crate::tx::{AccountMeta, Instruction};

/// The system program.
pub static SYSTEM: LazyLock<Pubkey> = LazyLock::new(|| Pubkey([0; 32]));
/// SPL Token.
pub static TOKEN: LazyLock<Pubkey> =
    LazyLock::new(|| Pubkey::from_static("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"));
/// SPL Associated Token Account.
pub static ATA: LazyLock<Pubkey> =
    LazyLock::new(|| Pubkey::from_static("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"));
/// SPL Memo (v3: signers optional, UTF-8 data).
pub static MEMO: LazyLock<Pubkey> =
    LazyLock::new(|| Pubkey::from_static("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"));
/// Compute budget.
pub static COMPUTE_BUDGET: LazyLock<Pubkey> =
    LazyLock::new(|| Pubkey::from_static("ComputeBudget111111111111111111111111111111"));

/// Size of an SPL Token mint account.
pub const MINT_LEN: u64 = 82;
/// Size of an SPL Token account.
pub const TOKEN_ACCOUNT_LEN: u64 = 165;

/// System: create `new` with `space` bytes owned by `owner`, funded by `from`.
pub fn create_account(from: Pubkey, new: Pubkey, lamports: u64, space: u64, owner: Pubkey) -> Instruction {
    let mut data = 0u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    data.extend_from_slice(&space.to_le_bytes());
    data.extend_from_slice(&owner.0);
    Instruction {
        program: *SYSTEM,
        accounts: vec![
            AccountMeta::writable_signer(from),
            AccountMeta::writable_signer(new),
        ],
        data,
    }
}

/// System: move lamports.
pub fn transfer_lamports(from: Pubkey, to: Pubkey, lamports: u64) -> Instruction {
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    Instruction {
        program: *SYSTEM,
        accounts: vec![AccountMeta::writable_signer(from), AccountMeta::writable(to)],
        data,
    }
}

fn amount_decimals(tag: u8, amount: u64, decimals: u8) -> Vec<u8> {
    let mut d = vec![tag];
    d.extend_from_slice(&amount.to_le_bytes());
    d.push(decimals);
    d
}

/// Token `InitializeMint2` (tag 20): no rent sysvar, no freeze authority.
pub fn initialize_mint2(mint: Pubkey, decimals: u8, authority: Pubkey) -> Instruction {
    let mut data = vec![20, decimals];
    data.extend_from_slice(&authority.0);
    data.push(0); // COption::None for the freeze authority
    Instruction {
        program: *TOKEN,
        accounts: vec![AccountMeta::writable(mint)],
        data,
    }
}

/// Token `InitializeAccount3` (tag 18).
pub fn initialize_account3(account: Pubkey, mint: Pubkey, owner: Pubkey) -> Instruction {
    let mut data = vec![18];
    data.extend_from_slice(&owner.0);
    Instruction {
        program: *TOKEN,
        accounts: vec![AccountMeta::writable(account), AccountMeta::readonly(mint)],
        data,
    }
}

/// Token `MintToChecked` (tag 14).
pub fn mint_to_checked(
    mint: Pubkey,
    to: Pubkey,
    authority: Pubkey,
    amount: u64,
    decimals: u8,
) -> Instruction {
    Instruction {
        program: *TOKEN,
        accounts: vec![
            AccountMeta::writable(mint),
            AccountMeta::writable(to),
            AccountMeta::signer(authority),
        ],
        data: amount_decimals(14, amount, decimals),
    }
}

/// Token `ApproveChecked` (tag 13): `owner` lets `delegate` move up to `amount` from `source`.
pub fn approve_checked(
    source: Pubkey,
    mint: Pubkey,
    delegate: Pubkey,
    owner: Pubkey,
    amount: u64,
    decimals: u8,
) -> Instruction {
    Instruction {
        program: *TOKEN,
        accounts: vec![
            AccountMeta::writable(source),
            AccountMeta::readonly(mint),
            AccountMeta::readonly(delegate),
            AccountMeta::signer(owner),
        ],
        data: amount_decimals(13, amount, decimals),
    }
}

/// Token `TransferChecked` (tag 12); `authority` is the owner or the delegate of `source`.
pub fn transfer_checked(
    source: Pubkey,
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    amount: u64,
    decimals: u8,
) -> Instruction {
    Instruction {
        program: *TOKEN,
        accounts: vec![
            AccountMeta::writable(source),
            AccountMeta::readonly(mint),
            AccountMeta::writable(destination),
            AccountMeta::signer(authority),
        ],
        data: amount_decimals(12, amount, decimals),
    }
}

/// The associated token account of `wallet` for `mint`.
pub fn associated_token_address(wallet: &Pubkey, mint: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[&wallet.0, &TOKEN.0, &mint.0], &ATA)
        .map(|(k, _)| k)
        .unwrap_or_default()
}

/// ATA `CreateIdempotent` (tag 1): creates `wallet`'s token account for `mint` if absent.
pub fn create_associated_token_account_idempotent(
    payer: Pubkey,
    wallet: Pubkey,
    mint: Pubkey,
) -> Instruction {
    Instruction {
        program: *ATA,
        accounts: vec![
            AccountMeta::writable_signer(payer),
            AccountMeta::writable(associated_token_address(&wallet, &mint)),
            AccountMeta::readonly(wallet),
            AccountMeta::readonly(mint),
            AccountMeta::readonly(*SYSTEM),
            AccountMeta::readonly(*TOKEN),
        ],
        data: vec![1],
    }
}

/// SPL Memo with no signer accounts (the transaction's signature attributes it).
pub fn memo(text: &str) -> Instruction {
    Instruction {
        program: *MEMO,
        accounts: Vec::new(),
        data: text.as_bytes().to_vec(),
    }
}

/// Compute budget: `SetComputeUnitLimit` (tag 2).
pub fn set_compute_unit_limit(units: u32) -> Instruction {
    let mut data = vec![2];
    data.extend_from_slice(&units.to_le_bytes());
    Instruction {
        program: *COMPUTE_BUDGET,
        accounts: Vec::new(),
        data,
    }
}

/// Compute budget: `SetComputeUnitPrice` (tag 3), micro-lamports per unit.
pub fn set_compute_unit_price(micro_lamports: u64) -> Instruction {
    let mut data = vec![3];
    data.extend_from_slice(&micro_lamports.to_le_bytes());
    Instruction {
        program: *COMPUTE_BUDGET,
        accounts: Vec::new(),
        data,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_the_documented_sizes() {
        let k = Pubkey([1; 32]);
        assert_eq!(transfer_checked(k, k, k, k, 5, 6).data.len(), 10);
        assert_eq!(transfer_checked(k, k, k, k, 5, 6).data[0], 12);
        assert_eq!(&transfer_checked(k, k, k, k, 0x0102, 6).data[1..3], &[2, 1]);
        assert_eq!(create_account(k, k, 1, 2, k).data.len(), 52);
        assert_eq!(initialize_mint2(k, 6, k).data.len(), 35);
        assert_eq!(set_compute_unit_limit(1).data.len(), 5);
        assert_eq!(set_compute_unit_price(1).data.len(), 9);
        assert_eq!(SYSTEM.to_string(), "11111111111111111111111111111111");
        assert_eq!(
            COMPUTE_BUDGET.to_string(),
            "ComputeBudget111111111111111111111111111111"
        );
    }

    #[test]
    fn batch_like_transaction_matches_the_settlement_size_model() {
        // The pure planner's TxSizeModel must agree with the bytes we really produce.
        use gpufed_settlement::TxSizeModel;
        let authority = crate::pubkey::Keypair::generate();
        let mint = Pubkey([3; 32]);
        let memo_text = "gpufed:v1:18446744073709551615:".to_string() + &"a".repeat(64) + ":4096";
        for n in [1usize, 5, 10] {
            let mut ixs = vec![set_compute_unit_limit(200_000), set_compute_unit_price(1)];
            for i in 0..n {
                let (src, dst) = (Pubkey([10 + i as u8; 32]), Pubkey([100 + i as u8; 32]));
                ixs.push(transfer_checked(src, mint, dst, authority.pubkey(), 1, 6));
            }
            ixs.push(memo(&memo_text));
            let tx = crate::tx::sign(&ixs, &[&authority], [0; 32]).unwrap();
            let model = TxSizeModel::default();
            assert_eq!(
                tx.wire.len(),
                model.size(2 * n, n, memo_text.len()),
                "{n} transfers"
            );
        }
    }
}
