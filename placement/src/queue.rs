//! Queue order: priority first, then DRF-like fair share between namespaces, then submit
//! time.
//!
//! Every GPU model is a resource. A namespace's dominant share is
//! `max over models (GPUs of that model it holds / GPUs of that model in the fleet)`,
//! divided by its weight. Within a priority level the namespace with the smallest
//! dominant share goes next (ties by name), and inside a namespace its jobs go by
//! `(submit_time, id)`. Shares are updated after every placement, so a namespace that
//! just got GPUs yields to the others.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Per-namespace state.
#[derive(Debug)]
struct Ns {
    weight: u64,
    usage: Vec<u64>,
    share: u64,
    queues: BTreeMap<Reverse<i32>, VecDeque<u32>>,
}

/// The fair queue. Namespaces and models are small indices.
#[derive(Debug)]
pub(crate) struct FairQueue {
    ns: Vec<Ns>,
    totals: Vec<u64>,
    levels: BTreeMap<Reverse<i32>, BTreeSet<(u64, u32)>>,
}

impl FairQueue {
    /// A queue for `weights.len()` namespaces over models with `totals` GPUs each.
    pub fn new(weights: &[u32], totals: Vec<u64>) -> Self {
        let ns = weights
            .iter()
            .map(|&w| Ns {
                weight: u64::from(w.max(1)),
                usage: vec![0; totals.len()],
                share: 0,
                queues: BTreeMap::new(),
            })
            .collect();
        Self {
            ns,
            totals,
            levels: BTreeMap::new(),
        }
    }

    fn compute_share(&self, ns: usize) -> u64 {
        let n = &self.ns[ns];
        let dominant = n
            .usage
            .iter()
            .zip(&self.totals)
            .map(|(&u, &t)| u.saturating_mul(1_000_000).checked_div(t).unwrap_or(0))
            .max()
            .unwrap_or(0);
        dominant / n.weight
    }

    /// Adds (or, with negative `delta`, removes) GPUs of `model` held by `ns`.
    pub fn charge(&mut self, ns: u32, model: u16, delta: i64) {
        let nsi = ns as usize;
        let Some(u) = self.ns[nsi].usage.get_mut(usize::from(model)) else {
            return;
        };
        *u = u.saturating_add_signed(delta);
        let old = self.ns[nsi].share;
        let new = self.compute_share(nsi);
        if old == new {
            return;
        }
        self.ns[nsi].share = new;
        for level in self.ns[nsi].queues.keys() {
            if let Some(set) = self.levels.get_mut(level) {
                set.remove(&(old, ns));
                set.insert((new, ns));
            }
        }
    }

    /// Enqueues jobs; they must be pushed in `(submit_time, id)` order.
    pub fn push(&mut self, ns: u32, priority: i32, job: u32) {
        let n = &mut self.ns[ns as usize];
        let q = n.queues.entry(Reverse(priority)).or_default();
        if q.is_empty() {
            self.levels
                .entry(Reverse(priority))
                .or_default()
                .insert((n.share, ns));
        }
        q.push_back(job);
    }

    /// No job left.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The next job to consider, removed from the queue.
    pub fn pop(&mut self) -> Option<u32> {
        let mut level_entry = self.levels.first_entry()?;
        let level = *level_entry.key();
        let &(share, ns) = level_entry.get().first()?;
        let n = &mut self.ns[ns as usize];
        let q = n.queues.get_mut(&level)?;
        let job = q.pop_front();
        if q.is_empty() {
            n.queues.remove(&level);
            level_entry.get_mut().remove(&(share, ns));
            if level_entry.get().is_empty() {
                level_entry.remove();
            }
        }
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_share_then_order() {
        let mut q = FairQueue::new(&[1, 1], vec![10]);
        q.push(0, 0, 1);
        q.push(0, 0, 2);
        q.push(1, 0, 3);
        q.push(1, 5, 4);
        assert_eq!(q.pop(), Some(4));
        // tie on share: namespace 0 first by index
        assert_eq!(q.pop(), Some(1));
        q.charge(0, 0, 4);
        // namespace 0 now holds 40 % → namespace 1 goes next
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn weights_scale_shares() {
        let mut q = FairQueue::new(&[1, 4], vec![100]);
        q.charge(0, 0, 10);
        q.charge(1, 0, 30);
        q.push(0, 0, 1);
        q.push(1, 0, 2);
        // ns1: 30 % / 4 = 7.5 % < ns0: 10 %
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(1));
    }
}
