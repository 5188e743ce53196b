//! `kubectl gpufed`: the gpufed federation from kubectl.
//!
//! Rendering is pure (objects in, rows and strings out: [`providers`], [`jobs`], [`why`],
//! [`bill`], [`verify`], [`submit`], [`token`], [`rollout`], [`history`], [`output`]) and unit-tested
//! on fixture objects; [`session`], [`onchain`] and [`commands`] do the I/O. `why`
//! re-runs the placement engine locally through the operator's own snapshot mapping
//! (`gpufed_operator::mapping`); `bill --verify` ([`verify_job`]) checks settled usage
//! records against the chain.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bill;
pub mod cli;
pub mod commands;
pub mod drain;
pub mod error;
pub mod history;
pub mod jobs;
pub mod onchain;
pub mod output;
pub mod providers;
pub mod rollout;
pub mod session;
pub mod submit;
pub mod token;
pub mod usage;
pub mod verify;
pub mod why;

#[cfg(test)]
mod fixtures;

pub use error::{Error, Result};
pub use onchain::verify_job;
pub use verify::VerifyReport;
