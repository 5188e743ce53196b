//! gpufed pure trust logic: is a provider's GPU supply real?
//!
//! * [`workload`] / [`protocol`]: a nonce-seeded integer matrix product per GPU, committed
//!   row by row (Merkle root), then opened at rows the hub picks afterwards;
//! * [`verify`] / [`session`]: the hub's checks (recomputed rows, timing bands, round
//!   trip) and its per-node state machine;
//! * [`bands`]: per-model workload shapes and plausible timings (fail closed without one);
//! * [`fleet`]: a GPU UUID belongs to one node of one provider;
//! * [`reputation`]: the documented score placement weighs;
//! * [`rounds`]: when each node is challenged (the whole fleet at once);
//! * [`evidence`]: what a slash points to;
//! * [`allocations`]: which GPUs each pod of a node holds (the plugin's Node annotation).
//!
//! No Kubernetes, no network, no clock: the operator's I/O layer drives it. See
//! `docs/trust.md`.
#![forbid(unsafe_code)]

pub mod allocations;
pub mod bands;
pub mod evidence;
pub mod fleet;
pub mod protocol;
pub mod report;
pub mod reputation;
pub mod rounds;
pub mod session;
pub mod verify;
pub mod workload;

pub use bands::{Band, Bands};
/// The hash of a row leaf and of a commitment (the settlement crate's).
pub use gpufed_settlement::hash::Hash32;
pub use protocol::{ChallengeAnswer, ChallengeRequest, Computed};
pub use session::{GpuClaim, GpuVerdict, NodeView, Session, Step};
pub use verify::Failure;
pub use workload::Params;
