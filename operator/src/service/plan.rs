//! Pure: given a `ComputeService` and its replica jobs, what to create, retire and
//! delete, and the service's status. No I/O; time is an input.
//!
//! A replica is one `ComputeJob`. Failover inside a replica (its provider lost) is the
//! job's own; the service replaces replicas that ended, scales, and rolls revisions:
//! - live: not retiring, not finished. Fewer live replicas of the current revision than
//!   desired → new ones; more → the surplus retires (not-ready first, then from the most
//!   crowded failure domain, newest first: [`super::retire`]).
//! - old revisions stay only while the current one has too few ready replicas.
//! - retiring = `spec.suspend` set: the job stops its attempt and bills it; the job is
//!   deleted once it holds no placement and its usage is metered in full (or nothing
//!   meters), so no GPU-second is lost by scaling down.

use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions::{self, types};
use gpufed_api::formats::{format_decimal, parse_decimal};
use gpufed_api::job_status::Usage;
use gpufed_api::service::ComputeServiceStatus;
use gpufed_api::serving::LABEL_SERVICE;
use gpufed_api::{ComputeJob, ComputeService};
use kube::ResourceExt;

use super::build::{self, LABEL_REVISION};
use super::listing::replica_list;
use super::progress;
use super::retire::{Domains, Regions};
use super::validate;
use crate::mapping::stopped_and_metered;

/// What the reconcile must do besides writing status.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The next status.
    pub status: ComputeServiceStatus,
    /// Replica jobs to create.
    pub create: Vec<ComputeJob>,
    /// Replica jobs to retire (set `spec.suspend`).
    pub retire: Vec<String>,
    /// Retired or finished replica jobs to delete (stopped and metered).
    pub delete: Vec<String>,
    /// Addresses of the ready replicas, for the hub Endpoints.
    pub ready_addresses: Vec<String>,
    /// The current template's hash, when the spec is valid and the service not being
    /// deleted: its revision is kept ([`super::history`]).
    pub revision: Option<String>,
    /// Seconds until a ready replica becomes available (`spec.minReadySeconds`): the
    /// next reconcile is due then.
    pub recheck_in: Option<i64>,
}

use crate::mapping::is_finished as finished;

/// While `spec.paused`: the template in effect ([`super::history::in_effect`]) — new
/// replicas get it, and replicas of every template are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Paused {
    /// The replica spec of the latest revision.
    pub spec: gpufed_api::job::ComputeJobSpec,
    /// Its hash.
    pub rev: String,
}

/// The reason of `Ready=False` while a paused service is short of its spec.
pub const PAUSED: &str = "Paused";

pub(super) fn ready(j: &ComputeJob) -> bool {
    let st = j.status.as_ref();
    st.and_then(|s| s.placement.as_ref()).is_some()
        && st.and_then(|s| s.endpoint.as_ref()).is_some_and(|e| e.ready)
}

/// Seconds until `j` counts as available: ready for `min` seconds (`Some(0)` once it
/// is; `None` while not ready). A readiness with no recorded time counts from long ago.
fn available_in(j: &ComputeJob, min: u32, now: i64) -> Option<i64> {
    if !ready(j) {
        return None;
    }
    if min == 0 {
        // Ready is available, whatever the clocks of the operators that saw it say.
        return Some(0);
    }
    let since = j.status.as_ref()?.endpoint.as_ref()?.since.as_deref();
    let since = since.and_then(crate::time::parse).unwrap_or(i64::MIN / 2);
    Some((since + i64::from(min) - now).max(0))
}

pub use super::observe::avoid_taken_names;

pub(super) fn index(svc: &str, j: &ComputeJob) -> u32 {
    build::replica_index(svc, &j.name_any()).unwrap_or(u32::MAX)
}

/// Plans one round for `svc` whose replica jobs are `replicas` (`regions`: each
/// provider's region, for `spread: Region`).
pub fn plan(
    svc: &ComputeService,
    replicas: &[ComputeJob],
    regions: &Regions,
    settles: bool,
    now: i64,
) -> Plan {
    plan_held(svc, replicas, regions, settles, None, now)
}

/// [`plan`], with the template in effect while the service is paused.
pub fn plan_held(
    svc: &ComputeService,
    replicas: &[ComputeJob],
    regions: &Regions,
    settles: bool,
    paused: Option<&Paused>,
    now: i64,
) -> Plan {
    let name = svc.name_any();
    let generation = svc.metadata.generation;
    let now_text = crate::time::format(now);
    let cond = |t: &str, s, r: &str, m: String| conditions::condition(t, s, r, m, generation, &now_text);
    let mut st = svc.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    st.selector = Some(format!("{LABEL_SERVICE}={name}"));
    st.address = Some(format!(
        "{name}.{}.svc:{}",
        svc.namespace().unwrap_or_default(),
        svc.spec.port.port
    ));
    let mut out = Plan {
        status: ComputeServiceStatus::default(),
        create: Vec::new(),
        retire: Vec::new(),
        delete: Vec::new(),
        ready_addresses: Vec::new(),
        revision: None,
        recheck_in: None,
    };
    let min_ready = svc.spec.min_ready_seconds;
    let available = |j: &ComputeJob| available_in(j, min_ready, now) == Some(0);
    let spec = build::replica_spec(svc);
    // A template (or readiness probe) that cannot be built into a replica's pod is
    // refused here as the job controller would refuse each replica: no replica is
    // created to wait with `Stalled=InvalidTemplate`, the service says why itself. While
    // paused, the template checked is the one replacements get ([`validate`]).
    let validate::Checked {
        blocking: invalid,
        held,
    } = validate::check(svc, &spec, paused);
    // What the spec asks for (counted as updated), and what new replicas get: the same,
    // unless paused.
    let asked = build::revision(&spec);
    let (spec, rev) = match paused {
        Some(p) => (p.spec.clone(), p.rev.clone()),
        None => (spec, asked.clone()),
    };
    if invalid.is_none() && svc.metadata.deletion_timestamp.is_none() {
        out.revision = Some(rev.clone());
    }

    let mut replicas: Vec<&ComputeJob> = replicas.iter().collect();
    replicas.sort_by_key(|j| index(&name, j));
    let revision = |j: &ComputeJob| j.labels().get(LABEL_REVISION).cloned().unwrap_or_default();
    let live: Vec<&ComputeJob> = replicas
        .iter()
        .copied()
        .filter(|j| !j.spec.suspend && !finished(j) && j.metadata.deletion_timestamp.is_none())
        .collect();
    // Paused: no template is old; every live replica counts toward `replicas`.
    let (current, old): (Vec<&ComputeJob>, Vec<&ComputeJob>) = live
        .iter()
        .copied()
        .partition(|j| paused.is_some() || revision(j) == rev);
    let desired = svc.spec.replicas as usize;
    // Valid whenever `invalid` is None (`check::service_spec` checks the rollout).
    let (surge, unavailable) = svc.spec.rollout.bounds(svc.spec.replicas).unwrap_or((0, 1));
    let domains = Domains::new(svc.spec.spread, regions);
    if invalid.is_none() && svc.metadata.deletion_timestamp.is_none() {
        // Old revisions: keep only as many ready ones as the current one lacks, less the
        // unavailability the rollout allows; not-ready ones serve nothing and go.
        // Old replicas retire only for new ones that are available, not just ready.
        let current_ready = current.iter().filter(|j| available(j)).count();
        let keep = desired
            .saturating_sub(unavailable as usize)
            .saturating_sub(current_ready);
        let (ready_old, unready_old): (Vec<&ComputeJob>, Vec<&ComputeJob>) =
            old.iter().partition(|j| ready(j));
        out.retire.extend(unready_old.iter().map(|j| j.name_any()));
        let ready_old_count = ready_old.len();
        let n = ready_old_count.saturating_sub(keep);
        let gone = domains.most_crowded(ready_old, &current, n, |j| index(&name, j));
        let old_kept = ready_old_count - gone.len();
        out.retire.extend(gone.iter().map(|j| j.name_any()));
        // Scale the current revision to `desired`, with at most `desired + surge` replicas
        // live (old ones kept included) while a rollout runs. Paused with more than one
        // template live (a rollout held half-way), every replica counts as current: only
        // what is above `desired + surge` goes (all at `replicas: 0`), as a paused
        // Deployment scales, or pausing would retire the surge — often the new replicas.
        let templates: std::collections::BTreeSet<String> = live.iter().map(|j| revision(j)).collect();
        let ceiling = if paused.is_some() && templates.len() > 1 && desired > 0 {
            desired + surge as usize
        } else {
            desired
        };
        if current.len() < desired {
            let room = (desired + surge as usize).saturating_sub(current.len() + old_kept);
            let used: std::collections::BTreeSet<u32> = replicas.iter().map(|j| index(&name, j)).collect();
            let free = (0..).filter(|i| !used.contains(i));
            out.create = free
                .take((desired - current.len()).min(room))
                .map(|i| build::replica(svc, i, &spec, &rev))
                .collect();
        } else if current.len() > ceiling {
            // Not-ready ones first (newest first), then the ready ones from the most
            // crowded failure domain, newest first.
            let excess = current.len() - ceiling;
            let (mut unready, ready_now): (Vec<&ComputeJob>, Vec<&ComputeJob>) =
                current.iter().partition(|j| !ready(j));
            unready.sort_by_key(|j| std::cmp::Reverse(index(&name, j)));
            let first = unready.len().min(excess);
            out.retire.extend(unready[..first].iter().map(|j| j.name_any()));
            let gone =
                domains.most_crowded(ready_now, &unready[first..], excess - first, |j| index(&name, j));
            out.retire.extend(gone.iter().map(|j| j.name_any()));
        }
    } else if svc.metadata.deletion_timestamp.is_some() {
        out.retire.extend(live.iter().map(|j| j.name_any()));
    }
    out.delete = replicas
        .iter()
        .filter(|j| (j.spec.suspend || finished(j)) && stopped_and_metered(j, settles))
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .map(|j| j.name_any())
        .collect();

    // Status.
    let retiring = |j: &ComputeJob| j.spec.suspend || out.retire.contains(&j.name_any());
    let serving: Vec<&ComputeJob> = live.iter().copied().filter(|j| !retiring(j)).collect();
    st.replicas = u32::try_from(serving.len()).unwrap_or(u32::MAX);
    st.ready_replicas = u32::try_from(serving.iter().filter(|j| ready(j)).count()).unwrap_or(u32::MAX);
    let updated = serving.iter().filter(|j| revision(j) == asked).count();
    st.available_replicas =
        u32::try_from(serving.iter().filter(|j| available(j)).count()).unwrap_or(u32::MAX);
    out.recheck_in = serving
        .iter()
        .filter_map(|j| available_in(j, min_ready, now))
        .filter(|s| *s > 0)
        .min();
    st.updated_replicas = u32::try_from(updated).unwrap_or(u32::MAX);
    out.ready_addresses = live
        .iter()
        .filter(|j| ready(j))
        .filter_map(|j| j.status.as_ref()?.endpoint.as_ref()?.address.clone())
        .collect();
    (st.replica_status, st.unlisted_replicas) = replica_list(&replicas, retiring);
    st.disruption = super::budget::status(svc, &serving);
    let (mut gpu_seconds, mut micros) = (0u64, 0u64);
    for u in replicas.iter().filter_map(|j| j.status.as_ref()?.usage.as_ref()) {
        gpu_seconds += u.gpu_seconds;
        micros += parse_decimal(&u.cost).unwrap_or(0);
    }
    st.usage = Some(Usage {
        gpu_seconds,
        cost: format_decimal(micros),
    });
    let held = held.map(|(reason, msg)| {
        let msg = format!("{msg} (held by spec.paused: replicas are still kept with the template in effect)");
        (reason, msg)
    });
    if let Some((reason, msg)) = invalid.or(held) {
        // Stalled alone: kstatus reads the first of Reconciling/Stalled that is True, so a
        // Reconciling left from an earlier round would hide the stall.
        conditions::set(
            &mut st.conditions,
            cond(types::STALLED, True, reason, msg.clone()),
        );
        conditions::set(&mut st.conditions, cond(types::READY, False, reason, msg));
        conditions::remove(&mut st.conditions, types::RECONCILING);
        st.progress = None;
        out.status = st;
        return out;
    }
    let settling = replicas.iter().filter(|j| retiring(j) || finished(j)).count();
    let short =
        (st.available_replicas as usize) < desired || updated < serving.len() || !out.create.is_empty();
    if paused.is_some() && short {
        // Held on purpose: neither progressing (no deadline runs) nor stuck.
        let msg = format!(
            "rollout paused (spec.paused): {} of {desired} replicas ready, {updated} of {} on the spec's template",
            st.ready_replicas,
            serving.len()
        );
        conditions::set(&mut st.conditions, cond(types::READY, False, PAUSED, msg));
        conditions::remove(&mut st.conditions, types::RECONCILING);
        conditions::remove(&mut st.conditions, types::STALLED);
        st.progress = None;
        out.status = st;
        return out;
    }
    // Replicas of an older template still serve: a rollout is under way.
    let rolling = serving.len() > updated;
    let msg = format!(
        "{} of {desired} replicas ready{}{}{}",
        st.ready_replicas,
        if st.available_replicas < st.ready_replicas {
            format!(
                " ({} available: ready for minReadySeconds {min_ready})",
                st.available_replicas
            )
        } else {
            String::new()
        },
        if rolling {
            format!(", {updated} of {desired} updated")
        } else {
            String::new()
        },
        if settling > 0 {
            format!(", {settling} retiring")
        } else {
            String::new()
        }
    );
    let complete = st.available_replicas as usize >= desired && old.iter().all(|j| retiring(j));
    let waiting: Vec<&ComputeJob> = serving
        .iter()
        .copied()
        .filter(|j| revision(j) == asked)
        .filter(|j| !available(j))
        .collect();
    let updated_ready = u32::try_from(updated.saturating_sub(waiting.len())).unwrap_or(u32::MAX);
    st.progress = progress::track(svc, complete, updated_ready, now);
    let stalled = st
        .progress
        .as_ref()
        .and_then(|p| progress::exceeded(svc, p, waiting.first().copied(), now));
    if complete {
        conditions::set(&mut st.conditions, cond(types::READY, True, "Ready", msg.clone()));
    } else {
        let reason = if stalled.is_some() {
            progress::DEADLINE_EXCEEDED
        } else if st.ready_replicas == 0 && desired > 0 {
            "Unavailable"
        } else {
            "Progressing"
        };
        conditions::set(&mut st.conditions, cond(types::READY, False, reason, msg.clone()));
    }
    let busy = st.ready_replicas as usize != desired
        || st.available_replicas != st.ready_replicas
        || settling > 0
        || rolling
        || !out.create.is_empty();
    if let Some(why) = stalled {
        // Stalled alone: kstatus reads the first of Reconciling/Stalled that is True.
        let c = cond(types::STALLED, True, progress::DEADLINE_EXCEEDED, why);
        conditions::set(&mut st.conditions, c);
        conditions::remove(&mut st.conditions, types::RECONCILING);
    } else if busy {
        conditions::remove(&mut st.conditions, types::STALLED);
        conditions::set(
            &mut st.conditions,
            cond(types::RECONCILING, True, "Progressing", msg),
        );
    } else {
        conditions::remove(&mut st.conditions, types::STALLED);
        conditions::remove(&mut st.conditions, types::RECONCILING);
    }
    out.status = st;
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rollout_tests.rs"]
pub(super) mod rollout_tests;

#[cfg(test)]
#[path = "pause_tests.rs"]
mod pause_tests;

#[cfg(test)]
#[path = "min_ready_tests.rs"]
mod min_ready_tests;

#[cfg(test)]
#[path = "invalid_tests.rs"]
mod invalid_tests;
