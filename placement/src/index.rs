//! The fleet index: providers → (provider, model) groups → pools of identical nodes,
//! each pool bucketing its nodes by free GPU count, updated incrementally.
//!
//! A pool is the set of a provider's nodes with the same model, VRAM, compute capability
//! and NVLink presence, so one pool check answers a filter for all its nodes. Within a
//! pool, `buckets[k]` holds the nodes with exactly `k` free, unreserved GPUs; capacity
//! for a worker of `g` GPUs is `Σ_{k≥g} |buckets[k]| × ⌊k/g⌋`. Reserved nodes sit in no
//! bucket, so no other job sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::market::{MarketParams, market_price};
use crate::resources::per_free_gpu;
use crate::snapshot::{ComputeCapability, MAX_GPUS_PER_NODE, Micros, Resources, Snapshot};

/// Marks a node that sits in no bucket.
const NO_SLOT: u32 = u32::MAX;

/// CPU and memory of a node that reports none: never the limit.
pub(crate) const UNLIMITED: Resources = Resources {
    cpu_millis: u64::MAX,
    memory_mib: u64::MAX,
    ephemeral_mib: u64::MAX,
    extended: [u64::MAX; crate::snapshot::EXTENDED_SLOTS],
};

/// Errors in a snapshot that make the whole round meaningless.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Two providers share an id.
    #[error("duplicate provider id {0:?}")]
    DuplicateProvider(String),
    /// Two nodes of one provider share a name.
    #[error("provider {provider:?}: duplicate node {node:?}")]
    DuplicateNode {
        /// Provider id.
        provider: String,
        /// Node name.
        node: String,
    },
    /// A node has 0 or more than 64 GPUs, or lists a free GPU it does not have.
    #[error("provider {provider:?}: node {node:?} has an invalid GPU count or free list")]
    BadNode {
        /// Provider id.
        provider: String,
        /// Node name.
        node: String,
    },
    /// Reputation is not a number within 0..=1.
    #[error("provider {0:?}: reputation must be within 0..=1")]
    BadReputation(String),
    /// A running allocation names a GPU that does not exist, is free, or is held twice.
    #[error("running allocation of job {0:?} names an unknown, free or shared GPU")]
    BadAllocation(String),
}

/// A provider, resolved.
#[derive(Debug)]
pub(crate) struct Prov {
    pub id: String,
    pub region: String,
    pub healthy: bool,
    pub verified: bool,
    pub reputation: f64,
    pub groups: Range<u32>,
    /// Namespaces it takes new work from (`None`: any).
    pub tenants: Option<BTreeSet<String>>,
}

/// All nodes of one model in one provider; the unit of pricing.
#[derive(Debug)]
pub(crate) struct Group {
    pub provider: u32,
    pub model: u16,
    pub ask: Option<Micros>,
    pub total: u32,
    pub busy: u32,
    /// Market price now (`None` when not for sale); kept in step with `busy`.
    pub price: Option<Micros>,
    /// Copies of the provider's flags, so the hot loop reads one array.
    pub healthy: bool,
    pub verified: bool,
    pub reputation: f64,
    pub pools: Range<u32>,
    /// NVLink domains of the group's nodes (empty without NVLink), by domain id. A domain
    /// is the group's, not a pool's: the nodes of one NVLink fabric may differ in what
    /// sets pools apart (verification, labels, extended resources), and a job uses those
    /// of its nodes whose pool it passes ([`crate::nvlink::DomainFilter`]).
    pub domains: Vec<Vec<u32>>,
}

/// Nodes of one group with identical VRAM, capability, NVLink presence, verification and
/// selectable labels.
#[derive(Debug)]
pub(crate) struct Pool {
    pub group: u32,
    pub vram_mib: u32,
    pub compute: ComputeCapability,
    pub nvlink: bool,
    /// Its nodes' GPUs all passed verification.
    pub verified: bool,
    /// Its nodes' selectable labels (all the same).
    pub labels: BTreeMap<String, String>,
    pub max_node_gpus: u8,
    /// Offset of this pool's bucket sizes in [`Fleet::counts`] (`max_node_gpus + 1` of them).
    pub counts_at: u32,
    pub buckets: Vec<Vec<u32>>,
    pub nodes: Vec<u32>,
    /// Nodes by GPU count (`size_counts[k]` nodes have `k` GPUs), free or not.
    pub size_counts: Vec<u32>,
    /// Reserved nodes of this pool.
    pub reserved: Vec<u32>,
    /// No node of the pool has less CPU or memory free per free GPU than this
    /// ([`UNLIMITED`] when none reports any). Lowered as nodes change, never raised within
    /// a round: while a job asks at most this per GPU, its GPUs alone decide how many
    /// workers a node holds, and the bucket counts answer.
    pub res_floor: Resources,
    /// Bit `i`: its nodes have some of extended resource slot `i` (all the same: nodes
    /// that differ sit in different pools, so a job asking for a resource skips the
    /// pools without it whole and the fast path answers in those with it).
    pub extended: u8,
}

/// One node, resolved.
#[derive(Debug)]
pub(crate) struct NodeSt {
    pub name: String,
    pub pool: u32,
    pub gpus: u8,
    pub free: u64,
    pub slot: u32,
    pub reserved_for: Option<u32>,
    /// CPU and memory when empty, and free now ([`UNLIMITED`] both when not reported).
    pub alloc: Resources,
    pub avail: Resources,
}

/// The whole indexed fleet.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    pub models: Vec<String>,
    pub providers: Vec<Prov>,
    pub groups: Vec<Group>,
    pub pools: Vec<Pool>,
    pub nodes: Vec<NodeSt>,
    /// Groups per model, cheapest ask first (unpriced last), ties by index.
    pub groups_by_model: Vec<Vec<u32>>,
    /// Bucket sizes of all pools, flat (see [`Pool::counts_at`]).
    pub counts: Vec<u32>,
    pub max_ask: Micros,
    pub market: MarketParams,
    /// Some provider takes work from some namespaces only: every job's admitted set
    /// must be computed.
    pub tenant_policies: bool,
    /// Names of the extended resource slots, for explanations.
    pub extended_names: Vec<String>,
}

/// Bit mask of GPU indices.
fn mask_of(gpus: impl IntoIterator<Item = u8>) -> u64 {
    gpus.into_iter().fold(0, |m, g| m | (1u64 << g))
}

fn idx(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Fleet {
    /// Indexes the providers of a snapshot (sorted by id, nodes by name).
    pub fn build(snap: &Snapshot, market: MarketParams) -> Result<Fleet, SnapshotError> {
        let mut order: Vec<usize> = (0..snap.providers.len()).collect();
        order.sort_by(|&a, &b| snap.providers[a].id.cmp(&snap.providers[b].id));
        let models: BTreeSet<&str> = snap
            .providers
            .iter()
            .flat_map(|p| p.nodes.iter().map(|n| n.model.as_str()))
            .collect();
        let models: Vec<String> = models.into_iter().map(str::to_owned).collect();
        let mut fleet = Fleet {
            groups_by_model: vec![Vec::new(); models.len()],
            models,
            market,
            tenant_policies: snap.providers.iter().any(|p| p.tenants.is_some()),
            extended_names: snap.extended_resources.clone(),
            ..Fleet::default()
        };
        let mut last_id: Option<&str> = None;
        for &pi in &order {
            let p = &snap.providers[pi];
            if last_id == Some(p.id.as_str()) {
                return Err(SnapshotError::DuplicateProvider(p.id.clone()));
            }
            last_id = Some(&p.id);
            if !(0.0..=1.0).contains(&p.reputation) {
                return Err(SnapshotError::BadReputation(p.id.clone()));
            }
            let prov_idx = idx(fleet.providers.len());
            let groups_start = idx(fleet.groups.len());
            // model → pool key → node indices (into p.nodes)
            type PoolKey<'n> = (
                u32,
                ComputeCapability,
                bool,
                bool,
                &'n BTreeMap<String, String>,
                u8,
            );
            let mut by_model: BTreeMap<u16, BTreeMap<PoolKey<'_>, Vec<usize>>> = BTreeMap::new();
            // Nodes by name: pools come out sorted, duplicates sit side by side.
            let mut by_name: Vec<usize> = (0..p.nodes.len()).collect();
            by_name.sort_unstable_by(|&a, &b| p.nodes[a].name.cmp(&p.nodes[b].name));
            for (i, &ni) in by_name.iter().enumerate() {
                let n = &p.nodes[ni];
                let bad = || SnapshotError::BadNode {
                    provider: p.id.clone(),
                    node: n.name.clone(),
                };
                if i > 0 && p.nodes[by_name[i - 1]].name == n.name {
                    return Err(SnapshotError::DuplicateNode {
                        provider: p.id.clone(),
                        node: n.name.clone(),
                    });
                }
                if n.gpus == 0 || n.gpus > MAX_GPUS_PER_NODE {
                    return Err(bad());
                }
                let free = n.free.iter().try_fold(0u64, |m, &g| {
                    let bit = 1u64.checked_shl(u32::from(g)).filter(|_| g < n.gpus)?;
                    (m & bit == 0).then_some(m | bit)
                });
                if free.is_none() {
                    return Err(bad());
                }
                let model = u16::try_from(fleet.models.binary_search(&n.model).unwrap_or(0)).unwrap_or(0);
                by_model
                    .entry(model)
                    .or_default()
                    .entry((
                        n.vram_mib,
                        n.compute,
                        n.nvlink_domain.is_some(),
                        n.verified,
                        &n.labels,
                        n.resources.map_or(u8::MAX, |r| r.allocatable.extended_mask()),
                    ))
                    .or_default()
                    .push(ni);
            }
            for (model, pools) in by_model {
                let group_idx = idx(fleet.groups.len());
                let ask = p.prices.get(&fleet.models[usize::from(model)]).copied();
                if let Some(a) = ask {
                    fleet.max_ask = fleet.max_ask.max(a);
                }
                let pools_start = idx(fleet.pools.len());
                let (mut total, mut busy) = (0u32, 0u32);
                let mut domains: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
                for ((vram_mib, compute, nvlink, verified, labels, extended), members) in pools {
                    let pool_idx = idx(fleet.pools.len());
                    let max_node_gpus = members.iter().map(|&m| p.nodes[m].gpus).max().unwrap_or(0);
                    let mut pool = Pool {
                        group: group_idx,
                        vram_mib,
                        compute,
                        nvlink,
                        verified,
                        labels: labels.clone(),
                        max_node_gpus,
                        counts_at: idx(fleet.counts.len()),
                        buckets: vec![Vec::new(); usize::from(max_node_gpus) + 1],
                        nodes: Vec::with_capacity(members.len()),
                        size_counts: vec![0; usize::from(max_node_gpus) + 1],
                        reserved: Vec::new(),
                        res_floor: UNLIMITED,
                        extended,
                    };
                    for m in members {
                        let n = &p.nodes[m];
                        let node_idx = idx(fleet.nodes.len());
                        let free = mask_of(n.free.iter().copied());
                        total += u32::from(n.gpus);
                        busy += u32::from(n.gpus) - free.count_ones();
                        pool.nodes.push(node_idx);
                        pool.size_counts[usize::from(n.gpus)] += 1;
                        if let Some(d) = n.nvlink_domain {
                            domains.entry(d).or_default().push(node_idx);
                        }
                        let bucket = &mut pool.buckets[free.count_ones() as usize];
                        let slot = idx(bucket.len());
                        bucket.push(node_idx);
                        let (alloc, avail) = n.resources.map_or((UNLIMITED, UNLIMITED), |r| {
                            (r.allocatable, r.free.min_each(&r.allocatable))
                        });
                        pool.res_floor = pool.res_floor.min_each(&per_free_gpu(avail, free));
                        fleet.nodes.push(NodeSt {
                            name: n.name.clone(),
                            pool: pool_idx,
                            gpus: n.gpus,
                            free,
                            slot,
                            reserved_for: None,
                            alloc,
                            avail,
                        });
                    }
                    fleet.counts.extend(pool.buckets.iter().map(|b| idx(b.len())));
                    fleet.pools.push(pool);
                }
                fleet.groups_by_model[usize::from(model)].push(group_idx);
                fleet.groups.push(Group {
                    provider: prov_idx,
                    model,
                    ask,
                    total,
                    busy,
                    price: ask.map(|a| market_price(a, busy, total, &market)),
                    healthy: p.healthy,
                    verified: p.verified,
                    reputation: p.reputation,
                    pools: pools_start..idx(fleet.pools.len()),
                    domains: domains.into_values().collect(),
                });
            }
            fleet.providers.push(Prov {
                id: p.id.clone(),
                region: p.region.clone(),
                healthy: p.healthy,
                verified: p.verified,
                reputation: p.reputation,
                groups: groups_start..idx(fleet.groups.len()),
                tenants: p.tenants.clone(),
            });
        }
        for list in &mut fleet.groups_by_model {
            list.sort_by_key(|&g| (fleet.groups[g as usize].ask.unwrap_or(Micros::MAX), g));
        }
        Ok(fleet)
    }

    /// Index of a provider by id.
    pub fn provider_index(&self, id: &str) -> Option<u32> {
        self.providers
            .binary_search_by(|p| p.id.as_str().cmp(id))
            .ok()
            .map(idx)
    }

    /// Index of a node by provider and name.
    pub fn node_index(&self, provider: u32, name: &str) -> Option<u32> {
        let prov = self.providers.get(provider as usize)?;
        for gi in prov.groups.clone() {
            for pi in self.groups[gi as usize].pools.clone() {
                let nodes = &self.pools[pi as usize].nodes;
                if let Ok(i) = nodes.binary_search_by(|&n| self.nodes[n as usize].name.as_str().cmp(name)) {
                    return Some(nodes[i]);
                }
            }
        }
        None
    }

    /// The provider a node belongs to.
    pub fn node_provider(&self, node: u32) -> u32 {
        let pool = self.nodes[node as usize].pool;
        self.groups[self.pools[pool as usize].group as usize].provider
    }

    fn bucket_remove(&mut self, node: u32) {
        let (pool, free, slot) = {
            let n = &self.nodes[node as usize];
            (n.pool as usize, n.free.count_ones() as usize, n.slot)
        };
        if slot == NO_SLOT {
            return;
        }
        self.counts[self.pools[pool].counts_at as usize + free] -= 1;
        let bucket = &mut self.pools[pool].buckets[free];
        bucket.swap_remove(slot as usize);
        if let Some(&moved) = bucket.get(slot as usize) {
            self.nodes[moved as usize].slot = slot;
        }
        self.nodes[node as usize].slot = NO_SLOT;
    }

    fn bucket_insert(&mut self, node: u32) {
        let n = &self.nodes[node as usize];
        if n.reserved_for.is_some() || n.slot != NO_SLOT {
            return;
        }
        let free = n.free.count_ones() as usize;
        let pool = &mut self.pools[n.pool as usize];
        self.counts[pool.counts_at as usize + free] += 1;
        let bucket = &mut pool.buckets[free];
        let slot = idx(bucket.len());
        bucket.push(node);
        self.nodes[node as usize].slot = slot;
    }

    /// Changes a node's free mask, keeping buckets and group utilization in step.
    pub fn set_free(&mut self, node: u32, free: u64) {
        self.bucket_remove(node);
        let n = &mut self.nodes[node as usize];
        let before = n.free.count_ones();
        n.free = free;
        let after = free.count_ones();
        let group = self.pools[n.pool as usize].group as usize;
        let g = &mut self.groups[group];
        g.busy = (g.busy + before).saturating_sub(after);
        g.price = g.ask.map(|a| market_price(a, g.busy, g.total, &self.market));
        self.bucket_insert(node);
        self.note_headroom(node);
    }

    /// Holds a node for `job`: it leaves the buckets.
    pub fn reserve(&mut self, node: u32, job: u32) {
        self.bucket_remove(node);
        let n = &mut self.nodes[node as usize];
        if n.reserved_for.is_none() {
            self.pools[n.pool as usize].reserved.push(node);
        }
        n.reserved_for = Some(job);
    }

    /// Releases a reserved node back to the buckets.
    pub fn unreserve(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        if n.reserved_for.take().is_some() {
            self.pools[n.pool as usize].reserved.retain(|&r| r != node);
        }
        self.bucket_insert(node);
    }

    /// Workers of `g` GPUs the pool's unreserved free GPUs can hold.
    pub fn pool_free_workers(&self, pool: u32, g: u8) -> u32 {
        let p = &self.pools[pool as usize];
        let g = usize::from(g);
        (g..p.buckets.len())
            .map(|k| idx(p.buckets[k].len()) * idx(k / g))
            .sum()
    }
}
