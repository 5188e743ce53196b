//! Hard filters: a job resolved against the fleet, the per-provider and per-pool checks,
//! and the slow path that names the first filter each provider fails.

use std::collections::BTreeMap;

use crate::explain::{Explanation, InvalidJob, Reason};
use crate::index::{Fleet, Group, Pool, Prov};
use crate::labels::{AffinityTerm, affinity_matches, describe_selection};
use crate::snapshot::{ComputeCapability, Interconnect, Job, MAX_GPUS_PER_NODE, Micros, Resources};

/// A job with its names resolved to fleet indices.
#[derive(Debug)]
pub(crate) struct JobSt {
    /// Index in `Snapshot::jobs`.
    pub src: u32,
    /// Accepted model indices (all models when the job names none).
    pub models: Vec<u16>,
    /// Providers passing the provider and region lists, as a bit set; `None` = all.
    pub admitted: Option<Vec<u64>>,
    /// Preferred providers, most preferred first.
    pub preferred: Vec<u32>,
    pub g: u8,
    pub w: u16,
    pub min_vram_mib: u32,
    pub min_compute: ComputeCapability,
    pub interconnect: Interconnect,
    pub max_price: Micros,
    pub min_reputation: f64,
    pub verified_only: bool,
    /// Labels every node must carry (sorted pairs; empty: any node).
    pub node_selector: Vec<(String, String)>,
    /// Required node affinity terms (empty: any node).
    pub node_affinity: Vec<AffinityTerm>,
    /// Workers at most on one node ([`UNCAPPED`]: as many as fit).
    pub per_node: u32,
    /// `req` asks for nothing (kept: the per-node paths ask it for every node).
    pub no_req: bool,
    /// [`JobSt::plain`], kept likewise.
    pub plain: bool,
    /// CPU and memory per worker (zero: none).
    pub req: Resources,
    /// The extended resource slots `req` asks for ([`Resources::extended_mask`]).
    pub ext: u8,
}

/// [`JobSt::per_node`] of a job without a cap.
pub(crate) const UNCAPPED: u32 = u32::MAX;

fn bit(set: &[u64], i: u32) -> bool {
    set.get(i as usize / 64)
        .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

/// Checks a job's own fields.
pub(crate) fn validate(job: &Job) -> Result<(), InvalidJob> {
    if job.gpus_per_worker == 0 || job.gpus_per_worker > MAX_GPUS_PER_NODE {
        return Err(InvalidJob::GpusPerWorker(job.gpus_per_worker));
    }
    if job.workers == 0 {
        return Err(InvalidJob::NoWorkers);
    }
    if !(0.0..=1.0).contains(&job.min_reputation) {
        return Err(InvalidJob::Reputation);
    }
    Ok(())
}

impl JobSt {
    /// Resolves a (valid) job. `tenants`: the providers that admit the job's namespace
    /// ([`tenant_set`]), `None` when no provider restricts its tenants.
    pub fn resolve(fleet: &Fleet, job: &Job, src: u32, tenants: Option<&[u64]>) -> JobSt {
        let models = if job.models.is_empty() {
            (0..fleet.models.len())
                .filter_map(|m| u16::try_from(m).ok())
                .collect()
        } else {
            let mut m: Vec<u16> = job
                .models
                .iter()
                .filter_map(|name| fleet.models.binary_search(name).ok())
                .filter_map(|m| u16::try_from(m).ok())
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        let own =
            (!job.providers.is_empty() || !job.regions.is_empty() || !job.avoid.is_empty()).then(|| {
                let mut set = vec![0u64; fleet.providers.len().div_ceil(64)];
                for (i, p) in fleet.providers.iter().enumerate() {
                    if provider_listed(job, p) && region_listed(job, p) && !avoided(job, p) {
                        set[i / 64] |= 1u64 << (i % 64);
                    }
                }
                set
            });
        let admitted = match (own, tenants) {
            (Some(mut own), Some(t)) => {
                own.iter_mut().zip(t).for_each(|(o, t)| *o &= t);
                Some(own)
            }
            (own, t) => own.or_else(|| t.map(<[u64]>::to_vec)),
        };
        let mut preferred = Vec::new();
        for id in &job.preferred {
            if let Some(p) = fleet.provider_index(id)
                && !preferred.contains(&p)
            {
                preferred.push(p);
            }
        }
        JobSt {
            src,
            models,
            admitted,
            preferred,
            g: job.gpus_per_worker,
            w: job.workers,
            min_vram_mib: job.min_vram_mib,
            min_compute: job.min_compute,
            interconnect: job.interconnect,
            max_price: job.max_price.unwrap_or(Micros::MAX),
            min_reputation: job.min_reputation,
            verified_only: job.verified_only,
            node_selector: job
                .node_selector
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node_affinity: job.node_affinity.clone(),
            per_node: match job.max_workers_per_node {
                0 => UNCAPPED,
                n => u32::from(n),
            },
            req: job.worker_resources,
            ext: job.worker_resources.extended_mask(),
            no_req: job.worker_resources.is_zero(),
            plain: job.worker_resources.is_zero() && job.max_workers_per_node == 0,
        }
    }

    /// Whether a node's free GPUs alone say how many of the job's workers it holds: no
    /// CPU, memory or device requests and no cap per node.
    #[inline]
    pub fn plain(&self) -> bool {
        self.plain
    }

    /// Whether a pool's labels satisfy the job's node selector and node affinity.
    #[inline]
    pub fn labels_ok(&self, pool: &Pool) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| pool.labels.get(k) == Some(v))
            && (self.node_affinity.is_empty() || affinity_matches(&self.node_affinity, &pool.labels))
    }

    /// Provider-level filters (lists, region, health, verification, reputation).
    #[inline]
    pub fn provider_ok(&self, p: &Prov, pi: u32) -> bool {
        self.admitted.as_ref().is_none_or(|s| bit(s, pi))
            && p.healthy
            && (p.verified || !self.verified_only)
            && p.reputation >= self.min_reputation
    }

    /// Provider-level filters on a group's copies of the provider's flags.
    #[inline]
    pub fn group_ok(&self, g: &Group) -> bool {
        g.healthy
            && (g.verified || !self.verified_only)
            && g.reputation >= self.min_reputation
            && self.admitted.as_ref().is_none_or(|s| bit(s, g.provider))
    }

    /// Pool-level filters (verified nodes, VRAM, capability, NVLink, node size, labels,
    /// extended resources the nodes have).
    #[inline]
    pub fn pool_ok(&self, pool: &Pool) -> bool {
        (pool.verified || !self.verified_only)
            && pool.vram_mib >= self.min_vram_mib
            && pool.compute >= self.min_compute
            && (self.interconnect == Interconnect::Any || pool.nvlink)
            && pool.max_node_gpus >= self.g
            && self.labels_ok(pool)
            && self.ext & !pool.extended == 0
    }

    /// Rank of a provider among the preferred ones, with the list length.
    pub fn preferred_rank(&self, pi: u32) -> Option<(usize, usize)> {
        self.preferred
            .iter()
            .position(|&p| p == pi)
            .map(|r| (r, self.preferred.len()))
    }
}

fn provider_listed(job: &Job, p: &Prov) -> bool {
    job.providers.is_empty() || job.providers.contains(&p.id)
}

fn avoided(job: &Job, p: &Prov) -> bool {
    job.avoid.contains(&p.id)
}

/// The providers (a bit set) that take work from namespace `ns`; `None` when no provider
/// restricts its tenants. Computed once per namespace and round, not per job.
pub(crate) fn tenant_set(fleet: &Fleet, ns: &str) -> Option<Vec<u64>> {
    fleet.tenant_policies.then(|| {
        let mut set = vec![0u64; fleet.providers.len().div_ceil(64)];
        for (i, p) in fleet.providers.iter().enumerate() {
            if p.tenants.as_ref().is_none_or(|t| t.contains(ns)) {
                set[i / 64] |= 1u64 << (i % 64);
            }
        }
        set
    })
}

/// Whether the provider takes work from the job's namespace.
fn tenant_admitted(job: &Job, p: &Prov) -> bool {
    p.tenants.as_ref().is_none_or(|t| t.contains(&job.namespace))
}

fn region_listed(job: &Job, p: &Prov) -> bool {
    job.regions.is_empty() || job.regions.contains(&p.region)
}

/// Workers of `g` GPUs that nodes would hold, counting each node's GPUs with `gpus_of`.
fn workers_on(nodes: &[u32], g: u8, gpus_of: impl Fn(u32) -> u32) -> u32 {
    nodes.iter().map(|&n| gpus_of(n) / u32::from(g)).sum()
}

/// A pool predicate of the explanation path.
type PoolFilter<'a> = dyn Fn(&Pool) -> bool + 'a;

/// The first filter provider `pi` fails for `job`.
pub(crate) fn provider_reason(fleet: &Fleet, job: &Job, js: &JobSt, pi: u32) -> Reason {
    let p = &fleet.providers[pi as usize];
    if !provider_listed(job, p) {
        return Reason::ProviderNotAllowed;
    }
    if !region_listed(job, p) {
        return Reason::RegionNotAllowed;
    }
    if avoided(job, p) {
        return Reason::Avoided;
    }
    if !tenant_admitted(job, p) {
        return Reason::TenantNotAdmitted;
    }
    if !p.healthy {
        return Reason::Unhealthy;
    }
    if js.verified_only && !p.verified {
        return Reason::NotVerified;
    }
    if p.reputation < js.min_reputation {
        let min_permille = (js.min_reputation * 1000.0).round() as u16;
        return Reason::LowReputation { min_permille };
    }
    let groups: Vec<u32> = p
        .groups
        .clone()
        .filter(|&g| {
            let gr = &fleet.groups[g as usize];
            gr.ask.is_some() && js.models.binary_search(&gr.model).is_ok()
        })
        .collect();
    if groups.is_empty() {
        return Reason::NoAcceptedModel {
            models: job.models.join("/"),
        };
    }
    let pools = |groups: &[u32]| -> Vec<u32> {
        groups
            .iter()
            .flat_map(|&g| fleet.groups[g as usize].pools.clone())
            .collect()
    };
    let mut pools = pools(&groups);
    let mut narrow = |keep: &dyn Fn(&Pool) -> bool, reason: Reason| -> Result<(), Reason> {
        pools.retain(|&p| keep(&fleet.pools[p as usize]));
        if pools.is_empty() { Err(reason) } else { Ok(()) }
    };
    let selector = || describe_selection(js.node_selector.iter().map(|(k, v)| (k, v)), &js.node_affinity);
    let steps: [(&PoolFilter<'_>, Reason); 8] = [
        (&|p: &Pool| p.verified || !js.verified_only, Reason::NotVerified),
        (
            &|p: &Pool| p.vram_mib >= js.min_vram_mib,
            Reason::Vram {
                min_mib: js.min_vram_mib,
            },
        ),
        (
            &|p: &Pool| p.compute >= js.min_compute,
            Reason::Compute { min: js.min_compute },
        ),
        (
            &|p: &Pool| js.interconnect == Interconnect::Any || p.nvlink,
            Reason::NoNvlink,
        ),
        (
            &|p: &Pool| js.labels_ok(p),
            Reason::NodeSelector { selector: selector() },
        ),
        (
            &|p: &Pool| {
                let g = &fleet.groups[p.group as usize];
                g.price.is_some_and(|p| p <= js.max_price)
            },
            Reason::Price { max: js.max_price },
        ),
        (
            &|p: &Pool| p.max_node_gpus >= js.g,
            Reason::NodeTooSmall {
                gpus_per_worker: js.g,
            },
        ),
        (
            &|p: &Pool| js.no_req || p.nodes.iter().any(|&n| fleet.node_capacity(n, js) > 0),
            Reason::WorkerTooLarge {
                per_worker: js.req.describe(&fleet.extended_names),
            },
        ),
    ];
    for (keep, reason) in steps {
        if let Err(r) = narrow(keep, reason) {
            return r;
        }
    }
    let gpus = u32::from(js.g) * u32::from(js.w);
    // Workers per unit (a group, or an NVLink domain for gang-wide NVLink): on an empty
    // fleet; on free GPUs, reserved ones included, with CPU and memory; by free GPUs only.
    // The fourth count: on an empty fleet without the job's cap per node.
    let counted = |nodes: &[u32]| -> [u32; 4] {
        let mut c = [0u32; 4];
        for &n in nodes {
            let node = &fleet.nodes[n as usize];
            c[0] += fleet.node_capacity(n, js);
            c[1] += fleet.node_workers(n, js);
            c[2] += (node.free.count_ones() / u32::from(js.g)).min(js.per_node);
            c[3] += (u32::from(node.gpus) / u32::from(js.g)).min(node.alloc.workers(&js.req));
        }
        c
    };
    let units: Vec<[u32; 4]> = if js.interconnect == Interconnect::NvlinkGang {
        crate::nvlink::domains_among(fleet, &pools)
            .map(|d| counted(&d))
            .collect()
    } else {
        let mut by_group: BTreeMap<u32, [u32; 4]> = BTreeMap::new();
        for &p in &pools {
            let pool = &fleet.pools[p as usize];
            let c = if js.plain() {
                // The bucket counts answer without visiting the nodes.
                let g = usize::from(js.g);
                let all: u32 = (g..pool.size_counts.len())
                    .map(|k| pool.size_counts[k] * u32::try_from(k / g).unwrap_or(0))
                    .sum();
                let free = fleet.pool_free_workers(p, js.g)
                    + workers_on(&pool.reserved, js.g, |n| {
                        fleet.nodes[n as usize].free.count_ones()
                    });
                [all, free, free, all]
            } else {
                counted(&pool.nodes)
            };
            let e = by_group.entry(pool.group).or_default();
            for (sum, x) in e.iter_mut().zip(c) {
                *sum += x;
            }
        }
        by_group.into_values().collect()
    };
    let w = u32::from(js.w);
    if !units.iter().any(|u| u[0] >= w) {
        return if js.per_node != UNCAPPED && units.iter().any(|u| u[3] >= w) {
            Reason::TooFewNodes {
                workers: js.w,
                per_node: u16::try_from(js.per_node).unwrap_or(u16::MAX),
            }
        } else if js.interconnect == Interconnect::NvlinkGang {
            Reason::NvlinkDomainTooSmall { gpus }
        } else {
            Reason::TooSmall { gpus }
        };
    }
    if units.iter().any(|u| u[1] >= w) {
        Reason::Reserved
    } else if units.iter().any(|u| u[2] >= w) {
        Reason::NodeResourcesBusy {
            per_worker: js.req.describe(&fleet.extended_names),
        }
    } else {
        Reason::Busy { gpus }
    }
}

/// Explains why `job` fits no provider. `protected`: providers where evicting
/// lower-priority work would have made room but for a disruption budget (named).
pub(crate) fn explain(
    fleet: &Fleet,
    job: &Job,
    js: &JobSt,
    protected: &BTreeMap<u32, String>,
) -> Explanation {
    let mut counts: BTreeMap<Reason, usize> = BTreeMap::new();
    for pi in 0..fleet.providers.len() {
        let pi = u32::try_from(pi).unwrap_or(u32::MAX);
        let reason = match (provider_reason(fleet, job, js, pi), protected.get(&pi)) {
            (Reason::Busy { .. } | Reason::Reserved, Some(budgets)) => Reason::Protected {
                budgets: budgets.clone(),
            },
            (reason, _) => reason,
        };
        *counts.entry(reason).or_default() += 1;
    }
    Explanation::from_reasons(fleet.providers.len(), counts)
}
