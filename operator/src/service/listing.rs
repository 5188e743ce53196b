//! Pure: `status.replicaStatus`, one entry per replica job, within the schema's bound
//! ([`MAX_REPLICA_STATUS`]). A surge (up to `replicas` more), retiring replicas waiting to
//! be metered and finished ones can together exceed it; a list one entry too long made
//! the API server refuse every status write. Beyond the bound the serving replicas are
//! listed first, then finished ones, then retiring ones; the rest are counted.

use gpufed_api::ComputeJob;
use gpufed_api::job_status::JobPhase;
use gpufed_api::service::{MAX_REPLICA_STATUS, ReplicaStatus};
use kube::ResourceExt;

use super::plan::ready;
use crate::mapping::is_finished as finished;

/// The entries for `replicas` (in index order), and how many were left out.
pub fn replica_list(
    replicas: &[&ComputeJob],
    retiring: impl Fn(&ComputeJob) -> bool,
) -> (Vec<ReplicaStatus>, Option<u32>) {
    let rank = |j: &ComputeJob| {
        if finished(j) {
            1
        } else if retiring(j) || j.metadata.deletion_timestamp.is_some() {
            2
        } else {
            0
        }
    };
    let mut keep: Vec<usize> = (0..replicas.len()).collect();
    // Stable: by index within each rank.
    keep.sort_by_key(|&i| rank(replicas[i]));
    keep.truncate(MAX_REPLICA_STATUS);
    keep.sort_unstable();
    let list: Vec<ReplicaStatus> = keep
        .iter()
        .map(|&i| replica_status(replicas[i], retiring(replicas[i])))
        .collect();
    let unlisted = replicas.len() - list.len();
    (
        list,
        (unlisted > 0).then(|| u32::try_from(unlisted).unwrap_or(u32::MAX)),
    )
}

fn replica_status(j: &ComputeJob, retiring: bool) -> ReplicaStatus {
    let st = j.status.as_ref();
    let endpoint = st.and_then(|s| s.endpoint.as_ref());
    let phase = match st.and_then(|s| s.phase) {
        Some(p @ (JobPhase::Succeeded | JobPhase::Failed)) => format!("{p:?}"),
        _ if retiring => "Retiring".to_owned(),
        Some(p) => format!("{p:?}"),
        None => "Pending".to_owned(),
    };
    ReplicaStatus {
        name: j.name_any(),
        provider: st.and_then(|s| s.placement.as_ref()).map(|p| p.provider.clone()),
        address: endpoint.and_then(|e| e.address.clone()),
        ready: ready(j),
        phase,
        gpu_seconds: st.and_then(|s| s.usage.as_ref()).map_or(0, |u| u.gpu_seconds),
    }
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
