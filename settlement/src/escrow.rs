//! Escrow coverage: which tenants cannot pay their share of the next batch.
//!
//! A tenant's need is what its in-flight (not yet final) batches will debit plus its share
//! of the next batch; it is compared with its escrow balance read at **finalized**
//! commitment (so in-flight debits are not yet visible there). A tenant with a shortfall
//! is reported (condition + event) and held out of batches; per policy the operator also
//! holds its new jobs. Running jobs are never stopped because of the chain.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::batch::{self, PlanConfig};
use crate::journal::Journal;

/// A tenant whose escrow cannot cover what it owes next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    /// Tenant.
    pub tenant: String,
    /// Base units needed (in flight + next batch).
    pub needed: u64,
    /// Escrow balance, base units.
    pub available: u64,
}

/// Tenants whose `needs` exceed their `balances` (a missing balance counts as 0).
pub fn shortfalls(needs: &BTreeMap<String, u64>, balances: &BTreeMap<String, u64>) -> Vec<Shortfall> {
    needs
        .iter()
        .filter_map(|(tenant, &needed)| {
            let available = balances.get(tenant).copied().unwrap_or(0);
            (needed > available).then(|| Shortfall {
                tenant: tenant.clone(),
                needed,
                available,
            })
        })
        .collect()
}

impl Journal {
    /// Per tenant: in-flight debits plus the share of the batch that would be planned
    /// next (tenants in `held` excluded).
    pub fn escrow_needs(&self, cfg: &PlanConfig, held: &BTreeSet<String>) -> BTreeMap<String, u64> {
        self.escrow_needs_paying(cfg, held, &BTreeSet::new())
    }

    /// [`Self::escrow_needs`] with the records of providers in `unpaid` left out.
    fn escrow_needs_paying(
        &self,
        cfg: &PlanConfig,
        held: &BTreeSet<String>,
        unpaid: &BTreeSet<String>,
    ) -> BTreeMap<String, u64> {
        let mut needs: BTreeMap<String, u64> = BTreeMap::new();
        let mut add = |t: &str, a: u64| {
            let e = needs.entry(t.to_string()).or_default();
            *e = e.saturating_add(a);
        };
        for b in self.in_flight() {
            for (t, a) in b.tenant_totals() {
                add(t, a);
            }
        }
        if let Some(next) = batch::plan(self.data.next_batch, self.payable(unpaid), held, cfg, 0) {
            for (t, a) in next.tenant_totals() {
                add(t, a);
            }
        }
        needs
    }

    /// Plans the next batch with uncovered tenants held out, and the records of providers
    /// in `unpaid` (no payout account known: a batch paying them could not be signed, and
    /// would hold up every batch after it). Holding one tenant can pull in another tenant's
    /// records, so this iterates until the plan is covered (at most once per tenant).
    /// Returns the batch id (if any) and every shortfall found.
    pub fn plan_covered_batch(
        &mut self,
        cfg: &PlanConfig,
        balances: &BTreeMap<String, u64>,
        unpaid: &BTreeSet<String>,
        now_ms: u64,
    ) -> (Option<u64>, Vec<Shortfall>) {
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut found: Vec<Shortfall> = Vec::new();
        loop {
            let new: Vec<Shortfall> = shortfalls(&self.escrow_needs_paying(cfg, &held, unpaid), balances)
                .into_iter()
                .filter(|s| !held.contains(&s.tenant))
                .collect();
            if new.is_empty() {
                break;
            }
            for s in new {
                held.insert(s.tenant.clone());
                found.push(s);
            }
        }
        (self.plan_batch_paying(cfg, &held, unpaid, now_ms), found)
    }
}
