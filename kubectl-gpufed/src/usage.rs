//! Pure: what was spent — the `usage` report, summed from each job's bill
//! ([`crate::bill`]). By namespace (a team's spend: jobs, those running, GPU-hours, cost,
//! what is settled on chain and what is not yet), or by provider (where the GPU-hours
//! went: attempts and their cost). A ComputeService's replicas are ComputeJobs and count
//! with their namespace.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_api::ComputeJob;
use gpufed_api::formats::{format_decimal, parse_decimal};
use serde::Serialize;

use crate::bill::{bill, cost_micros, gpu_hours};
use crate::output::{NONE, Table, thousands};

/// What the report's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum By {
    /// One row per namespace.
    #[default]
    Namespace,
    /// One row per provider that ran attempts (attempts summed up by the operator
    /// after many retries have no provider of their own: `(archived)`).
    Provider,
}

/// One row: a namespace's or a provider's part.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    /// The namespace or the provider.
    pub name: String,
    /// Jobs (by provider: jobs with an attempt there).
    pub jobs: u64,
    /// Jobs with a live attempt (by provider: live there).
    pub live: u64,
    /// Attempts, archived ones included.
    pub attempts: u64,
    /// GPU-seconds metered.
    pub gpu_seconds: u64,
    /// Their cost (decimal, settlement token).
    pub cost: String,
    /// Settled on chain (decimal); by namespace only (settlement is per job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_amount: Option<String>,
    /// Cost not settled yet (decimal); by namespace only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsettled_amount: Option<String>,
}

/// The report: its rows sorted by name, and their total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// What the rows are.
    pub by: By,
    /// One per namespace or provider.
    pub rows: Vec<UsageRow>,
    /// All rows together.
    pub total: UsageRow,
}

/// Sums in base units while rows are built. Every sum saturates: the operator caps a
/// job's cost at `u64::MAX` base units, and two such jobs must not overflow the total.
#[derive(Default)]
struct Sum {
    jobs: BTreeSet<String>,
    live: BTreeSet<String>,
    attempts: u64,
    gpu_seconds: u64,
    cost: u64,
    settled: u64,
    unsettled: u64,
}

/// `*sum += v`, saturating (see [`Sum`]).
fn plus(sum: &mut u64, v: u64) {
    *sum = sum.saturating_add(v);
}

impl Sum {
    fn row(&self, name: &str, by: By) -> UsageRow {
        let per_job = |v: u64| (by == By::Namespace).then(|| format_decimal(v));
        UsageRow {
            name: name.to_owned(),
            jobs: self.jobs.len() as u64,
            live: self.live.len() as u64,
            attempts: self.attempts,
            gpu_seconds: self.gpu_seconds,
            cost: format_decimal(self.cost),
            settled_amount: per_job(self.settled),
            unsettled_amount: per_job(self.unsettled),
        }
    }

    fn add(&mut self, other: &Sum) {
        self.jobs.extend(other.jobs.iter().cloned());
        self.live.extend(other.live.iter().cloned());
        plus(&mut self.attempts, other.attempts);
        plus(&mut self.gpu_seconds, other.gpu_seconds);
        plus(&mut self.cost, other.cost);
        plus(&mut self.settled, other.settled);
        plus(&mut self.unsettled, other.unsettled);
    }
}

/// The usage of `jobs`, by namespace or by provider.
pub fn report(jobs: &[ComputeJob], by: By) -> UsageReport {
    let mut sums: BTreeMap<String, Sum> = BTreeMap::new();
    for job in jobs {
        let b = bill(job);
        let archived = b.archived.as_ref();
        match by {
            By::Namespace => {
                let ns = job.metadata.namespace.clone().unwrap_or_default();
                let s = sums.entry(ns).or_default();
                s.jobs.insert(b.job.clone());
                if b.attempts.iter().any(|a| a.outcome == "Live") {
                    s.live.insert(b.job.clone());
                }
                plus(
                    &mut s.attempts,
                    (b.attempts.len() as u64).saturating_add(archived.map_or(0, |a| u64::from(a.attempts))),
                );
                plus(&mut s.gpu_seconds, b.gpu_seconds);
                plus(&mut s.cost, parse_decimal(&b.cost).unwrap_or(0));
                plus(&mut s.settled, parse_decimal(&b.settled_amount).unwrap_or(0));
                plus(&mut s.unsettled, parse_decimal(&b.unsettled_amount).unwrap_or(0));
            }
            By::Provider => {
                for a in &b.attempts {
                    let s = sums.entry(a.provider.clone()).or_default();
                    s.jobs.insert(b.job.clone());
                    if a.outcome == "Live" {
                        s.live.insert(b.job.clone());
                    }
                    plus(&mut s.attempts, 1);
                    plus(&mut s.gpu_seconds, a.gpu_seconds);
                    plus(&mut s.cost, cost_micros(a.gpu_seconds, &a.price_per_gpu_hour));
                }
                if let Some(a) = archived {
                    let s = sums.entry("(archived)".into()).or_default();
                    s.jobs.insert(b.job.clone());
                    plus(&mut s.attempts, u64::from(a.attempts));
                    plus(&mut s.gpu_seconds, a.gpu_seconds);
                    plus(&mut s.cost, parse_decimal(&a.cost).unwrap_or(0));
                }
            }
        }
    }
    let mut total = Sum::default();
    let rows = sums
        .iter()
        .map(|(name, s)| {
            total.add(s);
            s.row(name, by)
        })
        .collect();
    UsageReport {
        by,
        rows,
        total: total.row("TOTAL", by),
    }
}

/// The report for humans: one line per row, and a total line when there are several.
pub fn render(r: &UsageReport) -> String {
    let first = match r.by {
        By::Namespace => "NAMESPACE",
        By::Provider => "PROVIDER",
    };
    let mut t = Table::new(&[
        first,
        "JOBS",
        "LIVE",
        "ATTEMPTS",
        "GPU-HOURS",
        "COST",
        "SETTLED",
        "NOT SETTLED",
    ]);
    let several = r.rows.len() > 1;
    for row in r.rows.iter().chain(several.then_some(&r.total)) {
        t.push(vec![
            row.name.clone(),
            thousands(row.jobs),
            thousands(row.live),
            thousands(row.attempts),
            gpu_hours(row.gpu_seconds),
            row.cost.clone(),
            row.settled_amount.clone().unwrap_or_else(|| NONE.to_owned()),
            row.unsettled_amount.clone().unwrap_or_else(|| NONE.to_owned()),
        ]);
    }
    t.render()
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
