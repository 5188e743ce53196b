//! Namespace quotas within one round: what each namespace may still take.
//!
//! A quota caps what a namespace holds at once — GPUs, and spend per hour — like a
//! Kubernetes ResourceQuota caps a namespace's requests. It is checked before a job is
//! searched for: a job whose gang the GPU cap cannot take waits at once (no search, no
//! reservation, no preemption: none of those would let it run). The spending cap lowers
//! the job's price ceiling to what the namespace may still add per GPU-hour, so the
//! search finds only placements the namespace can afford; the rest of the queue, smaller
//! or cheaper jobs of the same namespace included, goes on (as Kueue's BestEffortFIFO).

use super::Engine;
use crate::explain::{Explanation, QuotaExceeded};
use crate::search::find_best;
use crate::snapshot::{Micros, Quota};

/// What a namespace's quota makes of a job before the search.
pub(super) enum Gate {
    /// Decided: placed (by evicting its namespace's lower-priority work) or held.
    Decided(bool),
    /// Search on; `true` when its ceiling was lowered to what the namespace may still
    /// spend (then the caller must not use the memo).
    Proceed(bool),
}

impl Engine<'_> {
    fn gang(&self, h: u32) -> u32 {
        let js = &self.jobs[h as usize];
        u32::from(js.g) * u32::from(js.w)
    }

    /// Checks job `h` against its namespace's quota. Held by the GPU cap, a job that may
    /// preempt evicts its own namespace's lower-priority work to make room in the cap —
    /// unless the work of its namespace already being evicted leaves room enough.
    pub(super) fn apply_quota(&mut self, h: u32) -> Gate {
        let ns = self.job_ns[h as usize] as usize;
        let Some(q) = &self.quotas[ns] else {
            return Gate::Proceed(false);
        };
        match q.room(self.gang(h), self.jobs[h as usize].max_price) {
            Room::Full(why) => {
                if let QuotaExceeded::Gpus { limit, used, need } = why
                    && self.may_preempt(h)
                {
                    let going = self.going(h);
                    if let Some(gate) = self.room_beside(h, going) {
                        return gate;
                    }
                    // In u64: the caller's count is untrusted and may sit near u32::MAX.
                    let wanted = u64::from(used) + u64::from(need);
                    if self.preempt_within_quota(h, wanted, u64::from(limit), going) {
                        return Gate::Decided(true);
                    }
                }
                self.unplaced(h, Explanation::Quota(why));
                Gate::Decided(false)
            }
            Room::Ceiling(c) => {
                self.jobs[h as usize].max_price = c;
                Gate::Proceed(true)
            }
            Room::Free => Gate::Proceed(false),
        }
    }

    /// GPUs of job `h`'s namespace's work being evicted (this round's victims and earlier
    /// rounds'): counted as used until it stops, but going.
    fn going(&self, h: u32) -> u64 {
        self.of_ns(h)
            .filter(|&a| self.allocs[a].evicted)
            .map(|a| self.alloc_gpus(a))
            .sum()
    }

    /// For job `h`, which may preempt and which the GPU cap holds: when what its
    /// namespace's work being evicted (`going` GPUs) leaves of the cap once stopped takes
    /// its gang, it is searched for as any job — preempting for room on the providers if
    /// it must — rather than evicting more of its namespace for room in the cap it has.
    fn room_beside(&mut self, h: u32, going: u64) -> Option<Gate> {
        let mut probe = self.quotas[self.job_ns[h as usize] as usize].clone()?;
        probe.release(going);
        match probe.room(self.gang(h), self.jobs[h as usize].max_price) {
            Room::Full(_) => None,
            Room::Ceiling(c) => {
                self.jobs[h as usize].max_price = c;
                Some(Gate::Proceed(true))
            }
            Room::Free => Some(Gate::Proceed(false)),
        }
    }

    /// Evicts running work of job `h`'s namespace, of strictly lower priority (lowest
    /// first, youngest first, within disruption budgets) until the namespace, holding
    /// `wanted` GPUs with the job, fits its cap of `limit` once its evicted work (`going`
    /// GPUs already, see [`Self::going`]) has stopped, and places the job with those
    /// evictions — as Kueue preempts within a
    /// ClusterQueue. Another namespace's work never makes room in this one's quota. Then
    /// each victim the job can do without is dropped again, the last taken first (as
    /// [`Engine::try_preempt`] does). Nothing changes unless the job is placed.
    ///
    /// The victims make room in the cap for this job only: they count as used until they
    /// have stopped, so the namespace's count is never lowered, and the job's gang is
    /// charged on top when it is placed (the operator counts both next round). A later
    /// preemptor of the namespace frees only what it needs beside the work already being
    /// evicted: counting that again made each preemptor evict its predecessors' share
    /// once more.
    fn preempt_within_quota(&mut self, h: u32, wanted: u64, limit: u64, going: u64) -> bool {
        let ns = self.job_ns[h as usize];
        let excess = wanted.saturating_sub(limit.saturating_add(going));
        let priority = self.snap.jobs[self.jobs[h as usize].src as usize].priority;
        let candidates: Vec<usize> = self
            .of_ns(h)
            .filter(|&a| !self.allocs[a].evicted && self.allocs[a].priority < priority)
            .collect();
        let (mut chosen, mut gpus) = (Vec::new(), 0u64);
        let mut spent: std::collections::BTreeMap<u32, u32> = std::collections::BTreeMap::new();
        for v in candidates {
            if gpus >= excess {
                break;
            }
            if let Some(b) = self.allocs[v].budget {
                let used = spent.entry(b).or_default();
                if !self.budgets[b as usize].allows(*used + 1) {
                    continue;
                }
                *used += 1;
            }
            gpus += self.alloc_gpus(v);
            chosen.push(v);
        }
        if gpus < excess {
            return false;
        }
        let own_ceiling = self.jobs[h as usize].max_price;
        let gang = self.gang(h);
        // The room the victims make, for this job's check only (a copy of the quota).
        let room = self.quotas[ns as usize].as_ref().map(|q| {
            let mut probe = q.clone();
            probe.release(gpus + going);
            probe.room(gang, own_ceiling)
        });
        let ceiling = match room {
            Some(Room::Ceiling(c)) => c,
            Some(Room::Free) => own_ceiling,
            _ => return false,
        };
        self.jobs[h as usize].max_price = ceiling;
        let placed = self.fits_evicting(h, &chosen) && {
            // Fewer victims still covering the excess: each the job can do without goes.
            for i in (0..chosen.len()).rev() {
                let g = self.alloc_gpus(chosen[i]);
                if gpus - g < excess {
                    continue;
                }
                let mut rest = chosen.clone();
                rest.remove(i);
                if self.fits_evicting(h, &rest) {
                    chosen = rest;
                    gpus -= g;
                }
            }
            let evicted = self.evict_all(&chosen);
            match self.best_for(h) {
                Some(cand) => {
                    self.jobs[h as usize].max_price = own_ceiling;
                    self.commit_evicting(h, cand, &chosen, evicted);
                    true
                }
                None => {
                    // Cannot happen (the same evictions fitted a moment ago); undo them.
                    self.unevict_all(&chosen, evicted);
                    false
                }
            }
        };
        self.jobs[h as usize].max_price = own_ceiling;
        placed
    }

    /// The allocations of job `h`'s namespace, in the order victims are tried.
    pub(super) fn of_ns(&self, h: u32) -> impl Iterator<Item = usize> + '_ {
        let ns = self.job_ns[h as usize] as usize;
        self.victims.by_ns.get(ns).into_iter().flatten().copied()
    }

    /// The GPUs allocation `v` holds.
    fn alloc_gpus(&self, v: usize) -> u64 {
        self.allocs[v]
            .held
            .iter()
            .map(|&(_, m)| u64::from(m.count_ones()))
            .sum()
    }

    /// Job `h`'s best place now, at its current ceiling.
    fn best_for(&self, h: u32) -> Option<crate::search::Candidate> {
        let js = &self.jobs[h as usize];
        let spread = self.job_spread[h as usize].and_then(|s| self.spreads.view(s));
        find_best(&self.fleet, js, &self.cfg.weights, None, spread.as_ref())
    }

    /// Whether job `h` would find a place if `victims` were evicted (nothing changes:
    /// the evictions are undone exactly, the nodes' free CPU and memory included).
    fn fits_evicting(&mut self, h: u32, victims: &[usize]) -> bool {
        let evicted = self.evict_all(victims);
        let fits = self.best_for(h).is_some();
        self.unevict_all(victims, evicted);
        fits
    }

    /// After job `h` found no place under a lowered ceiling: if it fits under its own,
    /// answers it as held by its namespace's spending (true). Otherwise the lowered
    /// ceiling stays for what follows — its explanation, and the nodes it may reserve:
    /// those of a provider the namespace cannot afford would drain for a job that can
    /// never start there.
    pub(super) fn held_by_spending(&mut self, h: u32, own_ceiling: Micros) -> bool {
        let lowered = std::mem::replace(&mut self.jobs[h as usize].max_price, own_ceiling);
        let ns = self.job_ns[h as usize] as usize;
        let (Some(c), Some(q)) = (self.best_for(h), &self.quotas[ns]) else {
            self.jobs[h as usize].max_price = lowered;
            return false;
        };
        let why = q.over_spend(Some(c.price.saturating_mul(u64::from(self.gang(h)))));
        self.unplaced(h, Explanation::Quota(why));
        true
    }
}

/// One namespace's caps and what it holds, counting this round's placements.
#[derive(Debug, Clone)]
pub(super) struct QuotaSt {
    gpus: Option<u32>,
    spend: Option<Micros>,
    used_gpus: u32,
    used_spend: Micros,
}

/// What a namespace's quota leaves a job.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Room {
    /// Nothing in the way, or nothing below the job's own ceiling.
    Free,
    /// The job may pay at most this per GPU-hour.
    Ceiling(Micros),
    /// The job cannot run now, whatever the providers offer.
    Full(QuotaExceeded),
}

impl QuotaSt {
    pub fn new(q: &Quota) -> Self {
        QuotaSt {
            gpus: q.gpus,
            spend: q.spend_per_hour,
            used_gpus: q.used_gpus,
            used_spend: q.used_spend_per_hour,
        }
    }

    /// What the quota leaves a gang of `gpus` GPUs whose own ceiling is `max_price`.
    pub fn room(&self, gpus: u32, max_price: Micros) -> Room {
        if let Some(limit) = self.gpus
            && u64::from(self.used_gpus) + u64::from(gpus) > u64::from(limit)
        {
            return Room::Full(QuotaExceeded::Gpus {
                limit,
                used: self.used_gpus,
                need: gpus,
            });
        }
        let Some(limit) = self.spend else {
            return Room::Free;
        };
        let ceiling = limit.saturating_sub(self.used_spend) / u64::from(gpus.max(1));
        if ceiling == 0 {
            return Room::Full(self.over_spend(None));
        }
        if ceiling < max_price {
            Room::Ceiling(ceiling)
        } else {
            Room::Free
        }
    }

    /// The spending cap as the reason a job waits, with what its best fit would add.
    pub fn over_spend(&self, need: Option<Micros>) -> QuotaExceeded {
        QuotaExceeded::Spend {
            limit: self.spend.unwrap_or(0),
            used: self.used_spend,
            need,
        }
    }

    /// Stops counting `gpus` GPUs: on a copy, the room evicting them would make for one
    /// job (they count as used until they have stopped).
    pub fn release(&mut self, gpus: u64) {
        let gpus = u32::try_from(gpus).unwrap_or(u32::MAX);
        self.used_gpus = self.used_gpus.saturating_sub(gpus);
    }

    /// Counts a placement of `gpus` GPUs at `price` per GPU-hour.
    pub fn charge(&mut self, gpus: u32, price: Micros) {
        self.used_gpus = self.used_gpus.saturating_add(gpus);
        self.used_spend = self
            .used_spend
            .saturating_add(price.saturating_mul(u64::from(gpus)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(gpus: Option<u32>, spend: Option<Micros>, used_gpus: u32, used_spend: Micros) -> QuotaSt {
        QuotaSt::new(&Quota {
            gpus,
            spend_per_hour: spend,
            used_gpus,
            used_spend_per_hour: used_spend,
        })
    }

    #[test]
    fn the_gpu_cap_admits_a_gang_that_fits_exactly_and_refuses_one_more() {
        let q = quota(Some(8), None, 6, 0);
        assert_eq!(q.room(2, 5_000_000), Room::Free);
        assert_eq!(
            q.room(3, 5_000_000),
            Room::Full(QuotaExceeded::Gpus {
                limit: 8,
                used: 6,
                need: 3
            })
        );
    }

    #[test]
    fn the_spending_cap_lowers_the_ceiling_to_what_is_left_per_gpu() {
        // 10.00/h cap, 4.00/h spent: 6.00/h left for 4 GPUs = 1.50 per GPU-hour.
        let q = quota(None, Some(10_000_000), 0, 4_000_000);
        assert_eq!(q.room(4, 2_000_000), Room::Ceiling(1_500_000));
        // A job whose own ceiling is lower keeps it.
        assert_eq!(q.room(4, 1_000_000), Room::Free);
        let spent = quota(None, Some(10_000_000), 0, 10_000_000);
        assert!(matches!(
            spent.room(1, 1),
            Room::Full(QuotaExceeded::Spend { need: None, .. })
        ));
    }

    #[test]
    fn charging_counts_gpus_and_spend() {
        let mut q = quota(Some(4), Some(10_000_000), 0, 0);
        q.charge(2, 2_000_000);
        assert_eq!(q.room(2, 5_000_000), Room::Ceiling(3_000_000));
        q.charge(2, 3_000_000);
        assert!(matches!(
            q.room(1, 1),
            Room::Full(QuotaExceeded::Gpus { used: 4, .. })
        ));
    }
}
