//! Room held for a job that waits for its evictions.
//!
//! A job whose placement evicts lower-priority work sits out the rounds until every
//! victim is gone ([`super::evictions`]). Victims do not leave together: one
//! stops within a second, another only after a status write that conflicted is retried.
//! Meanwhile the GPUs the first one gave back — and the room that was free already and
//! that the plan counted on — look free to the queue. The next round may place the
//! evicted job itself there again, and once the last victim is gone the preemptor no
//! longer fits and evicts that job a second time (billed twice for nothing, and the
//! preemptor starts later).
//!
//! A hold keeps, on each node of the planned placement, what the preemptor will take
//! beyond what its still-running victims hold there (those are busy anyway), for as long
//! as it waits. The leader keeps it in memory, as the engine's reservations, and writes
//! it into the job's status (`status.held`) with the `Preempting` reason: a new leader
//! takes the holds of the jobs still waiting from there, so a change of leader in the
//! middle of an eviction does not reopen the race.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gpufed_api::ComputeJob;
use gpufed_api::job_status::{HeldNode, HeldRoom};
use gpufed_placement as pl;

use crate::fleet::MemberView;

/// What a waiting job will take on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Room {
    gpus: u32,
    /// CPU, memory and ephemeral storage (extended slots zero: they are per round).
    resources: pl::Resources,
    /// Extended resources by name: a later round may number its slots differently.
    extended: BTreeMap<String, u64>,
}

impl Room {
    /// This room in the slots of a round that models `slots`.
    fn engine(&self, slots: &[String]) -> pl::Resources {
        let mut r = self.resources;
        for (slot, name) in r.extended.iter_mut().zip(slots) {
            *slot = self.extended.get(name).copied().unwrap_or(0);
        }
        r
    }
}

/// The room one waiting job's planned placement takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    provider: String,
    nodes: BTreeMap<String, Room>,
}

/// Holds by job id.
pub type Holds = BTreeMap<String, Hold>;

impl Hold {
    /// As kept in the job's status.
    pub fn status(&self) -> HeldRoom {
        HeldRoom {
            provider: self.provider.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|(node, room)| HeldNode {
                    node: node.clone(),
                    gpus: room.gpus,
                    cpu_millis: room.resources.cpu_millis,
                    memory_mib: room.resources.memory_mib,
                    ephemeral_mib: room.resources.ephemeral_mib,
                    extended: room.extended.clone(),
                })
                .collect(),
        }
    }

    /// The hold a job's status keeps (a node named twice: the rooms add up).
    pub fn from_status(held: &HeldRoom) -> Hold {
        let mut nodes: BTreeMap<String, Room> = BTreeMap::new();
        for n in &held.nodes {
            let room = nodes.entry(n.node.clone()).or_default();
            room.gpus = room.gpus.saturating_add(n.gpus);
            room.resources = room.resources.plus(&pl::Resources {
                cpu_millis: n.cpu_millis,
                memory_mib: n.memory_mib,
                ephemeral_mib: n.ephemeral_mib,
                ..pl::Resources::ZERO
            });
            for (name, k) in &n.extended {
                let e = room.extended.entry(name.clone()).or_default();
                *e = e.saturating_add(*k);
            }
        }
        Hold {
            provider: held.provider.clone(),
            nodes,
        }
    }

    /// The room placement `p` takes, its workers' CPU and memory as `snap` asks them;
    /// `None` when `snap` does not know the job.
    pub fn of(p: &pl::Placement, snap: &pl::Snapshot) -> Option<Hold> {
        let job = snap.jobs.iter().find(|j| j.id == p.job)?;
        let per_worker = job.worker_resources;
        let extended: BTreeMap<String, u64> = snap
            .extended_resources
            .iter()
            .zip(per_worker.extended)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name.clone(), n))
            .collect();
        let mut nodes: BTreeMap<String, Room> = BTreeMap::new();
        for w in &p.workers {
            let room = nodes.entry(w.node.clone()).or_default();
            room.gpus = room
                .gpus
                .saturating_add(u32::try_from(w.gpus.len()).unwrap_or(u32::MAX));
            room.resources = room.resources.plus(&pl::Resources {
                extended: [0; pl::EXTENDED_SLOTS],
                ..per_worker
            });
            for (name, n) in &extended {
                let held = room.extended.entry(name.clone()).or_default();
                *held = held.saturating_add(*n);
            }
        }
        Some(Hold {
            provider: p.provider.clone(),
            nodes,
        })
    }
}

/// Drops the holds of jobs no longer waiting for evictions (at `now`), takes up those a waiting
/// job's status keeps and `holds` lacks (held by an earlier leader), and takes their room
/// out of `snap`: off each held node's free GPUs and free CPU and memory, less what the
/// job's victims still hold there — live ones in `snap.running`, ended ones by their pods
/// in `fleet` (the members as observed). `jobs` are the round's jobs. Returns the GPUs
/// held.
pub fn apply(
    snap: &mut pl::Snapshot,
    holds: &mut Holds,
    jobs: &[Arc<ComputeJob>],
    fleet: &BTreeMap<String, MemberView>,
    now: i64,
) -> u32 {
    // Victim id → the job it is evicted for: live attempts, and ended ones whose pods
    // are not gone yet ([`super::evictions`]; those hold their GPUs as the member's pods,
    // so nothing of theirs is in `snap.running`).
    let marked = super::evictions(jobs.iter().map(AsRef::as_ref), now);
    let waiting: BTreeSet<&str> = marked.values().map(|e| e.by).collect();
    holds.retain(|job, _| waiting.contains(job.as_str()));
    if waiting.len() > holds.len() {
        // A hold memory lacks (this leader is new): from the job's status. Only jobs
        // with one are named, so a round without such a gap builds no job ids.
        for j in jobs {
            let Some(held) = j.status.as_ref().and_then(|s| s.held.as_ref()) else {
                continue;
            };
            let id = super::job_id(j);
            if waiting.contains(id.as_str()) && !holds.contains_key(&id) {
                holds.insert(id, Hold::from_status(held));
            }
        }
    }
    let ended = ended_attempts(jobs, &marked);
    let mut total = 0u32;
    for (job, hold) in holds.iter() {
        let pods = fleet.get(&hold.provider).map_or(&[][..], |v| v.pods.as_slice());
        let ended_keys = ended.get(job.as_str());
        for (node, room) in &hold.nodes {
            // What the victims still hold on this node: it passes to the job as they go.
            let (gpus, resources) = snap
                .running
                .iter()
                // Only a victim's live attempt that is evicted: a victim placed again
                // while its evicted pods go runs its new attempt for itself.
                .filter(|r| {
                    r.provider == hold.provider && marked.get(&r.job).is_some_and(|e| e.live && e.by == job)
                })
                .fold((0u32, pl::Resources::ZERO), |(g, res), r| {
                    let here = r.gpus.iter().filter(|gpu| &gpu.node == node).count();
                    let held = r.resources.get(node).copied().unwrap_or_default();
                    (
                        g.saturating_add(u32::try_from(here).unwrap_or(u32::MAX)),
                        res.plus(&held),
                    )
                });
            // And the pods of victims whose attempt ended but that are not gone: the
            // snapshot counts them busy already (foreign pods), so the room they will
            // pass on is not taken off the free GPUs a second time.
            let (gpus, resources) = pods
                .iter()
                .filter(|pod| {
                    &pod.node == node
                        && pod
                            .attempt_key
                            .as_ref()
                            .is_some_and(|k| ended_keys.is_some_and(|e| e.contains(k)))
                })
                .fold((gpus, resources), |(g, res), pod| {
                    let mut r = pod.requests.request();
                    for (slot, name) in r.extended.iter_mut().zip(&snap.extended_resources) {
                        *slot = pod.extended.get(name).copied().unwrap_or(0);
                    }
                    (g.saturating_add(pod.gpus), res.plus(&r))
                });
            let want = room.engine(&snap.extended_resources);
            let Some(n) = snap
                .providers
                .iter_mut()
                .filter(|p| p.id == hold.provider)
                .flat_map(|p| p.nodes.iter_mut())
                .find(|n| &n.name == node)
            else {
                continue;
            };
            let extra = room.gpus.saturating_sub(gpus);
            for _ in 0..extra {
                // Free GPUs are the bottom indices, running ones the top: any will do.
                if n.free.pop().is_some() {
                    total += 1;
                }
            }
            if let Some(r) = n.resources.as_mut() {
                r.free = r.free.minus(&want.minus(&resources));
            }
        }
    }
    total
}

/// The attempt keys (`uid/attempt`, as their pods carry them) of the victims whose
/// attempt ended evicted but whose pods are not gone, by the job they were evicted for.
fn ended_attempts<'a>(
    jobs: &[Arc<ComputeJob>],
    marked: &BTreeMap<String, super::Eviction<'a>>,
) -> BTreeMap<&'a str, BTreeSet<String>> {
    let mut out: BTreeMap<&'a str, BTreeSet<String>> = BTreeMap::new();
    // Most rounds have none: then no job id is built.
    if marked.values().all(|e| e.live) {
        return out;
    }
    for j in jobs {
        let Some(e) = marked.get(&super::job_id(j)).filter(|e| !e.live) else {
            continue;
        };
        // The attempt [`super::evictions`] found: the last one, ended, not removed.
        let attempt = j
            .status
            .as_ref()
            .and_then(|s| s.attempts.last())
            .map(|a| a.attempt);
        if let (Some(uid), Some(attempt)) = (j.metadata.uid.as_deref(), attempt) {
            out.entry(e.by)
                .or_default()
                .insert(crate::job::names::attempt_key(uid, attempt));
        }
    }
    out
}

#[cfg(test)]
#[path = "holds_tests.rs"]
mod tests;
