//! CPU and memory beside the GPUs: how many of a job's workers a node holds, and the
//! bookkeeping as work is placed and evicted.
//!
//! A node holds `min(⌊free GPUs / g⌋, free CPU / cpu per worker, free memory / memory per
//! worker)` workers. The bucket counts of the fast path know GPUs only; they still answer
//! exactly for a job that asks per GPU no more than every node of the pool has free per
//! free GPU (the pool's [floor](crate::index::Pool::res_floor), [`JobSt::gpu_bound`]) —
//! the common case, as nodes are sized for their GPUs and jobs for theirs. Otherwise the
//! pool's nodes are counted one by one ([`Fleet::add_pool_counts`]), as they are for a
//! job with a cap of workers per node ([`JobSt::per_node`]).

use crate::filter::{JobSt, UNCAPPED};
use crate::index::{Fleet, Pool, UNLIMITED};
use crate::snapshot::{MAX_GPUS_PER_NODE, Resources};

/// The state of some nodes [`Fleet::save`] keeps for [`Fleet::restore`].
#[derive(Debug)]
pub(crate) struct Saved {
    /// Node and its free CPU and memory.
    nodes: Vec<(u32, Resources)>,
    /// Pool, its floor and its buckets.
    pools: Vec<(u32, Resources, Vec<Vec<u32>>)>,
}

impl Saved {
    /// The saved nodes, each with its free CPU and memory then.
    pub fn avail(&self) -> &[(u32, Resources)] {
        &self.nodes
    }
}

/// Slots of a free-count histogram: 0..=64 GPUs.
pub(crate) const SLOTS: usize = MAX_GPUS_PER_NODE as usize + 1;

impl JobSt {
    /// Whether the GPUs alone decide how many of this job's workers any node of `pool`
    /// holds now: with `f` free GPUs and at least `floor × f` CPU free, a node holds
    /// `⌊f / g⌋` workers asking at most `floor × g` each.
    #[inline]
    pub fn gpu_bound(&self, pool: &Pool) -> bool {
        if self.per_node != UNCAPPED {
            return false;
        }
        if self.no_req {
            return true;
        }
        // `req ≤ floor × g`, each dimension, without building the product (the hot path).
        let (g, f, r) = (u64::from(self.g), &pool.res_floor, &self.req);
        r.cpu_millis <= f.cpu_millis.saturating_mul(g)
            && r.memory_mib <= f.memory_mib.saturating_mul(g)
            && r.ephemeral_mib <= f.ephemeral_mib.saturating_mul(g)
            && (self.ext == 0
                || r.extended
                    .iter()
                    .zip(&f.extended)
                    .all(|(&a, &b)| a <= b.saturating_mul(g)))
    }
}

/// CPU and memory free per free GPU (`UNLIMITED` without free GPUs: such a node holds no
/// worker, whatever its CPU).
pub(crate) fn per_free_gpu(avail: Resources, free: u64) -> Resources {
    let f = u64::from(free.count_ones());
    if f == 0 || avail == UNLIMITED {
        return UNLIMITED;
    }
    avail.per(f)
}

impl Fleet {
    /// Lowers the pool's floor to node `n`'s CPU and memory per free GPU.
    pub fn note_headroom(&mut self, n: u32) {
        let node = &self.nodes[n as usize];
        let per = per_free_gpu(node.avail, node.free);
        let pool = &mut self.pools[node.pool as usize];
        pool.res_floor = pool.res_floor.min_each(&per);
    }

    /// Workers of job `js` node `n` holds now, if the GPUs `extra_gpus` and the CPU and
    /// memory `extra` were free too (an eviction's).
    pub fn node_workers_with(&self, n: u32, js: &JobSt, extra_gpus: u64, extra: &Resources) -> u32 {
        let node = &self.nodes[n as usize];
        let by_gpus = ((node.free | extra_gpus).count_ones() / u32::from(js.g)).min(js.per_node);
        if js.no_req {
            return by_gpus;
        }
        by_gpus.min(node.avail.plus(extra).min_each(&node.alloc).workers(&js.req))
    }

    /// Workers of job `js` node `n` holds now.
    #[inline]
    pub fn node_workers(&self, n: u32, js: &JobSt) -> u32 {
        let node = &self.nodes[n as usize];
        let by_gpus = (node.free.count_ones() / u32::from(js.g)).min(js.per_node);
        if js.no_req {
            return by_gpus;
        }
        // `avail` never exceeds `alloc` (built so, and `give_resources` caps it).
        by_gpus.min(node.avail.workers(&js.req))
    }

    /// The node's free GPUs as job `js` can use them: those of the workers it holds.
    #[inline]
    pub fn usable_free(&self, n: u32, js: &JobSt, extra_gpus: u64, extra: &Resources) -> usize {
        if js.plain() {
            return (self.nodes[n as usize].free | extra_gpus).count_ones() as usize;
        }
        (self.node_workers_with(n, js, extra_gpus, extra) * u32::from(js.g)) as usize
    }

    /// [`Fleet::usable_free`] with nothing extra (the hot path of the slow path).
    #[inline]
    pub fn usable_free_now(&self, n: u32, js: &JobSt) -> usize {
        if js.plain() {
            return self.nodes[n as usize].free.count_ones() as usize;
        }
        (self.node_workers(n, js) * u32::from(js.g)) as usize
    }

    /// Workers of job `js` node `n` would hold with nothing running there.
    pub fn node_capacity(&self, n: u32, js: &JobSt) -> u32 {
        let node = &self.nodes[n as usize];
        (u32::from(node.gpus) / u32::from(js.g))
            .min(node.alloc.workers(&js.req))
            .min(js.per_node)
    }

    /// Takes CPU and memory on node `n` for placed work.
    pub fn take_resources(&mut self, n: u32, r: &Resources) {
        if r.is_zero() {
            return;
        }
        let node = &mut self.nodes[n as usize];
        node.avail = node.avail.minus(r);
        self.note_headroom(n);
    }

    /// Gives CPU and memory back on node `n` (an eviction). The pool's floor stays: it
    /// only decides when nodes are counted one by one, and GPUs freed with less CPU
    /// are noted by [`Fleet::set_free`].
    pub fn give_resources(&mut self, n: u32, r: &Resources) {
        let node = &mut self.nodes[n as usize];
        node.avail = node.avail.plus(r).min_each(&node.alloc);
    }

    /// What evictions on `nodes` change that undoing them does not put back, to
    /// [`Fleet::restore`] after: each node's free CPU and memory (given back capped at
    /// what the node has, then taken again whole, they come out lower when the snapshot
    /// counted more than the node has), and its pool's floor and bucket order.
    pub fn save(&self, nodes: impl IntoIterator<Item = u32>) -> Saved {
        let mut nodes: Vec<u32> = nodes.into_iter().collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut pools: Vec<u32> = nodes.iter().map(|&n| self.nodes[n as usize].pool).collect();
        pools.sort_unstable();
        pools.dedup();
        Saved {
            nodes: nodes.iter().map(|&n| (n, self.nodes[n as usize].avail)).collect(),
            pools: pools
                .into_iter()
                .map(|p| {
                    let pool = &self.pools[p as usize];
                    (p, pool.res_floor, pool.buckets.clone())
                })
                .collect(),
        }
    }

    /// Puts back what [`Fleet::save`] saved, once the evictions since are undone (every
    /// node holds the GPUs it held then, so each bucket has the same nodes).
    pub fn restore(&mut self, saved: Saved) {
        for (n, avail) in saved.nodes {
            self.nodes[n as usize].avail = avail;
        }
        for (p, floor, buckets) in saved.pools {
            for bucket in &buckets {
                for (slot, &n) in bucket.iter().enumerate() {
                    self.nodes[n as usize].slot = u32::try_from(slot).unwrap_or(u32::MAX);
                }
            }
            let pool = &mut self.pools[p as usize];
            debug_assert!(pool.buckets.iter().map(Vec::len).eq(buckets.iter().map(Vec::len)));
            pool.res_floor = floor;
            pool.buckets = buckets;
        }
    }

    /// Adds the unreserved nodes of `pool` to a free-count histogram, as job `js` can use
    /// their GPUs (only counts from `js.g` up).
    pub fn add_pool_counts(&self, pool: u32, js: &JobSt, counts: &mut [u32; SLOTS]) {
        let p = &self.pools[pool as usize];
        let g = usize::from(js.g);
        if js.gpu_bound(p) {
            let at = p.counts_at as usize;
            let own = &self.counts[at..=at + usize::from(p.max_node_gpus)];
            for (sum, &c) in counts.iter_mut().zip(own).skip(g) {
                *sum += c;
            }
            return;
        }
        for bucket in p.buckets.iter().skip(g) {
            for &n in bucket {
                let k = self.usable_free_now(n, js);
                if k >= g {
                    counts[k] += 1;
                }
            }
        }
    }
}
