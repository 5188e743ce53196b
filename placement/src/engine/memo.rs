//! Within one round, a job whose requirements equal those of a job that already failed
//! fails too, as long as no capacity came back since: placements only take GPUs away and
//! only raise prices. The memo keeps the failed shapes until capacity returns (a
//! reservation is released), which spares the search and the explanation for the long
//! tail of identical jobs in a saturated queue. It changes no decision; the one thing
//! that may lag is a `Busy` / `Reserved` wording among identical jobs.

use std::collections::HashMap;

use crate::explain::Explanation;
use crate::filter::JobSt;
use crate::hash::FxBuild;
use crate::labels::AffinityTerm;
use crate::snapshot::{ComputeCapability, Interconnect, Micros, Resources};

/// Everything that decides whether a job can be placed now (not who it is). A spread is
/// not part of it: it only orders the candidates that fit, never removes one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Shape {
    models: Vec<u16>,
    admitted: Option<Vec<u64>>,
    g: u8,
    w: u16,
    vram: u32,
    compute: ComputeCapability,
    interconnect: Interconnect,
    max_price: Micros,
    min_reputation: u64,
    verified_only: bool,
    node_selector: Vec<(String, String)>,
    node_affinity: Vec<AffinityTerm>,
    per_node: u32,
    req: Resources,
    /// Only for a job that may preempt: its priority, and its namespace where only its
    /// own namespace's work may be evicted — together they decide what it may evict.
    victims: Option<(i32, Option<u32>)>,
}

impl Shape {
    pub fn of(js: &JobSt, victims: Option<(i32, Option<u32>)>) -> Shape {
        Shape {
            models: js.models.clone(),
            admitted: js.admitted.clone(),
            g: js.g,
            w: js.w,
            vram: js.min_vram_mib,
            compute: js.min_compute,
            interconnect: js.interconnect,
            max_price: js.max_price,
            min_reputation: js.min_reputation.to_bits(),
            verified_only: js.verified_only,
            node_selector: js.node_selector.clone(),
            node_affinity: js.node_affinity.clone(),
            per_node: js.per_node,
            req: js.req,
            victims,
        }
    }
}

/// Failed shapes (by interned id) with their explanation and whether planning a
/// reservation failed, valid while their generation is current.
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// Lookup only (never iterated): ids are handed out in job order.
    ids: HashMap<Shape, u32, FxBuild>,
    failed: Vec<(u64, Option<(Explanation, bool)>)>,
    generation: u64,
}

impl Memo {
    /// Interns a shape (at load time).
    pub fn intern(&mut self, shape: Shape) -> u32 {
        let next = u32::try_from(self.failed.len()).unwrap_or(u32::MAX);
        let id = *self.ids.entry(shape).or_insert(next);
        if id == next {
            self.failed.push((0, None));
        }
        id
    }

    pub fn get(&self, id: u32) -> Option<(Explanation, bool)> {
        match self.failed.get(id as usize) {
            Some((g, Some(entry))) if *g == self.generation => Some(entry.clone()),
            _ => None,
        }
    }

    pub fn insert(&mut self, id: u32, explanation: Explanation, plan_failed: bool) {
        if let Some(slot) = self.failed.get_mut(id as usize) {
            *slot = (self.generation, Some((explanation, plan_failed)));
        }
    }

    /// Capacity came back: forget everything.
    pub fn invalidate(&mut self) {
        self.generation += 1;
    }
}
