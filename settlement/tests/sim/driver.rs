//! The test I/O layer: drives the pure journal against the chain model, with a "disk"
//! (the journal's JSON) and crash injection at every step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gpufed_settlement::machine::Intent;
use gpufed_settlement::{
    Action, BackoffConfig, Journal, MachineConfig, Observation, PlanConfig, UsageRecord,
};

use crate::chain::{Chain, SimTx};
use crate::common::Rng;

/// Where a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Crash {
    /// Before fetching a blockhash and signing.
    BeforeSign,
    /// Signed, the intent not persisted yet.
    AfterSignBeforePersist,
    /// Intent persisted, not broadcast yet.
    AfterPersistBeforeSend,
    /// Broadcast done, its acknowledgement not recorded.
    AfterSend,
    /// A signature status came back but was not recorded (incl. during confirmation).
    BeforeRecordingStatus,
    /// A status was stepped (e.g. Landed/Done) but the new state not persisted.
    DuringConfirmation,
    /// Records planned into a batch, the batch not persisted.
    AfterPlanBeforePersist,
    /// Records appended, not persisted (metering must re-append them).
    AfterAppendBeforePersist,
}

pub struct Driver {
    pub journal: Journal,
    pub disk: String,
    pub chain: Chain,
    pub now: u64,
    pub queue: VecDeque<(u64, Action)>,
    pub mcfg: MachineConfig,
    pub pcfg: PlanConfig,
    pub rng: Rng,
    /// Probability (percent) of crashing at each crash point.
    pub crash_pct: u64,
    /// Crash points still to fire exactly once each.
    pub crash_once: BTreeSet<Crash>,
    pub crashes: BTreeMap<Crash, u32>,
    /// Records per job, and how many each job has had acknowledged (persisted).
    pub jobs: Vec<Vec<UsageRecord>>,
    pub acked: Vec<usize>,
    pub broadcasts: u64,
    pub balances_for_planning: Option<BTreeMap<String, u64>>,
}

impl Driver {
    pub fn new(chain: Chain, jobs: Vec<Vec<UsageRecord>>, seed: u64) -> Self {
        let mcfg = MachineConfig {
            poll_ms: 800,
            query_timeout_ms: 5_000,
            backoff: BackoffConfig {
                base_ms: 400,
                max_ms: 6_400,
                jitter_pct: 20,
            },
            ..MachineConfig::default()
        };
        let pcfg = PlanConfig {
            max_records_per_batch: 16,
            max_in_flight_batches: 3,
            ..PlanConfig::default()
        };
        let journal = Journal::new();
        let disk = serde_json::to_string(&journal).unwrap();
        let acked = vec![0; jobs.len()];
        Self {
            journal,
            disk,
            chain,
            now: 0,
            queue: VecDeque::new(),
            mcfg,
            pcfg,
            rng: Rng(seed),
            crash_pct: 0,
            crash_once: BTreeSet::new(),
            crashes: BTreeMap::new(),
            jobs,
            acked,
            broadcasts: 0,
            balances_for_planning: None,
        }
    }

    fn persist(&mut self) {
        self.disk = serde_json::to_string(&self.journal).unwrap();
    }

    /// Returns true (and restarts from disk) when a crash fires here.
    fn crash(&mut self, at: Crash) -> bool {
        let fire = self.crash_once.remove(&at) || self.rng.chance(self.crash_pct);
        if fire {
            *self.crashes.entry(at).or_default() += 1;
            self.journal = serde_json::from_str(&self.disk).unwrap();
            self.queue.clear();
            let actions = self.journal.restarted(self.now, &self.mcfg);
            self.persist();
            self.queue.extend(actions);
        }
        fire
    }

    /// One 400 ms iteration: meter, plan, tick, run the action queue.
    pub fn iterate(&mut self, metered_until: usize) {
        self.now += 400;
        self.chain.advance();
        self.meter(metered_until);
        let planned = match self.balances_for_planning.clone() {
            Some(b) => {
                self.journal
                    .plan_covered_batch(&self.pcfg, &b, &Default::default(), self.now)
                    .0
            }
            None => self.journal.plan_batch(&self.pcfg, &BTreeSet::new(), self.now),
        };
        if planned.is_some() && self.crash(Crash::AfterPlanBeforePersist) {
            return;
        }
        self.persist();
        let ticks = self.journal.tick(self.now, &self.mcfg);
        self.persist();
        self.queue.extend(ticks);
        let mut budget = 512;
        while let Some((batch, action)) = self.queue.pop_front() {
            budget -= 1;
            if budget == 0 {
                // Responses lost: the machine re-issues after its query timeout.
                self.queue.clear();
                break;
            }
            let Some(obs) = self.execute(batch, &action) else {
                return;
            };
            let actions = self
                .journal
                .step(batch, self.now, obs, &self.mcfg)
                .expect("driver fed a stale observation");
            let crash_at = if matches!(action, Action::QuerySignatureStatus { .. }) {
                Some(Crash::DuringConfirmation)
            } else {
                None
            };
            if crash_at.is_some_and(|c| self.crash(c)) {
                return;
            }
            self.persist();
            self.queue.extend(actions.into_iter().map(|a| (batch, a)));
        }
    }

    /// Metering: append up to `until` records per job, persist, then acknowledge.
    fn meter(&mut self, until: usize) {
        let mut appended = false;
        for j in 0..self.jobs.len() {
            for k in self.acked[j]..until.min(self.jobs[j].len()) {
                self.journal.append(self.jobs[j][k].clone()).unwrap();
                appended = true;
            }
        }
        if appended && self.crash(Crash::AfterAppendBeforePersist) {
            return;
        }
        self.persist();
        for j in 0..self.jobs.len() {
            self.acked[j] = until.min(self.jobs[j].len());
        }
    }

    /// Executes one action; `None` when a crash fired.
    fn execute(&mut self, batch: u64, action: &Action) -> Option<Observation> {
        match action {
            Action::SignAndPersistIntent { query } => {
                if self.crash(Crash::BeforeSign) {
                    return None;
                }
                let query = *query;
                let (blockhash, lvbh) = match self.chain.latest_blockhash() {
                    Ok(v) => v,
                    Err(message) => return Some(Observation::RpcError { query, message }),
                };
                let b = self.journal.batch(batch).unwrap();
                let tx = SimTx {
                    batch,
                    memo: b.memo.clone(),
                    transfers: b.transfers.clone(),
                    blockhash: blockhash.clone(),
                    last_valid_block_height: lvbh,
                };
                let intent = Intent {
                    signature: tx.signature(),
                    blockhash,
                    last_valid_block_height: lvbh,
                    transaction: serde_json::to_string(&tx).unwrap(),
                    signed_at_slot: None,
                };
                let obs = Observation::Signed { query, intent };
                // Step now so a crash between signing and persisting is modelled exactly.
                let actions = self.journal.step(batch, self.now, obs, &self.mcfg).unwrap();
                if self.crash(Crash::AfterSignBeforePersist) {
                    return None;
                }
                self.persist();
                self.queue.extend(actions.into_iter().map(|a| (batch, a)));
                // The observation was consumed; feed a Tick (a no-op) to keep the loop uniform.
                Some(Observation::Tick)
            }
            Action::Broadcast {
                query,
                signature,
                transaction,
            } => {
                if self.crash(Crash::AfterPersistBeforeSend) {
                    return None;
                }
                // Invariant: nothing is broadcast unless its intent is on disk.
                let on_disk: Journal = serde_json::from_str(&self.disk).unwrap();
                let sig_on_disk = on_disk
                    .batch(batch)
                    .and_then(|b| b.tx.signature().map(str::to_string));
                assert_eq!(
                    sig_on_disk.as_deref(),
                    Some(signature.as_str()),
                    "broadcast before intent persisted"
                );
                let tx: SimTx = serde_json::from_str(transaction).unwrap();
                assert_eq!(&tx.signature(), signature);
                self.broadcasts += 1;
                let res = self.chain.send(tx);
                if self.crash(Crash::AfterSend) {
                    return None;
                }
                Some(match res {
                    Ok(()) => Observation::Broadcasted { query: *query },
                    Err(message) => Observation::RpcError {
                        query: *query,
                        message,
                    },
                })
            }
            Action::QuerySignatureStatus {
                query,
                signature,
                min_context_slot,
            } => {
                let res = self.chain.status(signature);
                if self.crash(Crash::BeforeRecordingStatus) {
                    return None;
                }
                Some(match res {
                    // As the chain crate's driver: "unknown" from a node behind the slot
                    // the expiry was read at is no answer.
                    Ok((None, seen)) if min_context_slot.is_some_and(|m| seen < m) => Observation::RpcError {
                        query: *query,
                        message: format!("node at slot {seen} is behind"),
                    },
                    Ok((status, _)) => Observation::SignatureStatus {
                        query: *query,
                        status,
                    },
                    Err(message) => Observation::RpcError {
                        query: *query,
                        message,
                    },
                })
            }
            Action::QueryBlockHeight { query } => Some(match self.chain.finalized_height() {
                Ok((height, slot)) => Observation::BlockHeight {
                    query: *query,
                    height,
                    slot,
                },
                Err(message) => Observation::RpcError {
                    query: *query,
                    message,
                },
            }),
            Action::MarkSettled { .. } | Action::MarkFailed { .. } => Some(Observation::Tick),
        }
    }
}
