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
use gpufed_settlement::{Action, AppendOutcome, Commitment, Journal, Observation, UsageRecord};
use tracing::{debug, info, warn};

use crate::accounts::SettlementAccounts;
use crate::error::ChainError;
use crate::history::{Closed, HistoryGate};
use crate::pubkey::Keypair;
use crate::rpc::Rpc;
use crate::tx;

pub use types::{FaultPoint, RoundReport, SettlerConfig};

/// Where the journal is kept durably (the hub API server in the operator; a file in tools).
pub trait JournalStore: Send {
    /// The stored journal, `None` when there is none yet.
    fn load(&mut self) -> impl Future<Output = Result<Option<Journal>, ChainError>> + Send;
    /// Stores the journal; returns only once it is durable.
    fn save(&mut self, journal: &Journal) -> impl Future<Output = Result<(), ChainError>> + Send;
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
    /// Providers last reported unpayable, with why (logged when that changes).
    unpayable: BTreeMap<String, String>,
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
            unpayable: BTreeMap::new(),
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
        // Payout accounts first: a batch not yet signed that pays one that cannot receive
        // (or charges a tenant with no escrow) is taken back, so its lane is free and its
        // other records are planned again below, without the pair that cannot settle.
        let payouts = self.check_payouts(&mut report).await;
        let withdrawn = self.withdraw_unsignable(&payouts.bad, &mut report);
        let balances = self.escrow_balances(&mut report).await;
        let pending_tenants: BTreeSet<String> =
            self.journal.pending_iter().map(|r| r.tenant.clone()).collect();
        // Tenants whose balance could not be read are held silently this round.
        let mut known = balances.clone();
        for t in pending_tenants.difference(&balances.keys().cloned().collect()) {
            known.insert(t.clone(), 0);
        }
        // Providers whose payout account cannot receive (or is unknown this round): their
        // records wait unplanned (a batch paying them could not be signed, or would fail
        // on chain, and hold up every batch after it).
        let unpaid = payouts.held();
        let (planned, shortfalls) = self
            .journal
            .plan_covered_batch(&self.cfg.plan, &known, &unpaid, now);
        let waiting: BTreeSet<&String> = self.journal.pending_iter().map(|r| &r.provider).collect();
        report.unpaid_reasons = payouts
            .bad
            .into_iter()
            .filter(|(p, _)| waiting.contains(p))
            .collect();
        report.unpaid = report.unpaid_reasons.keys().cloned().collect();
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
        if withdrawn || planned.is_some() || !actions.is_empty() {
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
                    // Anything else (an account gone since the round began, an answer that
                    // does not parse, a transaction that does not fit): the batch backs off
                    // like an RPC error and says why. Ending the round instead left every
                    // other batch's issued action unexecuted, ended the settlement term
                    // (and metering) and did the same again after every restart. Nothing
                    // was broadcast, so retrying can never pay twice.
                    Err(e) => {
                        warn!(batch, error = %e, "batch cannot be signed; it backs off");
                        report.sign_errors.push((batch, e.to_string()));
                        // Backs off as an RPC error does, without counting as one.
                        Observation::RpcError {
                            query,
                            message: e.to_string(),
                        }
                    }
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
        // The same blockhash gives the same signature: one already proven dead (a node
        // behind the others handing out an old blockhash) is refused by the journal, which
        // ended the round; it is a bad answer, retried like one.
        if b.tx.expired_signatures.contains(&signed.signature) {
            return Err(ChainError::Decode {
                method: "getLatestBlockhash",
                message: format!(
                    "blockhash {} signs batch {batch} as {}, a signature already expired unseen: the node is behind",
                    bs58::encode(blockhash).into_string(),
                    signed.signature
                ),
            });
        }
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
            total.withdrawn.extend(r.withdrawn);
            total.sign_errors.extend(r.sign_errors);
            total.unpaid = r.unpaid;
            total.unpaid_reasons = r.unpaid_reasons;
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

#[path = "settler_hold.rs"]
mod hold;
#[path = "settler_types.rs"]
mod types;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "settler_tests.rs"]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "settler_hold_tests.rs"]
mod hold_tests;
