//! The engine: a snapshot in, decisions out, one job at a time.
//!
//! Jobs come off the [fair queue](crate::queue) in order. Each is placed on the best
//! group the [fast path](crate::search) finds; failing that, optionally by preemption;
//! failing that, it is explained and may reserve nodes so that later, smaller jobs
//! backfill around it without starving it. A job with a spread prefers the domains
//! holding the fewest members of its group (see [`crate::spread`]).

mod load;
mod memo;
mod preempt;
mod probe;
mod quota;
mod reserve;
#[cfg(test)]
mod search_tests;
mod victims;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::decision::{Config, Decisions, Placement, Unplaced, WorkerPlacement};
use crate::explain::{Explanation, InvalidJob};
use crate::filter::{JobSt, explain, tenant_set, validate};
use crate::hash::FxBuild;
use crate::index::{Fleet, SnapshotError};
use crate::queue::FairQueue;
use crate::search::{Candidate, find_best, select};
use crate::snapshot::{Reservation, Resources, Snapshot};
use crate::spread::{JobSpread, Spreads};
use memo::{Memo, Shape};
use quota::{Gate, QuotaSt};

/// A running allocation, resolved.
#[derive(Debug)]
struct AllocSt {
    src: u32,
    provider: u32,
    ns: u32,
    priority: i32,
    start: u64,
    /// Node and GPUs held there.
    held: Vec<(u32, u64)>,
    /// Node and the CPU and memory held there.
    res: Vec<(u32, Resources)>,
    /// Evicted this round, or already being evicted (never a victim again).
    evicted: bool,
    /// Spread group key, when a queued job shares its group.
    spread: Option<u32>,
    /// Index into `Engine::budgets`, when it counts toward one.
    budget: Option<u32>,
}

/// A disruption budget: the fewest healthy allocations that must stay, and how many
/// are healthy now (counting down as this round evicts them).
#[derive(Debug)]
struct Budget<'s> {
    key: &'s str,
    min: u32,
    healthy: u32,
}

impl Budget<'_> {
    /// Whether `n` more of its allocations may go.
    fn allows(&self, n: u32) -> bool {
        u64::from(self.healthy) >= u64::from(self.min) + u64::from(n)
    }
}

/// Places the jobs of one snapshot; see [`place`] for the one-call form.
#[derive(Debug)]
pub struct Engine<'s> {
    snap: &'s Snapshot,
    cfg: Config,
    fleet: Fleet,
    jobs: Vec<JobSt>,
    job_ns: Vec<u32>,
    job_shape: Vec<u32>,
    job_spread: Vec<Option<JobSpread>>,
    spreads: Spreads<'s>,
    queue: FairQueue,
    allocs: Vec<AllocSt>,
    /// Allocations per provider, and per namespace, in the order victims are tried.
    victims: victims::VictimLists,
    budgets: Vec<Budget<'s>>,
    /// Per namespace index, its quota, if it has one.
    quotas: Vec<Option<QuotaSt>>,
    reserved: BTreeMap<u32, Vec<u32>>,
    memo: Memo,
    out: Decisions,
}

fn idx(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Places every job of `snap` it can; the one-call form of [`Engine`].
pub fn place(snap: &Snapshot, cfg: &Config) -> Result<Decisions, SnapshotError> {
    Ok(Engine::new(snap, cfg)?.run())
}

impl<'s> Engine<'s> {
    /// Indexes the snapshot. Malformed jobs are answered at once as unplaced with an
    /// [`Explanation::Invalid`]; a malformed fleet is an error.
    pub fn new(snap: &'s Snapshot, cfg: &Config) -> Result<Self, SnapshotError> {
        let fleet = Fleet::build(snap, cfg.market)?;
        let names: BTreeSet<&str> = snap
            .jobs
            .iter()
            .map(|j| j.namespace.as_str())
            .chain(snap.running.iter().map(|r| r.namespace.as_str()))
            .collect();
        let ns_index: BTreeMap<&str, u32> = names.iter().enumerate().map(|(i, &n)| (n, idx(i))).collect();
        let weights: Vec<u32> = names
            .iter()
            .map(|n| snap.namespace_weights.get(*n).copied().unwrap_or(1))
            .collect();
        let mut totals = vec![0u64; fleet.models.len()];
        for g in &fleet.groups {
            totals[usize::from(g.model)] += u64::from(g.total);
        }
        let spreads = Spreads::new(snap, &fleet);
        let quotas = names
            .iter()
            .map(|n| snap.quotas.get(*n).map(QuotaSt::new))
            .collect();
        let mut engine = Engine {
            snap,
            spreads,
            cfg: cfg.clone(),
            queue: FairQueue::new(&weights, totals),
            fleet,
            jobs: Vec::new(),
            job_ns: Vec::new(),
            job_shape: Vec::new(),
            job_spread: Vec::new(),
            allocs: Vec::new(),
            victims: victims::VictimLists::default(),
            budgets: Vec::new(),
            quotas,
            reserved: BTreeMap::new(),
            memo: Memo::default(),
            out: Decisions {
                placements: Vec::with_capacity(snap.jobs.len()),
                unplaced: Vec::with_capacity(snap.jobs.len()),
                ..Decisions::default()
            },
        };
        engine.load_running(&ns_index)?;
        engine.victims = engine.victim_lists(names.len());
        engine.load_jobs(&ns_index);
        engine.load_reservations();
        Ok(engine)
    }

    fn node_model(&self, n: u32) -> u16 {
        let pool = self.fleet.nodes[n as usize].pool as usize;
        self.fleet.groups[self.fleet.pools[pool].group as usize].model
    }

    /// Jobs still waiting to be considered.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    /// Considers the next job in queue order. Returns `Some(true)` if it was placed,
    /// `Some(false)` if not, `None` when the queue is exhausted.
    pub fn step(&mut self) -> Option<bool> {
        let h = self.queue.pop()?;
        let held = self.reserved.remove(&h);
        for &n in held.iter().flatten() {
            self.fleet.unreserve(n);
        }
        let placed = self.decide(h, held.clone());
        if held.is_some() && self.reserved.get(&h) != held.as_ref() {
            // Capacity came back to the buckets: earlier failures may fit now.
            self.memo.invalidate();
        }
        Some(placed)
    }

    fn decide(&mut self, h: u32, held: Option<Vec<u32>>) -> bool {
        let own_ceiling = self.jobs[h as usize].max_price;
        let lowered = match self.apply_quota(h) {
            Gate::Decided(placed) => return placed,
            Gate::Proceed(lowered) => lowered,
        };
        // A lowered ceiling is not the shape's: such a job neither reads nor writes the memo.
        let shape = (held.is_none() && !lowered).then(|| self.job_shape[h as usize]);
        if let Some((explanation, plan_failed)) = shape.and_then(|s| self.memo.get(s)) {
            // A plan that failed for this shape may succeed for a job that outranks a
            // holder of the nodes it needs.
            let skip_plan = plan_failed && !self.outranks_a_holder(h);
            let failed = self.maybe_reserve(h, None, &explanation, skip_plan);
            if failed
                && !plan_failed
                && let Some(s) = shape
            {
                self.memo.insert(s, explanation.clone(), true);
            }
            self.unplaced(h, explanation);
            return false;
        }
        let js = &self.jobs[h as usize];
        let spread = self.job_spread[h as usize].and_then(|s| self.spreads.view(s));
        if let Some(c) = find_best(&self.fleet, js, &self.cfg.weights, None, spread.as_ref()) {
            self.commit(h, c, Vec::new());
            return true;
        }
        let protected = if self.may_preempt(h) {
            match self.try_preempt(h) {
                Ok(()) => return true,
                Err(protected) => protected,
            }
        } else {
            BTreeMap::new()
        };
        if lowered && self.held_by_spending(h, own_ceiling) {
            return false;
        }
        let js = &self.jobs[h as usize];
        let job = &self.snap.jobs[js.src as usize];
        let explanation = explain(&self.fleet, job, js, &protected);
        let plan_failed = self.maybe_reserve(h, held, &explanation, false);
        if let Some(s) = shape {
            self.memo.insert(s, explanation.clone(), plan_failed);
        }
        self.unplaced(h, explanation);
        false
    }

    /// Answers job `h` as not placed this round, with why.
    fn unplaced(&mut self, h: u32, explanation: Explanation) {
        let id = self.snap.jobs[self.jobs[h as usize].src as usize].id.clone();
        self.out.unplaced.push(Unplaced { job: id, explanation });
    }

    /// Commits a candidate: picks GPUs, updates the index and the shares.
    fn commit(&mut self, h: u32, cand: Candidate, evicts: Vec<String>) {
        let js = &self.jobs[h as usize];
        let picks = select(&self.fleet, js, &cand);
        let g = u32::from(js.g);
        let mut workers = Vec::with_capacity(usize::from(js.w));
        for &(n, mask, per) in &picks {
            let name = &self.fleet.nodes[n as usize].name;
            let mut rest = mask;
            for _ in 0..per {
                let mut gpus = Vec::with_capacity(g as usize);
                for _ in 0..g {
                    let bit = rest.trailing_zeros();
                    rest &= !(1u64 << bit);
                    gpus.push(u8::try_from(bit).unwrap_or(u8::MAX));
                }
                workers.push(WorkerPlacement {
                    node: name.clone(),
                    gpus,
                });
            }
        }
        let req = js.req;
        for &(n, mask, per) in &picks {
            let free = self.fleet.nodes[n as usize].free & !mask;
            self.fleet.set_free(n, free);
            self.fleet.take_resources(n, &req.times(per));
        }
        let group = &self.fleet.groups[cand.group as usize];
        if let Some(s) = self.job_spread[h as usize] {
            self.spreads.count(s.key, group.provider, true);
        }
        let model = group.model;
        let ns = self.job_ns[h as usize];
        self.queue.charge(ns, model, i64::from(g * u32::from(js.w)));
        if let Some(q) = &mut self.quotas[ns as usize] {
            q.charge(g * u32::from(js.w), cand.price);
        }
        self.out.placements.push(Placement {
            job: self.snap.jobs[js.src as usize].id.clone(),
            provider: self.fleet.providers[group.provider as usize].id.clone(),
            model: self.fleet.models[usize::from(model)].clone(),
            workers,
            price: cand.price,
            evicts,
        });
    }

    /// Considers every remaining job and returns the decisions.
    pub fn run(mut self) -> Decisions {
        while self.step().is_some() {}
        for (&h, nodes) in &self.reserved {
            let Some(&first) = nodes.first() else { continue };
            let provider = self.fleet.node_provider(first);
            self.out.reservations.push(Reservation {
                job: self.snap.jobs[self.jobs[h as usize].src as usize].id.clone(),
                provider: self.fleet.providers[provider as usize].id.clone(),
                nodes: nodes
                    .iter()
                    .map(|&n| self.fleet.nodes[n as usize].name.clone())
                    .collect(),
            });
        }
        self.out
    }
}
