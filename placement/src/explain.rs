//! Why a job was not placed, in words a user can act on.
//!
//! Every provider is rejected for exactly one [`Reason`]: the first filter it fails, in
//! the order the variants are declared. An [`Explanation`] counts the providers per reason,
//! so that `Display` reads like
//! `0/5 providers fit: 3 lack 80 GiB VRAM, 2 above max price 2.00`.

use std::collections::BTreeMap;
use std::fmt;

use crate::quantities::mib;
use crate::snapshot::{ComputeCapability, Micros, format_micros};

/// Why one provider cannot take a job. Declared in filter order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The job names allowed providers and this is not one of them.
    ProviderNotAllowed,
    /// The provider's region is not in the job's allowed regions.
    RegionNotAllowed,
    /// The job is kept off this provider for now ([`Job::avoid`](crate::Job::avoid)).
    Avoided,
    /// The provider takes no new work from the job's namespace (its tenant policy).
    TenantNotAdmitted,
    /// The provider is unhealthy or unreachable.
    Unhealthy,
    /// The job wants verified providers only and this one is not verified.
    NotVerified,
    /// Reputation below the job's minimum (in thousandths).
    LowReputation {
        /// Minimum reputation in thousandths.
        min_permille: u16,
    },
    /// No GPU of an accepted model (or the model has no price).
    NoAcceptedModel {
        /// Accepted models, joined with `/`.
        models: String,
    },
    /// No accepted GPU with enough memory.
    Vram {
        /// Minimum MiB per GPU.
        min_mib: u32,
    },
    /// No accepted GPU with enough compute capability.
    Compute {
        /// Minimum capability.
        min: ComputeCapability,
    },
    /// No suitable GPU with NVLink.
    NoNvlink,
    /// No suitable node carries the labels of the job's node selector.
    NodeSelector {
        /// The selector, `key=value` pairs joined with `,`.
        selector: String,
    },
    /// The market price of every suitable GPU is above the ceiling.
    Price {
        /// The job's ceiling.
        max: Micros,
    },
    /// No suitable node has enough GPUs for one worker, even when empty.
    NodeTooSmall {
        /// GPUs per worker.
        gpus_per_worker: u8,
    },
    /// No suitable node with the GPUs for a worker has the CPU and memory it requests,
    /// even when empty (its allocatable).
    WorkerTooLarge {
        /// What one worker requests, e.g. `40 CPU and 1 rdma/ib`
        /// ([`crate::Resources::describe`]).
        per_worker: String,
    },
    /// The provider could not hold the whole gang even when empty.
    TooSmall {
        /// GPUs of the gang.
        gpus: u32,
    },
    /// The provider has the GPUs for the whole gang, but not on enough nodes for the
    /// job's cap of workers per node ([`crate::Job::max_workers_per_node`]).
    TooFewNodes {
        /// Workers of the gang.
        workers: u16,
        /// The cap.
        per_node: u16,
    },
    /// No NVLink domain could hold the whole gang even when empty.
    NvlinkDomainTooSmall {
        /// GPUs of the gang.
        gpus: u32,
    },
    /// It would fit, but not enough suitable GPUs are free now.
    Busy {
        /// GPUs of the gang.
        gpus: u32,
    },
    /// Enough suitable GPUs are free, but too few of their nodes have the CPU and memory
    /// free that the workers request.
    NodeResourcesBusy {
        /// What one worker requests ([`crate::Resources::describe`]).
        per_worker: String,
    },
    /// Free capacity exists but is held for a waiting gang ahead in the queue.
    Reserved,
    /// Evicting lower-priority work would make room, but only by breaking a disruption
    /// budget ([`Snapshot::budgets`](crate::Snapshot::budgets)).
    Protected {
        /// The budgets that hold the room, joined with `, `.
        budgets: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ProviderNotAllowed => write!(f, "not in the allowed providers"),
            Reason::Avoided => write!(f, "refused or did not start this job's last attempt"),
            Reason::TenantNotAdmitted => write!(f, "takes no work from this namespace"),
            Reason::RegionNotAllowed => write!(f, "outside the allowed regions"),
            Reason::Unhealthy => write!(f, "unhealthy"),
            Reason::NotVerified => write!(f, "not verified"),
            Reason::LowReputation { min_permille } => {
                write!(
                    f,
                    "below reputation {}.{:03}",
                    min_permille / 1000,
                    min_permille % 1000
                )
            }
            Reason::NoAcceptedModel { models } if models.is_empty() => write!(f, "lack priced GPUs"),
            Reason::NoAcceptedModel { models } => write!(f, "lack {models} GPUs"),
            Reason::Vram { min_mib } => write!(f, "lack {} VRAM", mib(u64::from(*min_mib))),
            Reason::Compute { min } => write!(f, "lack compute capability {min}"),
            Reason::NoNvlink => write!(f, "lack NVLink"),
            Reason::NodeSelector { selector } => write!(f, "lack a suitable node labelled {selector}"),
            Reason::Price { max } => write!(f, "above max price {}", format_micros(*max)),
            Reason::NodeTooSmall { gpus_per_worker } => {
                write!(f, "lack a node with {gpus_per_worker} suitable GPUs")
            }
            Reason::WorkerTooLarge { per_worker } => {
                write!(f, "lack a suitable node with {per_worker} for one worker")
            }
            Reason::TooSmall { gpus } => write!(f, "too small for {gpus} suitable GPUs"),
            Reason::TooFewNodes { workers, per_node: 1 } => {
                write!(f, "lack {workers} suitable nodes for one worker each")
            }
            Reason::TooFewNodes { workers, per_node } => {
                write!(
                    f,
                    "lack suitable nodes for {workers} workers at {per_node} per node"
                )
            }
            Reason::NvlinkDomainTooSmall { gpus } => {
                write!(f, "lack an NVLink domain with {gpus} suitable GPUs")
            }
            Reason::Busy { gpus } => write!(f, "lack {gpus} free suitable GPUs now"),
            Reason::NodeResourcesBusy { per_worker } => {
                write!(f, "lack {per_worker} free per worker beside their free GPUs now")
            }
            Reason::Reserved => write!(f, "hold capacity reserved for a waiting gang"),
            Reason::Protected { budgets } => write!(
                f,
                "could make room only by evicting below the disruption budget of {budgets}"
            ),
        }
    }
}

/// A job that cannot be considered at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJob {
    /// `gpus_per_worker` is 0 or above [`crate::MAX_GPUS_PER_NODE`].
    #[error("gpus per worker must be 1..=64, got {0}")]
    GpusPerWorker(u8),
    /// `workers` is 0.
    #[error("workers must be at least 1")]
    NoWorkers,
    /// The same job id appears twice in the queue.
    #[error("duplicate job id in the queue")]
    Duplicate,
    /// `min_reputation` is not a number in 0..=1.
    #[error("min reputation must be within 0..=1")]
    Reputation,
}

/// Why a job was not placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Explanation {
    /// No provider fits; providers counted per reason, most common first.
    NoFit {
        /// Providers considered.
        providers: usize,
        /// Reasons and how many providers each rejected.
        reasons: Vec<(Reason, usize)>,
    },
    /// The job itself is malformed.
    Invalid(InvalidJob),
    /// It would fit, but its namespace's quota ([`Snapshot::quotas`](crate::Snapshot))
    /// holds it back.
    Quota(QuotaExceeded),
}

/// Which of its namespace's caps holds a job back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// Its GPUs would take the namespace past its GPU cap.
    Gpus {
        /// The cap.
        limit: u32,
        /// GPUs the namespace's work holds (this round's placements included).
        used: u32,
        /// GPUs of the job's gang.
        need: u32,
    },
    /// The spend per hour it would add would take the namespace past its spending cap.
    Spend {
        /// The cap, in micros per hour.
        limit: Micros,
        /// What the namespace's work costs per hour (this round's placements included).
        used: Micros,
        /// What the job's best fit would add per hour; `None` when nothing is left.
        need: Option<Micros>,
    },
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaExceeded::Gpus { limit, used, need } => write!(
                f,
                "quota exceeded: the namespace holds {used} of its {limit} GPUs, this job needs {need}"
            ),
            QuotaExceeded::Spend { limit, used, need } => {
                write!(
                    f,
                    "quota exceeded: the namespace spends {} of its {} per hour",
                    format_micros(*used),
                    format_micros(*limit)
                )?;
                match need {
                    Some(n) => write!(f, ", this job's best fit would add {}", format_micros(*n)),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Explanation {
    /// Builds a `NoFit` explanation from per-provider reasons.
    pub fn from_reasons(providers: usize, counts: BTreeMap<Reason, usize>) -> Self {
        let mut reasons: Vec<(Reason, usize)> = counts.into_iter().collect();
        // Most common first; ties in filter order (stable sort keeps BTreeMap order).
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        Explanation::NoFit { providers, reasons }
    }

    /// The most common reason, if any (e.g. for a condition's `reason` field).
    pub fn primary(&self) -> Option<&Reason> {
        match self {
            Explanation::NoFit { reasons, .. } => reasons.first().map(|(r, _)| r),
            Explanation::Invalid(_) | Explanation::Quota(_) => None,
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::Invalid(e) => write!(f, "invalid job: {e}"),
            Explanation::Quota(q) => q.fmt(f),
            Explanation::NoFit { providers, reasons } => {
                write!(f, "0/{providers} providers fit")?;
                if *providers == 0 {
                    return write!(f, ": no providers");
                }
                for (i, (reason, n)) in reasons.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { ", " };
                    write!(f, "{sep}{n} {reason}")?;
                }
                Ok(())
            }
        }
    }
}
