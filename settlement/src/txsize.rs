//! A conservative size model of one legacy Solana transaction carrying a batch: one
//! signature, the static accounts, one SPL Token `TransferChecked` per (tenant, provider)
//! pair, one SPL Memo, and optionally two Compute Budget instructions.
//!
//! ```text
//! signatures      compact-u16(n) + 64·n
//! header          3
//! account keys    compact-u16(k) + 32·k   k = static + distinct escrows + distinct payouts
//! blockhash       32
//! instructions    compact-u16(m) + Σ (1 + compact-u16(accounts) + accounts
//!                                         + compact-u16(data) + data)
//! ```
//! With the defaults a transfer that brings a new tenant escrow **and** a new provider
//! payout costs 32 + 32 + 17 = 81 bytes, and the fixed part is 401 bytes (with a 116-byte
//! memo), so at least 10 fully distinct transfers always fit in 1232 − 16 bytes; one
//! tenant paying many providers fits 15 (32 + 17 bytes each); transfers between accounts
//! already present cost only 17 bytes.

use serde::{Deserialize, Serialize};

/// Size-model parameters (all configurable; defaults are the conservative values above).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TxSizeModel {
    /// Largest serialized transaction (Solana's packet data size).
    pub packet_limit: usize,
    /// Bytes kept free below the limit.
    pub safety_margin: usize,
    /// Signatures (the settlement authority pays and is the escrow delegate).
    pub signatures: usize,
    /// Accounts present in every transaction: authority, token program, memo program,
    /// mint (+ compute budget program when `compute_budget` is set).
    pub static_accounts: usize,
    /// Accounts of one transfer instruction (TransferChecked: source, mint, dest, authority).
    pub transfer_accounts: usize,
    /// Data bytes of one transfer instruction (tag + u64 amount + u8 decimals).
    pub transfer_data: usize,
    /// Whether SetComputeUnitLimit (5 data bytes) and SetComputeUnitPrice (9) are included.
    pub compute_budget: bool,
    /// Most account keys one transaction may lock.
    pub max_account_keys: usize,
}

impl Default for TxSizeModel {
    fn default() -> Self {
        Self {
            packet_limit: 1232,
            safety_margin: 16,
            signatures: 1,
            static_accounts: 4,
            transfer_accounts: 4,
            transfer_data: 10,
            compute_budget: true,
            max_account_keys: 64,
        }
    }
}

/// Length of a compact-u16 encoding.
pub fn compact_u16_len(v: usize) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        _ => 3,
    }
}

fn ix_len(accounts: usize, data: usize) -> usize {
    1 + compact_u16_len(accounts) + accounts + compact_u16_len(data) + data
}

impl TxSizeModel {
    /// Account keys for `dynamic` distinct escrow/payout accounts.
    pub fn account_keys(&self, dynamic: usize) -> usize {
        self.static_accounts + usize::from(self.compute_budget) + dynamic
    }

    /// Serialized size of a transaction with `dynamic` distinct escrow/payout accounts,
    /// `transfers` transfer instructions and a memo of `memo_len` bytes.
    pub fn size(&self, dynamic: usize, transfers: usize, memo_len: usize) -> usize {
        let keys = self.account_keys(dynamic);
        let cb_ixs = if self.compute_budget { 2 } else { 0 };
        let ixs = transfers + 1 + cb_ixs;
        let cb = if self.compute_budget {
            ix_len(0, 5) + ix_len(0, 9)
        } else {
            0
        };
        compact_u16_len(self.signatures)
            + 64 * self.signatures
            + 3
            + compact_u16_len(keys)
            + 32 * keys
            + 32
            + compact_u16_len(ixs)
            + transfers * ix_len(self.transfer_accounts, self.transfer_data)
            + ix_len(0, memo_len)
            + cb
    }

    /// True when such a transaction fits the packet limit minus the margin and the
    /// account-lock limit.
    pub fn fits(&self, dynamic: usize, transfers: usize, memo_len: usize) -> bool {
        self.account_keys(dynamic) <= self.max_account_keys
            && self.size(dynamic, transfers, memo_len) + self.safety_margin <= self.packet_limit
    }

    /// Fully distinct (new escrow and new payout) transfers that always fit.
    pub fn guaranteed_transfers(&self, memo_len: usize) -> usize {
        let mut t = 0;
        while self.fits(2 * (t + 1), t + 1, memo_len) {
            t += 1;
        }
        t
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_figures() {
        let m = TxSizeModel::default();
        assert_eq!(m.size(0, 0, 116), 401);
        assert_eq!(m.size(2, 1, 116) - m.size(0, 0, 116), 81);
        assert_eq!(m.size(2, 2, 116) - m.size(1, 1, 116), 49);
        assert_eq!(m.guaranteed_transfers(116), 10);
        assert!(m.fits(20, 10, 116));
        assert!(!m.fits(22, 11, 116));
        // A single tenant paying many providers: 32 + 17 bytes each.
        let mut n = 0;
        while m.fits(1 + n + 1, n + 1, 116) {
            n += 1;
        }
        assert_eq!(n, 15);
        assert_eq!(compact_u16_len(127), 1);
        assert_eq!(compact_u16_len(128), 2);
        assert_eq!(compact_u16_len(0x4000), 3);
    }

    #[test]
    fn account_limit_binds() {
        let m = TxSizeModel {
            packet_limit: 100_000,
            max_account_keys: 10,
            ..TxSizeModel::default()
        };
        assert!(m.fits(5, 5, 10));
        assert!(!m.fits(6, 5, 10));
    }
}
