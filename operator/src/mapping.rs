//! Pure: the hub's objects and the fleet observation → the placement engine's snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::JobPhase;
use gpufed_api::{ComputeJob, GpuProvider, formats};
use gpufed_placement as pl;
use kube::ResourceExt;

use crate::fleet::MemberView;
use crate::job::names;

pub mod holds;
mod job;
pub mod resources;
pub mod sanitize;
pub mod spec_facts;
pub mod tenants;
mod tier;

use job::job_snapshot;
pub use tier::is_consumer;

/// Reputation assumed for a provider without a measured score.
pub const DEFAULT_REPUTATION: f64 = 0.5;

/// Job id in the snapshot.
pub fn job_id(job: &ComputeJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// The jobs of a round by their snapshot id ([`job_id`]): a decision names its job by id,
/// and a round of thousands of decisions must not scan the job list for each.
pub struct JobIndex<'a>(std::collections::HashMap<String, &'a Arc<ComputeJob>>);

impl<'a> JobIndex<'a> {
    /// Indexes `jobs`.
    pub fn new(jobs: &'a [Arc<ComputeJob>]) -> Self {
        JobIndex(jobs.iter().map(|j| (job_id(j), j)).collect())
    }

    /// The job with snapshot id `id`.
    pub fn get(&self, id: &str) -> Option<&'a Arc<ComputeJob>> {
        self.0.get(id).copied()
    }
}

/// Whether a job waits for placement: not suspended, deleted, placed or finished, its
/// spec valid — the cross-field rules and a pod template that builds (the job controller
/// says `Stalled=InvalidSpec` or `InvalidTemplate` on the others) — and its checkpoint
/// credentials readable when last checked.
pub fn is_queued(job: &ComputeJob) -> bool {
    let st = job.status.as_ref();
    !job.spec.suspend
        && job.metadata.deletion_timestamp.is_none()
        && st.is_none_or(|s| {
            s.placement.is_none() && !matches!(s.phase, Some(JobPhase::Succeeded | JobPhase::Failed))
        })
        && !awaits_credentials(job)
        && spec_facts::of(job).valid
}

/// Whether the job controller found the job's checkpoint credentials unreadable at its
/// last check: it stays out of placement until a check reads them.
fn awaits_credentials(job: &ComputeJob) -> bool {
    job.status
        .as_ref()
        .and_then(|s| gpufed_api::conditions::find(&s.conditions, gpufed_api::conditions::types::STALLED))
        .is_some_and(|c| {
            c.status == gpufed_api::common::ConditionStatus::True
                && c.reason == crate::job::plan::CREDENTIALS_UNAVAILABLE
        })
}

/// Whether the job's phase is final (Succeeded or Failed).
pub fn is_finished(job: &ComputeJob) -> bool {
    matches!(
        job.status.as_ref().and_then(|s| s.phase),
        Some(JobPhase::Succeeded | JobPhase::Failed)
    )
}

/// Stopped (no live attempt) and its usage metered in full (or nothing to meter, or no
/// settlement): its record may go. Controllers delete jobs, and let deleted ones go, only
/// then — otherwise the unmetered tail of the last attempt would be lost.
pub fn stopped_and_metered(job: &ComputeJob, settles: bool) -> bool {
    let st = job.status.clone().unwrap_or_default();
    // A finished job keeps its last placement for the record; its attempt has ended.
    if st.placement.is_some() && !is_finished(job) {
        return false;
    }
    let used = st.usage.as_ref().map_or(0, |u| u.gpu_seconds);
    !settles || used == 0 || st.billing.as_ref().is_some_and(|b| b.metered_gpu_seconds >= used)
}

/// Whether a job's placement holds GPUs now.
pub fn is_live(job: &ComputeJob) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.placement.is_some() && !matches!(s.phase, Some(JobPhase::Succeeded | JobPhase::Failed))
    })
}

fn provider_ok(p: &GpuProvider) -> bool {
    let conds = p
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    // A provider caught lying in a challenge gets no new jobs at all, verified or not.
    let caught = conditions::find(conds, types::VERIFIED)
        .is_some_and(|c| c.reason == crate::verification::plan::REASON_CHALLENGE_FAILED);
    conditions::is_true(conds, types::READY) && !p.spec.paused && !p.spec.drain && !caught
}

/// GPUs each worker of a live attempt holds: as placed (its GPUs spread over its workers),
/// not as the spec says now — a spec edited after placement (API servers before 1.25 drop
/// the rule that freezes the gang shape) would make its nodes look freer, or busier, than
/// they are.
fn placed_gpus_per_worker(job: &ComputeJob, placement: &gpufed_api::job_status::Placement) -> u32 {
    u32::try_from(placement.workers.len())
        .ok()
        .and_then(|workers| placement.gpus.checked_div(workers))
        .unwrap_or(job.spec.gpus_per_worker)
}

/// Builds the snapshot for one round.
pub fn snapshot(
    jobs: &[Arc<ComputeJob>],
    providers: &[Arc<GpuProvider>],
    fleet: &BTreeMap<String, MemberView>,
) -> pl::Snapshot {
    snapshot_checked(jobs, providers, fleet).0
}

/// Builds the snapshot for one round, and says what of the members' reports it left out
/// and why ([`sanitize`]: one provider's bad report must not stop the whole market).
pub fn snapshot_checked(
    jobs: &[Arc<ComputeJob>],
    providers: &[Arc<GpuProvider>],
    fleet: &BTreeMap<String, MemberView>,
) -> (pl::Snapshot, Vec<sanitize::Finding>) {
    let live: Vec<&ComputeJob> = jobs.iter().map(AsRef::as_ref).filter(|j| is_live(j)).collect();
    let live_keys: std::collections::BTreeSet<String> = live
        .iter()
        .filter_map(|j| {
            Some(names::attempt_key(
                &j.uid()?,
                j.status.as_ref()?.placement.as_ref()?.attempt,
            ))
        })
        .collect();
    // Each model once, sorted: a tier's models are picked from it per queued job.
    let all_models: Vec<String> = fleet
        .values()
        .flat_map(|v| v.nodes.iter().map(|n| n.model.as_str()))
        .collect::<std::collections::BTreeSet<&str>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut snap = pl::Snapshot::default();
    // A job whose victims are still being evicted waits for them: placed now, it would not
    // fit (their GPUs are still busy) and would evict more work for the same room.
    let evicting = evictions(jobs.iter().map(AsRef::as_ref), crate::time::now());
    let waiting: std::collections::BTreeSet<&str> = evicting.values().map(|e| e.by).collect();
    let queued: Vec<&Arc<ComputeJob>> = jobs
        .iter()
        .filter(|j| is_queued(j) && !waiting.contains(job_id(j).as_str()))
        .collect();
    let gpu_resources: std::collections::BTreeSet<&str> =
        providers.iter().map(|p| p.spec.resource_name.as_str()).collect();
    let facts: Vec<Arc<spec_facts::SpecFacts>> = queued.iter().map(|j| spec_facts::of(j)).collect();
    let slots = resources::Slots::choose(facts.iter().map(|f| &f.ask), &gpu_resources);
    snap.jobs = queued
        .iter()
        .zip(&facts)
        .map(|(j, f)| job_snapshot(j, &all_models, f, f.ask.engine(&slots)))
        .collect();
    snap.extended_resources = slots.names().to_vec();
    // Nodes carry only the labels some queued job selects on: the engine pools nodes by
    // their labels, and labels no job asks about would split pools for nothing.
    let selected: std::collections::BTreeSet<&str> = snap
        .jobs
        .iter()
        .flat_map(|j| {
            let terms = j.node_affinity.iter().flatten();
            j.node_selector
                .keys()
                .chain(terms.map(|r| &r.key))
                .map(String::as_str)
        })
        .collect();
    let mut findings = Vec::new();
    for p in providers.iter().filter(|p| provider_ok(p)) {
        let name = p.name_any();
        let Some(view) = fleet.get(&name) else {
            continue;
        };
        let build = |view: &MemberView| provider_snapshot(p, view, &live, &live_keys, &selected, &slots);
        if let Some(mut part) = sanitize::part(&name, view, build, &mut findings) {
            snap.providers.append(&mut part.providers);
            snap.running.append(&mut part.running);
        }
    }
    (snap, findings)
}

/// Keeps each queued job of `snap` off the providers that forbade one of its attempts
/// recently ([`crate::job::plan::avoided_providers`]): placed there again, it would hold
/// GPUs until the same refusal ends it again.
pub fn avoid_forbidding(snap: &mut pl::Snapshot, jobs: &[Arc<ComputeJob>], now: i64) {
    let avoid: BTreeMap<String, Vec<String>> = jobs
        .iter()
        .map(|j| {
            (
                job_id(j),
                crate::job::plan::avoided_providers(j.status.as_ref(), now),
            )
        })
        .filter(|(_, avoid)| !avoid.is_empty())
        .collect();
    for job in &mut snap.jobs {
        if let Some(a) = avoid.get(&job.id) {
            job.avoid.clone_from(a);
        }
    }
}

/// When a live attempt started, for eviction order (younger work goes first): the
/// gang's start, else when it was placed; 0 when unknown.
pub fn start_time(placement: &gpufed_api::job_status::Placement) -> u64 {
    placement
        .running_time
        .as_deref()
        .and_then(crate::time::parse)
        .or_else(|| crate::time::parse(&placement.placed_time))
        .map_or(0, |t| u64::try_from(t).unwrap_or(0))
}

/// How long the pods of an attempt evicted for another job may take to go before that job
/// stops waiting for them (an unreachable provider's pods are fenced only when it answers
/// again; the job may fit elsewhere meanwhile).
pub const EVICTION_GRACE_SECS: i64 = 120;

/// A victim's eviction, as [`evictions`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eviction<'a> {
    /// The job (id) it is evicted for.
    pub by: &'a str,
    /// Whether the attempt evicted is the victim's live one (its GPUs are in the round's
    /// running work); otherwise it ended and its pods are not gone yet — and a live attempt
    /// the victim may have again since is not what passes to the job evicting it.
    pub live: bool,
}

/// Victim job id → its [`Eviction`]: live attempts marked for eviction, and attempts that
/// ended evicted (`preemptedBy`) whose pods are not gone yet, for [`EVICTION_GRACE_SECS`]
/// after they ended — also when the victim has been placed again meanwhile. Between a
/// victim's status saying its attempt ended and its pods being gone its GPUs are still
/// busy: the job evicting it must go on waiting — and holding its room ([`holds`]) — or a
/// round in between hands the free part of that room to other work, which the preemptor
/// then evicts too once the victim's pods are gone.
pub fn evictions<'a>(
    jobs: impl IntoIterator<Item = &'a ComputeJob>,
    now: i64,
) -> BTreeMap<String, Eviction<'a>> {
    jobs.into_iter()
        .filter_map(|j| {
            let st = j.status.as_ref()?;
            let marked = is_live(j)
                .then(|| st.placement.as_ref()?.preempted.as_ref())
                .flatten();
            let eviction = match marked {
                Some(m) => Eviction {
                    by: m.by.as_str(),
                    live: true,
                },
                None => {
                    // The cheap tests first: every round reads every job.
                    let last = st.attempts.last().filter(|a| !a.removed)?;
                    let by = last.preempted_by.as_deref()?;
                    let ended = crate::time::parse(&last.end_time)?;
                    if now.saturating_sub(ended) > EVICTION_GRACE_SECS {
                        return None;
                    }
                    Eviction { by, live: false }
                }
            };
            Some((job_id(j), eviction))
        })
        .collect()
}

fn provider_snapshot(
    p: &GpuProvider,
    view: &MemberView,
    live: &[&ComputeJob],
    live_keys: &std::collections::BTreeSet<String>,
    selected: &std::collections::BTreeSet<&str>,
    slots: &resources::Slots,
) -> (pl::Provider, Vec<pl::RunningAllocation>) {
    let name = p.name_any();
    let status = p.status.as_ref();
    // Verified GPUs count only when the provider's bonded stake covers them (docs/trust.md).
    let verified = status.is_some_and(|s| {
        conditions::is_true(&s.conditions, types::VERIFIED)
            && conditions::find(&s.conditions, types::STAKED)
                .is_none_or(|c| c.status == ConditionStatus::True)
    });
    // `verifiedOnly` jobs use only nodes whose every GPU verified, not any node of a
    // provider with one verified GPU.
    let verified_nodes: std::collections::BTreeSet<&str> = status
        .and_then(|s| s.verification.as_ref())
        .map(|v| v.verified_nodes.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let reputation = status
        .and_then(|s| s.reputation.as_ref())
        .and_then(|r| formats::parse_decimal(&r.score).ok())
        .map_or(DEFAULT_REPUTATION, |micros| {
            (micros as f64 / 100_000_000.0).clamp(0.0, 1.0)
        });
    let prices = p
        .spec
        .prices
        .iter()
        .filter_map(|pr| {
            Some((
                pr.model.clone(),
                formats::parse_decimal(&pr.price_per_gpu_hour).ok()?,
            ))
        })
        .collect();
    let domains: BTreeMap<&str, u32> = view
        .nodes
        .iter()
        .filter_map(|n| n.nvlink_domain.as_deref())
        .enumerate()
        .map(|(i, d)| (d, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    // GPUs held per node: live gpufed placements (pods may not exist yet) and foreign pods.
    let mut held: BTreeMap<String, u32> = BTreeMap::new();
    // CPU, memory and extended resources gpufed's workers hold beside them (the member
    // reports the others').
    let mut held_res = resources::Held::default();
    let mut running = Vec::new();
    for job in live.iter().filter(|j| {
        j.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|pl| pl.provider == name)
    }) {
        let Some(placement) = job.status.as_ref().and_then(|s| s.placement.as_ref()) else {
            continue;
        };
        let mut gpus = Vec::new();
        // CPU and memory per worker are not recorded with the placement: the spec's.
        let per_worker = spec_facts::of(job).ask.engine(slots);
        for w in &placement.workers {
            held_res.add(&w.node, per_worker);
            let taken = held.entry(w.node.clone()).or_default();
            for _ in 0..placed_gpus_per_worker(job, placement) {
                *taken += 1;
                gpus.push((w.node.clone(), *taken));
            }
        }
        let alloc = pl::RunningAllocation {
            job: job_id(job),
            namespace: job.namespace().unwrap_or_default(),
            priority: i32::try_from(job.spec.priority).unwrap_or(i32::MAX),
            start_time: start_time(placement),
            provider: name.clone(),
            gpus: Vec::new(),
            spread_group: job.spec.placement.spread.as_ref().map(|s| s.group.clone()),
            evicting: placement.preempted.is_some(),
            budget: None, // set by `service::budget::apply`, which knows the services
            resources: resources::by_node(placement.workers.iter().map(|w| w.node.as_str()), per_worker),
        };
        running.push((alloc, gpus));
    }
    for pod in view
        .pods
        .iter()
        .filter(|pod| pod.attempt_key.as_ref().is_none_or(|k| !live_keys.contains(k)))
    {
        // Reported by the member: saturate, a hostile count must not overflow.
        let taken = held.entry(pod.node.clone()).or_default();
        *taken = taken.saturating_add(pod.gpus);
        held_res.add_pod(&pod.node, &pod.requests, &pod.extended, slots);
    }
    let mut nodes = Vec::new();
    let mut sizes = BTreeMap::new();
    // Nodes whose CPU and memory the engine counts.
    let mut limited = std::collections::BTreeSet::new();
    // Nodes whose taints the workers do not tolerate are not for sale
    // (`provider::plan::withhold_tainted` says so in the provider's status).
    let tolerations = p.spec.effective_tolerations();
    for n in view
        .nodes
        .iter()
        .filter(|n| n.ready && n.untolerated(&tolerations).is_empty())
    {
        let gpus = u8::try_from(n.allocatable.min(u32::from(pl::MAX_GPUS_PER_NODE)))
            .unwrap_or(pl::MAX_GPUS_PER_NODE);
        let busy = held.get(&n.name).copied().unwrap_or(0).min(u32::from(gpus));
        let free = gpus - u8::try_from(busy).unwrap_or(gpus);
        let domain = n.nvlink_domain.as_deref().and_then(|d| domains.get(d).copied());
        let mut node = pl::Node::new(
            &n.name,
            &n.model,
            n.memory_mib,
            pl::ComputeCapability::new(n.compute.0, n.compute.1),
            domain,
            gpus,
        );
        node.free = (0..free).collect();
        node.verified = verified_nodes.contains(n.name.as_str());
        node.labels = n
            .labels
            .iter()
            .filter(|(k, _)| selected.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        node.resources = held_res.node(n, slots);
        if node.resources.is_some() {
            limited.insert(n.name.as_str());
        }
        sizes.insert(n.name.clone(), gpus);
        nodes.push(node);
    }
    // Running GPUs get the top indices of their node, free ones the bottom.
    let running = running
        .into_iter()
        .map(|(alloc, gpus)| pl::RunningAllocation {
            gpus: gpus
                .into_iter()
                .filter_map(|(node, k)| {
                    let size = u32::from(*sizes.get(&node)?);
                    Some(pl::GpuRef {
                        gpu: u8::try_from(size.checked_sub(k)?).ok()?,
                        node,
                    })
                })
                .collect(),
            // What it holds on nodes the engine counts CPU and memory of.
            resources: alloc
                .resources
                .into_iter()
                .filter(|(node, _)| limited.contains(node.as_str()))
                .collect(),
            ..alloc
        })
        .collect();
    let provider = pl::Provider {
        id: name,
        region: p.spec.region.clone(),
        healthy: true,
        verified,
        reputation,
        prices,
        nodes,
        tenants: None,
    };
    (provider, running)
}

#[cfg(test)]
mod affinity_tests;
#[cfg(test)]
mod placed_gpus_tests;
#[cfg(test)]
mod tests;
