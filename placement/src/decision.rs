//! Output types and configuration.

use crate::explain::Explanation;
use crate::market::MarketParams;
use crate::score::Weights;
use crate::snapshot::{Micros, Reservation};

/// Engine configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Score weights.
    pub weights: Weights,
    /// Market price parameters.
    pub market: MarketParams,
    /// Most waiting gangs that may hold reservations at once (0 disables backfill
    /// protection).
    pub max_reservations: usize,
    /// Whether jobs that ask for it ([`Job::preempt`](crate::Job::preempt)) may evict
    /// running work of strictly lower priority.
    pub preemption: bool,
    /// Whether a job may evict work of other namespaces (tenants) too; by default only
    /// its own namespace's.
    pub preempt_across_namespaces: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            market: MarketParams::default(),
            max_reservations: 4,
            preemption: false,
            preempt_across_namespaces: false,
        }
    }
}

/// The GPUs of one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPlacement {
    /// Node name.
    pub node: String,
    /// GPU indices on the node.
    pub gpus: Vec<u8>,
}

/// A job placed: where, on what, at which price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Job id.
    pub job: String,
    /// Provider id.
    pub provider: String,
    /// GPU model.
    pub model: String,
    /// One entry per worker, in worker order.
    pub workers: Vec<WorkerPlacement>,
    /// Price per GPU-hour in micros, fixed now; never above the job's ceiling.
    pub price: Micros,
    /// Running jobs that must be evicted before this one starts (preemption).
    pub evicts: Vec<String>,
}

/// A job not placed this round, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    /// Job id.
    pub job: String,
    /// Why, per provider.
    pub explanation: Explanation,
}

/// A running allocation to evict for a higher-priority job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The running job to evict.
    pub job: String,
    /// Its provider.
    pub provider: String,
    /// The job it makes room for.
    pub for_job: String,
}

/// Everything decided in one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Placements, in decision order.
    pub placements: Vec<Placement>,
    /// Jobs left in the queue, with explanations.
    pub unplaced: Vec<Unplaced>,
    /// Running work to evict.
    pub evictions: Vec<Eviction>,
    /// Reservations to hand to the next round (`Snapshot::reservations`).
    pub reservations: Vec<Reservation>,
}
