//! gpufed pure placement engine and market: snapshot in, decisions out.
//!
//! No Kubernetes, no network, no async runtime: the operator maps its CRDs onto a
//! [`Snapshot`], calls [`place`] (or drives an [`Engine`] job by job) and applies the
//! [`Decisions`]. The same snapshot always yields the same decisions.
//!
//! See `docs/placement.md` for the filters, scores, market formula and fairness rules.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod baseline;
mod decision;
mod engine;
mod explain;
mod filter;
mod hash;
mod index;
mod labels;
pub mod market;
mod nvlink;
mod quantities;
mod queue;
mod resources;
mod score;
mod search;
pub mod sim;
mod snapshot;
mod spread;
pub mod synth;

pub use decision::{Config, Decisions, Eviction, Placement, Unplaced, WorkerPlacement};
pub use engine::{Engine, place};
pub use explain::{Explanation, InvalidJob, QuotaExceeded, Reason};
pub use index::SnapshotError;
pub use labels::{
    AffinityTerm, LabelOp, LabelRequirement, affinity_matches, describe_affinity, describe_selection,
};
pub use market::MarketParams;
pub use score::Weights;
pub use snapshot::{
    ComputeCapability, EXTENDED_SLOTS, GpuRef, Interconnect, Job, MAX_GPUS_PER_NODE, MICROS_PER_UNIT, Micros,
    Node, NodeResources, Provider, Quota, Reservation, Resources, RunningAllocation, Snapshot, Spread,
    SpreadDomain, format_micros, is_hugepages,
};
