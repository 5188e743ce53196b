//! Preferred allocation: which GPUs to hand a container, given the node's topology.
//!
//! Pure. Sets are scored by, in order: the number of NVLink links inside the set (more is
//! better: collective operations stay on NVLink), how many of its GPUs share one NUMA node
//! (more is better), then lowest index (deterministic). Small nodes are searched
//! exhaustively; large ones greedily.

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::Inventory;

/// What a container asks for (one `ContainerPreferredAllocationRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredRequest {
    /// GPUs kubelet may pick from.
    pub available: Vec<String>,
    /// GPUs that must be part of the answer.
    pub must_include: Vec<String>,
    /// How many GPUs to return.
    pub size: usize,
}

/// Topology facts used for scoring, built once from an [`Inventory`].
#[derive(Debug, Clone, Default)]
pub struct Topology {
    index: BTreeMap<String, usize>,
    numa: BTreeMap<String, Option<i64>>,
    links: BTreeSet<(String, String)>,
}

/// Exhaustive search is used while the number of candidate sets stays below this.
const EXHAUSTIVE_LIMIT: u128 = 20_000;

type Score = (usize, usize, std::cmp::Reverse<Vec<usize>>);

impl Topology {
    /// Extracts the topology of an inventory.
    pub fn from_inventory(inv: &Inventory) -> Self {
        let mut t = Topology::default();
        for (i, g) in inv.gpus.iter().enumerate() {
            t.index.insert(g.uuid.clone(), i);
            t.numa.insert(g.uuid.clone(), g.numa_node);
            for p in &g.nvlink_peers {
                t.links.insert(ordered(&g.uuid, p));
            }
        }
        t
    }

    /// Whether two GPUs are directly linked by NVLink.
    pub fn linked(&self, a: &str, b: &str) -> bool {
        self.links.contains(&ordered(a, b))
    }

    fn score(&self, set: &[&str]) -> Score {
        let mut links = 0;
        for (i, a) in set.iter().enumerate() {
            links += set[i + 1..].iter().filter(|b| self.linked(a, b)).count();
        }
        let mut per_numa: BTreeMap<i64, usize> = BTreeMap::new();
        for u in set {
            if let Some(Some(n)) = self.numa.get(*u) {
                *per_numa.entry(*n).or_default() += 1;
            }
        }
        let numa_local = per_numa.values().copied().max().unwrap_or(0);
        let mut idx: Vec<usize> = set
            .iter()
            .map(|u| self.index.get(*u).copied().unwrap_or(usize::MAX))
            .collect();
        idx.sort_unstable();
        (links, numa_local, std::cmp::Reverse(idx))
    }

    /// Chooses `req.size` GPUs from `req.available` (those this topology does not know are
    /// ignored), including every `req.must_include`. Returns fewer than `size` only when
    /// there are not enough candidates; the result is sorted by NVML index.
    pub fn preferred(&self, req: &PreferredRequest) -> Vec<String> {
        let mut must: Vec<&str> = Vec::new();
        for m in &req.must_include {
            if self.index.contains_key(m) && !must.contains(&m.as_str()) {
                must.push(m);
            }
        }
        let mut pool: Vec<&str> = Vec::new();
        for a in &req.available {
            if self.index.contains_key(a) && !must.contains(&a.as_str()) && !pool.contains(&a.as_str()) {
                pool.push(a);
            }
        }
        pool.sort_by_key(|u| self.index.get(*u).copied());
        let need = req.size.saturating_sub(must.len()).min(pool.len());
        let chosen = if combinations(pool.len(), need) <= EXHAUSTIVE_LIMIT {
            self.exhaustive(&must, &pool, need)
        } else {
            self.greedy(&must, &pool, need)
        };
        let mut out: Vec<String> = must.iter().chain(chosen.iter()).map(|s| s.to_string()).collect();
        out.sort_by_key(|u| self.index.get(u).copied());
        out
    }

    fn exhaustive<'a>(&self, must: &[&'a str], pool: &[&'a str], need: usize) -> Vec<&'a str> {
        let mut best: Option<(Score, Vec<&'a str>)> = None;
        let mut pick: Vec<usize> = (0..need).collect();
        loop {
            let cand: Vec<&'a str> = pick.iter().map(|&i| pool[i]).collect();
            let mut all = must.to_vec();
            all.extend(&cand);
            let s = self.score(&all);
            if best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, cand));
            }
            if !next_combination(&mut pick, pool.len()) {
                break;
            }
        }
        best.map(|(_, c)| c).unwrap_or_default()
    }

    /// Greedy growth from every possible seed; the best final set wins. `O(n² · size)`
    /// scorings, fine for the hundreds of GPUs a node can have.
    fn greedy<'a>(&self, must: &[&'a str], pool: &[&'a str], need: usize) -> Vec<&'a str> {
        let mut best: Option<(Score, Vec<&'a str>)> = None;
        for seed in 0..pool.len() {
            let mut set = must.to_vec();
            let mut left = pool.to_vec();
            set.push(left.remove(seed));
            while set.len() < must.len() + need {
                let mut pick: Option<(Score, usize)> = None;
                for (i, c) in left.iter().enumerate() {
                    let mut trial = set.clone();
                    trial.push(c);
                    let s = self.score(&trial);
                    if pick.as_ref().is_none_or(|(b, _)| s > *b) {
                        pick = Some((s, i));
                    }
                }
                let Some((_, i)) = pick else { break };
                set.push(left.remove(i));
            }
            let s = self.score(&set);
            if best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, set.split_off(must.len())));
            }
        }
        best.map(|(_, c)| c).unwrap_or_default()
    }
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

fn combinations(n: usize, k: usize) -> u128 {
    let k = k.min(n - k.min(n));
    let mut c: u128 = 1;
    for i in 0..k {
        c = c.saturating_mul((n - i) as u128) / (i as u128 + 1);
    }
    c
}

/// Advances `pick` (strictly increasing indices below `n`) to the next k-combination.
fn next_combination(pick: &mut [usize], n: usize) -> bool {
    let k = pick.len();
    for i in (0..k).rev() {
        if pick[i] < n - k + i {
            pick[i] += 1;
            for j in i + 1..k {
                pick[j] = pick[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "topology_tests.rs"]
mod tests;
