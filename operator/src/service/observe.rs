//! Pure: which jobs of the namespace are a service's replicas, and which replica names are
//! taken by jobs that are not ([`super::plan::avoid_taken_names`]).

use std::collections::BTreeSet;

use gpufed_api::serving::LABEL_SERVICE;
use gpufed_api::{ComputeJob, ComputeService};
use kube::ResourceExt;

use super::build;
use super::plan::index;

/// Sorts `jobs` (any namespace) into the service's replicas — in its namespace, owned by
/// it and labelled `gpufed.io/service=<name>` — and the replica-like names (`<name>-<n>`)
/// of the namespace's other jobs. A job we own whose label was removed or changed is no
/// replica, but its name is taken all the same: planned again, its create would answer 409
/// every round, taken as success, and the service would stay one replica short.
pub fn replicas_and_taken<'a>(
    svc: &ComputeService,
    jobs: impl IntoIterator<Item = &'a ComputeJob>,
) -> (Vec<ComputeJob>, BTreeSet<String>) {
    let ns = svc.metadata.namespace.as_deref();
    let name = svc.name_any();
    let uid = svc.uid();
    let (mut ours, mut taken) = (Vec::new(), BTreeSet::new());
    for j in jobs {
        if j.metadata.namespace.as_deref() != ns {
            continue;
        }
        // Only ours: a job that merely carries the label is not a replica.
        let owned = j.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref());
        if owned && j.labels().get(LABEL_SERVICE) == Some(&name) {
            ours.push(j.clone());
        } else if let Some(n) = j.metadata.name.as_deref()
            && build::replica_index(&name, n).is_some()
        {
            taken.insert(n.to_owned());
        }
    }
    (ours, taken)
}

/// Renames the replicas to create whose name another job of the namespace already has
/// (`taken`: names of jobs that are not its replicas — a user's `llm-0`, a replica whose
/// owner reference was lost in a restore or whose label was removed) to the next index free of both; returns
/// `(wanted, given)` for each renamed. Without it the create answered 409 every round and
/// the service never reached its replica count.
pub fn avoid_taken_names(
    svc: &str,
    create: &mut [ComputeJob],
    replicas: &[ComputeJob],
    taken: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut used: BTreeSet<u32> = replicas.iter().map(|j| index(svc, j)).collect();
    used.extend(taken.iter().filter_map(|n| build::replica_index(svc, n)));
    used.extend(create.iter().map(|j| index(svc, j)));
    let mut renamed = Vec::new();
    for job in create.iter_mut().filter(|j| taken.contains(&j.name_any())) {
        let Some(i) = (0..u32::MAX).find(|i| !used.contains(i)) else {
            break;
        };
        used.insert(i);
        let given = build::replica_name(svc, i);
        renamed.push((job.name_any(), given.clone()));
        job.metadata.name = Some(given);
    }
    renamed
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
