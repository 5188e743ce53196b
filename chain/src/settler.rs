//! The settlement driver: runs the pure journal's actions against a Solana RPC node.
//!
//! The one rule that makes settlement exactly-once: **persist the journal after every
//! mutating call, before executing the actions that call returned.** A crash anywhere
//! therefore leaves either nothing sent, or a persisted intent whose signature the next
//! process resolves (`Journal::restarted`) before anything is re-signed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use gpufed_settlement::machine::{Intent, SigStatus};
use gpufed_settlement::{
    Action, AppendOutcome, Commitment, Journal, MachineConfig, Observation, PlanConfig, Shortfall,
    UsageRecord,
};
use tracing::{debug, info, warn};

use crate::accounts::SettlementAccounts;
use crate::error::ChainError;
use crate::history::{Closed, HistoryGate};
use crate::pubkey::Keypair;
use crate::rpc::Rpc;
use crate::tx;

/// Where the journal is kept durably (the hub API server in the operator; a file in tools).
pub trait JournalStore: Send {
    /// The stored journal, `None` when there is none yet.
    fn load(&mut self) -> impl Future<Output = Result<Option<Journal>, ChainError>> + Send;
    /// Stores the journal; returns only once it is durable.
    fn save(&mut self, journal: &Journal) -> impl Future<Output = Result<(), ChainError>> + Send;
}

/// Points where tests inject a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Before fetching a blockhash and signing.
    BeforeSign,
    /// Signed, intent not yet persisted.
    AfterSignBeforePersist,
    /// Intent persisted, not yet sent.
    AfterPersistBeforeSend,
    /// Sent, acknowledgement not yet recorded.
    AfterSend,
    /// A signature status read, not yet recorded.
    BeforeRecordStatus,
}

/// Settlement parameters.
#[derive(Debug, Clone, Default)]
pub struct SettlerConfig {
    /// Batch planning.
    pub plan: PlanConfig,
    /// Transaction machine.
    pub machine: MachineConfig,
    /// Accounts.
    pub accounts: SettlementAccounts,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Batches planned this round.
    pub planned: Vec<u64>,
    /// Batches that settled (final, succeeded) this round, with their signatures.
    pub settled: Vec<(u64, String)>,
    /// Batches whose transaction failed on chain this round (records re-batched).
    pub failed: Vec<u64>,
    /// RPC errors seen (each only delays its batch).
    pub rpc_errors: usize,
    /// Tenants whose escrow cannot cover their share, or that have no escrow.
    pub shortfalls: Vec<Shortfall>,
    /// Providers with records waiting that have no payout account (deleted, or their
    /// wallet invalid): their records are not batched until they have one.
    pub unpaid: Vec<String>,
    /// Records not yet settled after the round.
    pub backlog: usize,
    /// Why the round did nothing but count the backlog: the RPC node keeps no transaction
    /// history, or has not said yet whether it does ([`crate::history`]).
    pub paused: Option<String>,
}

type FaultHook = Box<dyn FnMut(FaultPoint) -> bool + Send + Sync>;

/// Drives one journal.
pub struct Settler<S: JournalStore> {
    rpc: Rpc,
    authority: Keypair,
    store: S,
    journal: Journal,
    cfg: SettlerConfig,
    restarted: bool,
    history: HistoryGate,
    fault: Option<FaultHook>,
    /// Records refused by [`Settler::append`] so far.
    pub refused: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<S: JournalStore> Settler<S> {
    /// Loads the journal (or starts an empty one). The first round resolves every batch
    /// that was in flight when the previous process stopped.
    pub async fn open(
        rpc: Rpc,
        authority: Keypair,
        mut store: S,
        cfg: SettlerConfig,
    ) -> Result<Self, ChainError> {
        let journal = store.load().await?.unwrap_or_default();
        Ok(Self {
            rpc,
            authority,
            store,
            journal,
            cfg,
            restarted: false,
            history: HistoryGate::default(),
            fault: None,
            refused: 0,
        })
    }

    /// Test hook: return `true` from `hook` to crash at that point.
    pub fn inject_faults(&mut self, hook: impl FnMut(FaultPoint) -> bool + Send + Sync + 'static) {
        self.fault = Some(Box::new(hook));
    }

    fn check(&mut self, p: FaultPoint) -> Result<(), ChainError> {
        let crash = self.fault.as_mut().is_some_and(|h| h(p));
        if crash {
            Err(ChainError::InjectedCrash(p))
        } else {
            Ok(())
        }
    }

    /// The journal (read-only).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The configuration.
    pub fn config(&self) -> &SettlerConfig {
        &self.cfg
    }

    /// Creates `wallet`'s payout token account for the settlement mint if it is missing
    /// (the authority pays the rent once).
    pub async fn ensure_payout_account(&self, wallet: &crate::pubkey::Pubkey) -> Result<(), ChainError> {
        crate::setup::ensure_associated_account(&self.rpc, &self.authority, wallet, &self.cfg.accounts.mint)
            .await
            .map(|_| ())
    }

    /// The authority's public key.
    pub fn authority(&self) -> crate::pubkey::Pubkey {
        self.authority.pubkey()
    }

    /// The RPC endpoint.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The store (e.g. to hand it to the next process in a crash test).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Replaces the accounts (tenants and providers come and go).
    pub fn set_accounts(&mut self, accounts: SettlementAccounts) {
        self.cfg.accounts = accounts;
    }

    /// Appends metered records and persists; only after this returns may metering treat
    /// them as recorded. Duplicates (same id, same content) are no-ops; a record that
    /// conflicts with a journaled one, or is invalid, is refused and logged (metering must
    /// be deterministic) without blocking the others.
    pub async fn append(&mut self, records: Vec<UsageRecord>) -> Result<usize, ChainError> {
        let mut inserted = 0;
        for r in records {
            let id = r.id;
            match self.journal.append(r) {
                Ok(AppendOutcome::Inserted) => inserted += 1,
                Ok(AppendOutcome::Duplicate) => {}
                Err(e) => {
                    self.refused += 1;
                    warn!(record = %id.to_hex(), error = %e, "usage record refused by the journal");
                }
            }
        }
        if inserted > 0 {
            self.store.save(&self.journal).await?;
        }
        Ok(inserted)
    }

    /// Keeps the journal's settled history within `keep` and forgets the bookkeeping of
    /// the jobs in `deleted` that nothing is left of ([`gpufed_settlement::retention`]),
    /// persisting when either changed anything; returns the records pruned and the jobs
    /// forgotten. `deleted` must hold only jobs known to be gone.
    pub async fn retain(
        &mut self,
        keep: &gpufed_settlement::Retention,
        deleted: &BTreeSet<String>,
    ) -> Result<(usize, usize), ChainError> {
        let pruned = self.journal.prune_beyond(keep);
        let records: usize = pruned.iter().map(|b| b.records.len()).sum();
        let forgotten = self.journal.forget_jobs(deleted.iter().map(String::as_str));
        if !pruned.is_empty() || forgotten > 0 {
            self.store.save(&self.journal).await?;
            info!(
                batches = pruned.len(),
                records,
                jobs = forgotten,
                "settled history pruned from the journal"
            );
        }
        Ok((records, forgotten))
    }

    /// What the authority may spend (finalized) from the escrows of tenants with unsettled
    /// records ([`crate::escrow::spendable`]); tenants without an escrow account count as
    /// 0, so they are held and reported.
    async fn escrow_balances(&self, report: &mut RoundReport) -> BTreeMap<String, u64> {
        let tenants: BTreeSet<String> = self.journal.pending_iter().map(|r| r.tenant.clone()).collect();
        let mut out = BTreeMap::new();
        for t in tenants {
            let bal = match self.cfg.accounts.escrows.get(&t) {
                Some(acct) => match self
                    .rpc
                    .escrow_spendable(
                        acct,
                        &self.authority.pubkey(),
                        &self.cfg.accounts.mint,
                        Commitment::Finalized,
                    )
                    .await
                {
                    Ok(b) => b.unwrap_or(0),
                    // Not a token account: nothing to spend, reported short.
                    Err(e @ ChainError::Decode { .. }) => {
                        warn!(tenant = %t, error = %e, "escrow is not a usable token account");
                        0
                    }
                    Err(e) => {
                        // Unknown balance: don't settle this tenant now, but don't report it short.
                        debug!(tenant = %t, error = %e, "escrow balance unavailable");
                        report.rpc_errors += 1;
                        continue;
                    }
                },
                None => 0,
            };
            out.insert(t, bal);
        }
        out
    }

    /// One round: plan what is covered, then run every due action to quiescence.
    pub async fn round(&mut self) -> Result<RoundReport, ChainError> {
        let mut report = RoundReport::default();
        // Nothing is signed, sent or concluded (the restart's resolution included) before
        // the node is known to keep the history that proves a transaction dead.
        if let Err(closed) = self.history.check(&self.rpc, &self.authority.pubkey()).await {
            if matches!(closed, Closed::Unknown(_)) {
                report.rpc_errors += 1;
            }
            report.paused = Some(closed.to_string());
            report.backlog = self.journal.backlog_records();
            return Ok(report);
        }
        let now = now_ms();
        let balances = self.escrow_balances(&mut report).await;
        let pending_tenants: BTreeSet<String> =
            self.journal.pending_iter().map(|r| r.tenant.clone()).collect();
        // Tenants whose balance could not be read are held silently this round.
        let mut known = balances.clone();
        for t in pending_tenants.difference(&balances.keys().cloned().collect()) {
            known.insert(t.clone(), 0);
        }
        // Providers without a payout account: their records wait unplanned (a batch paying
        // them could not be signed, and would hold up every batch after it).
        let unpaid: BTreeSet<String> = self
            .journal
            .pending_iter()
            .map(|r| &r.provider)
            .filter(|p| self.cfg.accounts.payout_account(p).is_none())
            .cloned()
            .collect();
        let (planned, shortfalls) = self
            .journal
            .plan_covered_batch(&self.cfg.plan, &known, &unpaid, now);
        report.unpaid = unpaid.into_iter().collect();
        report.shortfalls = shortfalls
            .into_iter()
            .filter(|s| balances.contains_key(&s.tenant))
            .collect();
        if let Some(id) = planned {
            info!(batch = id, "planned settlement batch");
            report.planned.push(id);
        }
        let actions = if self.restarted {
            self.journal.tick(now, &self.cfg.machine)
        } else {
            self.restarted = true;
            self.journal.restarted(now, &self.cfg.machine)
        };
        // Planning and issuing queries are the only changes a quiet round makes; an idle
        // round writes nothing (the store is the hub's API server).
        if planned.is_some() || !actions.is_empty() {
            self.store.save(&self.journal).await?;
        }
        let mut queue: VecDeque<(u64, Action)> = actions.into();
        while let Some((batch, action)) = queue.pop_front() {
            let next = self.execute(batch, action, &mut report).await?;
            queue.extend(next.into_iter().map(|a| (batch, a)));
        }
        report.backlog = self.journal.backlog_records();
        Ok(report)
    }

    async fn feed(&mut self, batch: u64, obs: Observation) -> Result<Vec<Action>, ChainError> {
        let actions = self.journal.step(batch, now_ms(), obs, &self.cfg.machine)?;
        self.store.save(&self.journal).await?;
        Ok(actions)
    }

    async fn execute(
        &mut self,
        batch: u64,
        action: Action,
        report: &mut RoundReport,
    ) -> Result<Vec<Action>, ChainError> {
        match action {
            Action::SignAndPersistIntent { query } => {
                self.check(FaultPoint::BeforeSign)?;
                let obs = match self.sign(batch).await {
                    Ok(intent) => Observation::Signed { query, intent },
                    Err(e) if e.is_transient() => self.rpc_error(query, &e, report),
                    // A batch planned before one of its accounts went (a provider deleted,
                    // an escrow annotation removed): it backs off like an RPC error and is
                    // signed once the account is back; ending the round would stop every
                    // other batch, and metering, with it.
                    Err(e @ ChainError::Config(_)) => {
                        warn!(batch, error = %e, "batch cannot be signed yet; it backs off");
                        self.rpc_error(query, &e, report)
                    }
                    Err(e) => return Err(e),
                };
                let actions = self.journal.step(batch, now_ms(), obs, &self.cfg.machine)?;
                self.check(FaultPoint::AfterSignBeforePersist)?;
                self.store.save(&self.journal).await?;
                Ok(actions)
            }
            Action::Broadcast {
                query,
                signature,
                transaction,
            } => {
                self.check(FaultPoint::AfterPersistBeforeSend)?;
                let obs = match self.rpc.send_transaction(&transaction).await {
                    Ok(_) => {
                        debug!(batch, %signature, "broadcast");
                        Observation::Broadcasted { query }
                    }
                    Err(e) => self.rpc_error(query, &e, report),
                };
                self.check(FaultPoint::AfterSend)?;
                self.feed(batch, obs).await
            }
            Action::QuerySignatureStatus {
                query,
                signature,
                min_context_slot,
            } => {
                let signed_at = self.journal.batch(batch).and_then(|b| b.tx.signed_at_slot());
                let obs = match self
                    .rpc
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
                    Err(e) => self.rpc_error(query, &e, report),
                };
                self.check(FaultPoint::BeforeRecordStatus)?;
                self.feed(batch, obs).await
            }
            Action::QueryBlockHeight { query } => {
                let obs = match self.rpc.finalized_height_and_slot().await {
                    Ok((height, slot)) => Observation::BlockHeight { query, height, slot },
                    Err(e) => self.rpc_error(query, &e, report),
                };
                self.feed(batch, obs).await
            }
            Action::MarkSettled { signature, slot } => {
                info!(batch, %signature, slot, "settlement batch final");
                report.settled.push((batch, signature));
                Ok(Vec::new())
            }
            Action::MarkFailed { signature, error } => {
                warn!(batch, %signature, %error, "settlement transaction failed on chain; records re-batched");
                report.failed.push(batch);
                Ok(Vec::new())
            }
        }
    }

    fn rpc_error(
        &self,
        query: gpufed_settlement::QueryId,
        e: &ChainError,
        report: &mut RoundReport,
    ) -> Observation {
        report.rpc_errors += 1;
        debug!(error = %e, "rpc error; batch backs off");
        Observation::RpcError {
            query,
            message: e.to_string(),
        }
    }

    async fn sign(&self, batch: u64) -> Result<Intent, ChainError> {
        let b = self.journal.batch(batch).ok_or(ChainError::Journal(
            gpufed_settlement::JournalError::UnknownBatch(batch),
        ))?;
        let ixs = self.cfg.accounts.batch_instructions(b, self.authority.pubkey())?;
        let (blockhash, last_valid, slot) = self.rpc.latest_blockhash(Commitment::Confirmed).await?;
        let signed = tx::sign(&ixs, &[&self.authority], blockhash)?;
        Ok(Intent {
            signature: signed.signature.clone(),
            blockhash: bs58::encode(blockhash).into_string(),
            last_valid_block_height: last_valid,
            transaction: signed.base64(),
            signed_at_slot: Some(slot),
        })
    }

    /// Runs rounds until the backlog is empty and nothing is in flight, or `timeout`.
    pub async fn drain(&mut self, timeout: Duration, pause: Duration) -> Result<RoundReport, ChainError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut total = RoundReport::default();
        loop {
            let r = self.round().await?;
            total.planned.extend(r.planned);
            total.settled.extend(r.settled);
            total.failed.extend(r.failed);
            total.rpc_errors += r.rpc_errors;
            total.shortfalls = r.shortfalls;
            total.backlog = r.backlog;
            if r.backlog == 0 && self.journal.in_flight().count() == 0 {
                return Ok(total);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(total);
            }
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "settler_tests.rs"]
mod tests;
