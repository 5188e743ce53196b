//! A pure, deterministic model of the chain and its RPC node, for tests only.

use std::collections::BTreeMap;

use gpufed_settlement::machine::{Commitment, SigStatus};
use gpufed_settlement::{Transfer, hash::sha256};
use serde::{Deserialize, Serialize};

use crate::common::Rng;

/// Blocks a blockhash stays valid (Solana: 150).
pub const VALIDITY: u64 = 150;
/// Blocks until finalized (Solana: ~32).
pub const FINALITY: u64 = 32;

/// The signed "wire transaction" of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTx {
    pub batch: u64,
    pub memo: String,
    pub transfers: Vec<Transfer>,
    pub blockhash: String,
    pub last_valid_block_height: u64,
}

impl SimTx {
    /// Deterministic like ed25519: same message, same signature.
    pub fn signature(&self) -> String {
        sha256(serde_json::to_string(self).unwrap().as_bytes()).to_hex()
    }
}

#[derive(Debug, Clone)]
pub struct Landed {
    pub height: u64,
    pub tx: SimTx,
    pub error: Option<String>,
}

/// What is wrong with the world right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weather {
    Fine,
    /// The RPC endpoint errors/times out; the chain goes on.
    RpcDown,
    /// The chain halts: no blocks; RPC answers.
    Halted,
}

pub struct Chain {
    pub height: u64,
    pub landed: BTreeMap<String, Landed>,
    pub mempool: Vec<SimTx>,
    pub balances: BTreeMap<String, u64>,
    pub weather: Weather,
    /// Percentage of broadcasts silently dropped.
    pub drop_pct: u64,
    /// Percentage of successful sends reported as timeouts.
    pub ack_loss_pct: u64,
    /// Percentage of status queries answered by a node of the RPC pool `lag` blocks
    /// behind (it knows nothing that landed since).
    pub lagging_pct: u64,
    pub lag: u64,
    pub rng: Rng,
}

pub fn escrow(tenant: &str) -> String {
    format!("escrow:{tenant}")
}
pub fn payout(provider: &str) -> String {
    format!("payout:{provider}")
}

impl Chain {
    pub fn new(seed: u64) -> Self {
        Self {
            height: 1000,
            landed: BTreeMap::new(),
            mempool: Vec::new(),
            balances: BTreeMap::new(),
            weather: Weather::Fine,
            drop_pct: 0,
            ack_loss_pct: 0,
            lagging_pct: 0,
            lag: 0,
            rng: Rng(seed),
        }
    }

    pub fn total_tokens(&self) -> u64 {
        self.balances.values().sum()
    }

    /// Produces one block (unless halted): mempool transactions land atomically.
    pub fn advance(&mut self) {
        if self.weather == Weather::Halted {
            return;
        }
        self.height += 1;
        let pool = std::mem::take(&mut self.mempool);
        for tx in pool {
            if tx.last_valid_block_height < self.height {
                continue; // expired: can never land
            }
            let sig = tx.signature();
            if self.landed.contains_key(&sig) {
                continue; // same signature: processed once
            }
            if self.rng.chance(30) {
                self.mempool.push(tx); // not this block
                continue;
            }
            let error = self.apply(&tx);
            self.landed.insert(
                sig,
                Landed {
                    height: self.height,
                    tx,
                    error,
                },
            );
        }
    }

    fn apply(&mut self, tx: &SimTx) -> Option<String> {
        let mut need: BTreeMap<String, u64> = BTreeMap::new();
        for t in &tx.transfers {
            *need.entry(escrow(&t.tenant)).or_default() += t.amount;
        }
        for (acct, amount) in &need {
            if self.balances.get(acct).copied().unwrap_or(0) < *amount {
                return Some(format!("insufficient funds in {acct}"));
            }
        }
        for t in &tx.transfers {
            *self.balances.entry(escrow(&t.tenant)).or_default() -= t.amount;
            *self.balances.entry(payout(&t.provider)).or_default() += t.amount;
        }
        None
    }

    fn rpc(&mut self) -> Result<(), String> {
        if self.weather == Weather::RpcDown {
            Err("connection refused".into())
        } else {
            Ok(())
        }
    }

    pub fn latest_blockhash(&mut self) -> Result<(String, u64), String> {
        self.rpc()?;
        Ok((format!("bh-{}", self.height), self.height + VALIDITY))
    }

    /// Ok(()) = the node acknowledged; the transaction may still be dropped.
    pub fn send(&mut self, tx: SimTx) -> Result<(), String> {
        self.rpc()?;
        if !self.rng.chance(self.drop_pct) {
            self.mempool.push(tx);
        }
        if self.rng.chance(self.ack_loss_pct) {
            return Err("timeout".into());
        }
        Ok(())
    }

    /// The status, and the slot (here: height) of the node that answered.
    pub fn status(&mut self, sig: &str) -> Result<(Option<SigStatus>, u64), String> {
        self.rpc()?;
        let seen = if self.lagging_pct > 0 && self.rng.chance(self.lagging_pct) {
            self.height.saturating_sub(self.lag)
        } else {
            self.height
        };
        let status = self.landed.get(sig).filter(|l| l.height <= seen).map(|l| {
            let age = seen - l.height;
            let commitment = if age >= FINALITY {
                Commitment::Finalized
            } else if age >= 1 {
                Commitment::Confirmed
            } else {
                Commitment::Processed
            };
            SigStatus {
                slot: l.height,
                commitment,
                error: l.error.clone(),
            }
        });
        Ok((status, seen))
    }

    /// The finalized height and the slot it was read at (one block a slot here).
    pub fn finalized_height(&mut self) -> Result<(u64, u64), String> {
        self.rpc()?;
        let h = self.height.saturating_sub(FINALITY);
        Ok((h, h))
    }

    /// Successful transactions (finalized or not).
    pub fn successes(&self) -> impl Iterator<Item = (&String, &Landed)> {
        self.landed.iter().filter(|(_, l)| l.error.is_none())
    }
}
