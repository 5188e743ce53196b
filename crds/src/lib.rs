//! gpufed's API: the `GpuProvider`, `ComputeJob`, `ComputeService`, `ComputeQuota`,
//! `Stake` and `Assignment` custom resources
//! (group `gpufed.io`, version `v1alpha1`), their schema and CEL rules, the condition
//! vocabulary every controller uses, and parsers for the string formats in the specs.
//!
//! `crds/*.yaml` is generated from these types (`make crds`); CI fails on drift.
#![forbid(unsafe_code)]
// kube-derive takes repeated `printcolumn(...)` and `shortname` arguments, which this lint
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod assignment;
pub mod check;
pub mod common;
pub mod conditions;
pub mod crd;
pub mod disruption;
pub mod fixture;
pub mod formats;
pub mod job;
pub mod job_status;
pub mod pod_security;
pub mod provider;
pub mod pull;
pub mod quota;
pub mod rollout;
pub mod schema_check;
pub mod service;
pub mod serving;
pub mod stake;
pub mod tenants;
pub mod tolerations;

pub use assignment::{Assignment, AssignmentSpec, AssignmentStatus};
pub use common::{Condition, ConditionStatus, SecretKeyRef};
pub use job::{ComputeJob, ComputeJobSpec};
pub use job_status::ComputeJobStatus;
pub use provider::{GpuProvider, GpuProviderSpec, GpuProviderStatus};
pub use quota::{ComputeQuota, ComputeQuotaSpec, ComputeQuotaStatus};
pub use service::{ComputeService, ComputeServiceSpec, ComputeServiceStatus};
pub use stake::{Stake, StakeSpec, StakeStatus};

/// API group of every gpufed kind.
pub const GROUP: &str = "gpufed.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Extended resource the gpufed device plugin advertises unless configured otherwise.
pub const DEFAULT_GPU_RESOURCE: &str = "gpufed.io/gpu";
