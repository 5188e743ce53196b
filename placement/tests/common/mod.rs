//! Shared test helpers: builders and an invariant checker.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use gpufed_placement::{
    ComputeCapability, Config, Decisions, Interconnect, Job, Micros, Node, Provider, Resources,
    RunningAllocation, Snapshot,
};

pub const GIB: u32 = 1024;
pub const UNIT: Micros = 1_000_000;

pub fn provider(id: &str, model: &str, vram_gib: u32, nodes: u8, gpus: u8, ask: Micros) -> Provider {
    Provider {
        id: id.into(),
        region: "eu".into(),
        healthy: true,
        verified: true,
        reputation: 0.9,
        prices: BTreeMap::from([(model.to_string(), ask)]),
        nodes: (0..nodes)
            .map(|i| {
                Node::new(
                    format!("n{i}"),
                    model,
                    vram_gib * GIB,
                    ComputeCapability::new(8, 0),
                    Some(u32::from(i)),
                    gpus,
                )
            })
            .collect(),
        tenants: None,
    }
}

pub fn job(id: &str, g: u8, w: u16) -> Job {
    Job {
        id: id.into(),
        namespace: "team".into(),
        gpus_per_worker: g,
        workers: w,
        ..Job::default()
    }
}

/// Work of `job` (namespace `ns`, priority 0, started at 1) on provider `a`, node `node`,
/// holding GPUs `gpus`, counting toward disruption budget `budget`.
pub fn running_on_a(
    job: &str,
    ns: &str,
    node: &str,
    gpus: std::ops::Range<u8>,
    budget: Option<&str>,
) -> gpufed_placement::RunningAllocation {
    gpufed_placement::RunningAllocation {
        job: job.into(),
        namespace: ns.into(),
        priority: 0,
        start_time: 1,
        provider: "a".into(),
        gpus: gpus
            .map(|gpu| gpufed_placement::GpuRef {
                node: node.into(),
                gpu,
            })
            .collect(),
        spread_group: None,
        evicting: false,
        budget: budget.map(Into::into),
        ..Default::default()
    }
}

/// Checks every hard rule of a round's decisions against its snapshot.
pub fn check(snap: &Snapshot, d: &Decisions) -> Result<(), String> {
    let jobs: BTreeMap<&str, &Job> = snap.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let providers: BTreeMap<&str, &Provider> = snap.providers.iter().map(|p| (p.id.as_str(), p)).collect();
    // GPUs that may be handed out: free ones, plus those of evicted allocations.
    let mut available: BTreeSet<(String, String, u8)> = BTreeSet::new();
    for p in &snap.providers {
        for n in &p.nodes {
            for &g in &n.free {
                available.insert((p.id.clone(), n.name.clone(), g));
            }
        }
    }
    let evicted: BTreeSet<&str> = d.evictions.iter().map(|e| e.job.as_str()).collect();
    for r in &snap.running {
        if evicted.contains(r.job.as_str()) {
            for g in &r.gpus {
                available.insert((r.provider.clone(), g.node.clone(), g.gpu));
            }
        }
    }
    let mut used: BTreeSet<(String, String, u8)> = BTreeSet::new();
    // CPU and memory taken per node this round, and what may be: free, plus evicted
    // allocations' (the engine keeps those held after the evicting job, so this is loose).
    let mut taken: BTreeMap<(String, String), Resources> = BTreeMap::new();
    let mut room: BTreeMap<(String, String), Resources> = BTreeMap::new();
    for p in &snap.providers {
        for n in &p.nodes {
            if let Some(r) = n.resources {
                room.insert((p.id.clone(), n.name.clone()), r.free.min_each(&r.allocatable));
            }
        }
    }
    for r in snap.running.iter().filter(|r| evicted.contains(r.job.as_str())) {
        for (node, res) in &r.resources {
            if let Some(x) = room.get_mut(&(r.provider.clone(), node.clone())) {
                *x = x.plus(res);
            }
        }
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for pl in &d.placements {
        let job = jobs.get(pl.job.as_str()).ok_or("unknown job")?;
        if !seen.insert(&pl.job) {
            return Err(format!("{} decided twice", pl.job));
        }
        let p = providers.get(pl.provider.as_str()).ok_or("unknown provider")?;
        if let Some(e) = pl.evicts.iter().find(|e| {
            snap.running
                .iter()
                .find(|r| &r.job == *e)
                .is_none_or(|r| r.priority >= job.priority)
        }) {
            return Err(format!("{} evicts {e} without a lower priority", pl.job));
        }
        if pl.workers.len() != usize::from(job.workers) {
            return Err(format!(
                "{} gang size {} != {}",
                pl.job,
                pl.workers.len(),
                job.workers
            ));
        }
        if job.max_price.is_some_and(|m| pl.price > m) {
            return Err(format!("{} pays {} above its ceiling", pl.job, pl.price));
        }
        let ok_provider = (job.providers.is_empty() || job.providers.contains(&p.id))
            && (job.regions.is_empty() || job.regions.contains(&p.region))
            && !job.avoid.contains(&p.id)
            && p.tenants.as_ref().is_none_or(|t| t.contains(&job.namespace))
            && p.healthy
            && (p.verified || !job.verified_only)
            && p.reputation >= job.min_reputation
            && p.prices.contains_key(&pl.model);
        if !ok_provider {
            return Err(format!("{} on a provider it excludes", pl.job));
        }
        let mut domains = BTreeSet::new();
        let mut per_node: BTreeMap<&str, u16> = BTreeMap::new();
        for w in &pl.workers {
            let here = per_node.entry(w.node.as_str()).or_default();
            *here += 1;
            if job.max_workers_per_node > 0 && *here > job.max_workers_per_node {
                return Err(format!(
                    "{} puts {here} workers on {} (at most {})",
                    pl.job, w.node, job.max_workers_per_node
                ));
            }
            let node = p
                .nodes
                .iter()
                .find(|n| n.name == w.node)
                .ok_or("gang split or unknown node")?;
            if w.gpus.len() != usize::from(job.gpus_per_worker) {
                return Err(format!("{} worker with {} GPUs", pl.job, w.gpus.len()));
            }
            let ok_node = node.model == pl.model
                && (node.verified || !job.verified_only)
                && (job.models.is_empty() || job.models.contains(&node.model))
                && node.vram_mib >= job.min_vram_mib
                && node.compute >= job.min_compute
                && (job.interconnect == Interconnect::Any || node.nvlink_domain.is_some())
                && job
                    .node_selector
                    .iter()
                    .all(|(k, v)| node.labels.get(k) == Some(v))
                && gpufed_placement::affinity_matches(&job.node_affinity, &node.labels);
            if !ok_node {
                return Err(format!("{} on node {} that fails its filters", pl.job, node.name));
            }
            domains.insert(node.nvlink_domain);
            let t = taken.entry((p.id.clone(), node.name.clone())).or_default();
            *t = t.plus(&job.worker_resources);
            for &g in &w.gpus {
                let key = (p.id.clone(), node.name.clone(), g);
                if !available.contains(&key) {
                    return Err(format!("{} takes busy GPU {key:?}", pl.job));
                }
                if !used.insert(key.clone()) {
                    return Err(format!("GPU {key:?} allocated twice"));
                }
            }
        }
        if job.interconnect == Interconnect::NvlinkGang && domains.len() != 1 {
            return Err(format!("{} spans NVLink domains", pl.job));
        }
    }
    for (key, t) in &taken {
        if let Some(r) = room.get(key)
            && !t.within(r)
        {
            return Err(format!("node {key:?} gets {t} of work with {r} free"));
        }
    }
    for u in &d.unplaced {
        if !seen.insert(&u.job) {
            return Err(format!("{} both placed and unplaced", u.job));
        }
    }
    if seen.len() != jobs.len() {
        return Err(format!("{} jobs decided, {} queued", seen.len(), jobs.len()));
    }
    Ok(())
}

/// Checks who evicted whom: only jobs that ask for preemption, with it on; only strictly
/// lower priority; never work already being evicted; only the job's own namespace unless
/// the config allows any; each victim once, and listed in `Decisions::evictions` exactly
/// as in its placement.
pub fn check_evictions(snap: &Snapshot, d: &Decisions, cfg: &Config) -> Result<(), String> {
    let jobs: BTreeMap<&str, &Job> = snap.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let mut victims = BTreeSet::new();
    for pl in &d.placements {
        let job = jobs.get(pl.job.as_str()).ok_or("unknown job")?;
        for e in &pl.evicts {
            let r = snap
                .running
                .iter()
                .find(|r| &r.job == e)
                .ok_or(format!("{} evicts unknown {e}", pl.job))?;
            if !cfg.preemption || !job.preempt {
                return Err(format!("{} evicts {e} without leave to preempt", pl.job));
            }
            if r.evicting {
                return Err(format!("{} evicts {e}, already being evicted", pl.job));
            }
            if !cfg.preempt_across_namespaces && r.namespace != job.namespace {
                return Err(format!("{} evicts {e} of another namespace", pl.job));
            }
            if r.priority >= job.priority {
                return Err(format!("{} evicts {e} of no lower priority", pl.job));
            }
            // Work of the job's own namespace, evicted to make room in its GPU cap, may
            // run anywhere (docs/placement.md, "Quotas"); other victims make room on the
            // job's provider.
            let quota_victim = r.namespace == job.namespace
                && snap.quotas.get(&job.namespace).is_some_and(|q| q.gpus.is_some());
            if r.provider != pl.provider && !quota_victim {
                return Err(format!("{} evicts {e} on another provider", pl.job));
            }
            if !victims.insert(e.clone()) {
                return Err(format!("{e} evicted twice"));
            }
        }
    }
    let listed: BTreeSet<String> = d.evictions.iter().map(|e| e.job.clone()).collect();
    if listed != victims || listed.len() != d.evictions.len() {
        return Err(format!(
            "evictions {listed:?} differ from the placements' {victims:?}"
        ));
    }
    // No disruption budget ends the round below its minimum because of this round's
    // evictions (one already short may lose nothing protected).
    for (key, &min) in &snap.budgets {
        let counted = |r: &&RunningAllocation| r.budget.as_ref() == Some(key) && !r.evicting;
        let healthy = snap.running.iter().filter(counted).count();
        let evicted = snap
            .running
            .iter()
            .filter(counted)
            .filter(|r| victims.contains(&r.job))
            .count();
        if evicted > 0 && healthy - evicted < min as usize {
            return Err(format!(
                "budget {key}: {evicted} of {healthy} healthy evicted, minimum {min}"
            ));
        }
    }
    Ok(())
}

/// Checks the namespaces' quotas against a round's placements, in the order they were
/// decided. Each fits its namespace's GPU cap, counting what the namespace held and
/// what the round placed before it, less only the GPUs of the namespace's own work that
/// the placement itself evicts (a victim counts until it has stopped, so the room an
/// earlier placement made was that placement's alone). Spend never passes the spending
/// cap, victims' spend counted.
pub fn check_quotas(snap: &Snapshot, d: &Decisions) -> Result<(), String> {
    let jobs: BTreeMap<&str, &Job> = snap.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let mut held: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    // GPUs of each namespace's work being evicted (earlier rounds' and this one's so far):
    // counted as held until it stops, but going.
    let mut going: BTreeMap<&str, u64> = BTreeMap::new();
    for r in snap.running.iter().filter(|r| r.evicting) {
        *going.entry(r.namespace.as_str()).or_default() += r.gpus.len() as u64;
    }
    for pl in &d.placements {
        let job = jobs.get(pl.job.as_str()).ok_or("unknown job")?;
        let ns = job.namespace.as_str();
        let own_victims: u64 = pl
            .evicts
            .iter()
            .filter_map(|e| snap.running.iter().find(|r| &r.job == e))
            .filter(|r| r.namespace == ns)
            .map(|r| r.gpus.len() as u64)
            .sum();
        let gone = going.entry(ns).or_default();
        *gone += own_victims;
        let gone = *gone;
        let Some(q) = snap.quotas.get(ns) else { continue };
        let gpus: u64 = pl.workers.iter().map(|w| w.gpus.len() as u64).sum();
        let (used, spent) = held
            .entry(ns)
            .or_insert((u64::from(q.used_gpus), q.used_spend_per_hour));
        // Only a job that may preempt makes room by evicting, or takes what is left of
        // the room earlier evictions made.
        let room = if job.preempt { gone } else { 0 };
        if let Some(cap) = q.gpus
            && used.saturating_sub(room) + gpus > u64::from(cap)
        {
            return Err(format!(
                "{} takes {ns} past its cap of {cap} GPUs: {used} held, {gone} being evicted, {gpus} more",
                pl.job
            ));
        }
        *used += gpus;
        *spent = spent.saturating_add(pl.price.saturating_mul(gpus));
        if let Some(cap) = q.spend_per_hour
            && *spent > cap
        {
            return Err(format!(
                "{} takes {ns} to {spent} per hour, past its cap of {cap}",
                pl.job
            ));
        }
    }
    Ok(())
}
