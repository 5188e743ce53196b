//! Pure: why a job waits. Its conditions (the operator writes the placement engine's
//! explanation into `Placed`), and the engine re-run here, provider by provider, on the
//! inventory each GpuProvider reports, through the operator's own snapshot mapping.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions::{self, types};
use gpufed_api::formats::format_decimal;
use gpufed_api::{ComputeJob, GpuProvider, check};
use gpufed_operator::fleet::MemberView;
use gpufed_operator::mapping;
use gpufed_placement as pl;
use kube::ResourceExt;
use serde::Serialize;

use crate::jobs::{job_ref, phase};
use crate::output::Table;
use crate::providers::provider_conditions;

mod rebuild;
mod state;
mod trust;
use rebuild::as_rebuilt;
pub use rebuild::member_view;
use state::state;
use trust::{caught, not_verified};

/// What `why` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhyReport {
    /// `namespace/name`.
    pub job: String,
    /// Display phase.
    pub phase: String,
    /// Whether the job waits for a provider (and the providers were evaluated).
    pub waiting: bool,
    /// One sentence on the job's state.
    pub summary: String,
    /// The job's conditions as the operator wrote them.
    pub conditions: Vec<ConditionLine>,
    /// Cross-field rule violations (the operator does not place such a job).
    pub spec_errors: Vec<String>,
    /// Per provider, whether the job fits now and if not, why.
    pub providers: Vec<ProviderFit>,
    /// Why the providers could not be evaluated (e.g. no permission to list them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub providers_unavailable: Option<String>,
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionLine {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Details.
    pub message: String,
}

/// Whether the job fits on one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderFit {
    /// Provider name.
    pub provider: String,
    /// The engine would place the job there now.
    pub fits: bool,
    /// Why not (the engine's first failing filter), or what it would do.
    pub reason: String,
    /// The GPU model it would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The price per GPU-hour it would pay (decimal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<String>,
}

/// Why `p`'s tenant policy keeps out work of `ns` (labels `None`: not readable), if it does.
fn tenant_refusal(p: &GpuProvider, ns: &str, labels: Option<&BTreeMap<String, String>>) -> Option<String> {
    let policy = p.spec.tenants.as_ref().filter(|t| t.restricts())?;
    if policy.admits(ns, labels) {
        return None;
    }
    let unread = labels.is_none() && policy.namespace_selector.is_some();
    Some(if unread && policy.admits_by_name(ns) {
        format!(
            "takes work only from namespaces whose labels match spec.tenants.namespaceSelector, \
             and namespace {ns}'s labels could not be read"
        )
    } else {
        format!("takes no work from namespace {ns} (spec.tenants)")
    })
}

/// What `why` cannot check on the inventory summary, as the end of a "fits now" reason:
/// the nodes' labels (the job's node selector and node affinity), how many nodes there
/// are for a gang kept one worker per node, and their free CPU, memory and extended
/// resources — the parts of `left` the caller took out of the engine's job, its extended
/// slots named by `names`. `workers`: the job's; more than `left`'s when they must share
/// one node (placed as one worker of all of them).
fn unchecked(left: &pl::Job, workers: u32, names: &[String]) -> String {
    let mut needs = Vec::new();
    if !left.node_selector.is_empty() || !left.node_affinity.is_empty() {
        needs.push(format!(
            "is labelled {}",
            pl::describe_selection(&left.node_selector, &left.node_affinity)
        ));
    }
    if !left.worker_resources.is_zero() {
        let whose = if workers > u32::from(left.workers) {
            format!("for all {workers} workers (kept on one node)")
        } else {
            "per worker".to_owned()
        };
        needs.push(format!(
            "has {} free {whose} beside its GPUs",
            left.worker_resources.describe(names)
        ));
    }
    let mut text = match needs.is_empty() {
        true => String::new(),
        false => format!(", if a node of it {}", needs.join(" and ")),
    };
    if left.max_workers_per_node > 0 {
        text.push_str(if text.is_empty() { ", if " } else { ", and if " });
        text.push_str(&format!(
            "it has {} such nodes free for {} worker(s) each",
            u32::from(left.workers).div_ceil(u32::from(left.max_workers_per_node)),
            left.max_workers_per_node
        ));
    }
    if text.is_empty() {
        return text;
    }
    text + " (not checked here: see the job's Placed condition)"
}

/// Whether `job` fits on `p` now. `avoid`: the providers the operator keeps the job off,
/// each until when ([`gpufed_operator::job::plan::avoided_until`]): the engine is told, as
/// the operator's round tells it.
fn fit(
    job: &Arc<ComputeJob>,
    p: &GpuProvider,
    fleet: &BTreeMap<String, MemberView>,
    avoid: &BTreeMap<String, i64>,
    labels: Option<&BTreeMap<String, String>>,
) -> ProviderFit {
    let provider = p.name_any();
    let no = |reason: String| ProviderFit {
        provider: provider.clone(),
        fits: false,
        reason,
        model: None,
        price_per_gpu_hour: None,
    };
    if p.spec.drain {
        return no("draining (spec.drain): takes no new jobs, its work moves elsewhere".into());
    }
    if p.spec.paused {
        return no("paused (spec.paused): takes no new jobs".into());
    }
    match conditions::find(provider_conditions(p), types::READY) {
        Some(c) if c.status == ConditionStatus::True => {}
        Some(c) if c.message.is_empty() => return no(format!("not Ready: {}", c.reason)),
        Some(c) => return no(format!("not Ready: {}: {}", c.reason, c.message)),
        None => return no("not Ready: the operator has not reported on it yet".into()),
    }
    if let Some(caught) = caught(p) {
        return no(caught);
    }
    if let Some(refusal) = tenant_refusal(p, &job.namespace().unwrap_or_default(), labels) {
        return no(refusal);
    }
    if !fleet.contains_key(&provider) {
        return no("no inventory reported yet".into());
    }
    let (mut snap, findings) = mapping::snapshot_checked(
        std::slice::from_ref(job),
        &[Arc::new(as_rebuilt(p, fleet))],
        fleet,
    );
    // The operator's mapping leaves out providers it will not offer (its own predicate):
    // each such reason is named above; one it adds later still gets its own line here,
    // never the engine's "no providers".
    if snap.providers.is_empty() {
        let problems: Vec<_> = findings.into_iter().map(|f| f.problem).collect();
        return no(match problems.is_empty() {
            true => "left out of the operator's placement round (gpufed_operator::mapping)".into(),
            false => format!(
                "left out of the operator's placement round: {}",
                mapping::sanitize::summary(&problems)
            ),
        });
    }
    // The inventory summary carries neither node labels nor nodes (their number, CPU, memory
    // and extended resources): the node selector and affinity, a cap of workers per node and
    // the workers' requests are left to the operator's own round (the job's `Placed`
    // condition), and said so.
    let mut left = pl::Job::default();
    for j in &mut snap.jobs {
        j.avoid = avoid.keys().cloned().collect();
        left = pl::Job {
            workers: j.workers,
            node_selector: std::mem::take(&mut j.node_selector),
            node_affinity: std::mem::take(&mut j.node_affinity),
            worker_resources: std::mem::take(&mut j.worker_resources),
            max_workers_per_node: std::mem::take(&mut j.max_workers_per_node),
            ..pl::Job::default()
        };
    }
    let unchecked = unchecked(&left, job.spec.workers, &snap.extended_resources);
    match pl::place(&snap, &pl::Config::default()) {
        Err(e) => no(format!("the placement engine refused the snapshot: {e}")),
        Ok(d) => match (d.placements.first(), d.unplaced.first()) {
            (Some(placed), _) => ProviderFit {
                provider: provider.clone(),
                fits: true,
                reason: format!(
                    "fits now: {} × {} {} at {} per GPU-hour{unchecked}",
                    job.spec.workers,
                    job.spec.gpus_per_worker,
                    placed.model,
                    format_decimal(placed.price)
                ),
                model: Some(placed.model.clone()),
                price_per_gpu_hour: Some(format_decimal(placed.price)),
            },
            (None, Some(u)) => {
                let why = match u.explanation.primary() {
                    Some(pl::Reason::NotVerified) => not_verified(p),
                    Some(r) => r.to_string(),
                    None => u.explanation.to_string(),
                };
                match avoid.get(&provider) {
                    Some(until) => no(format!(
                        "{why}: kept off it until {}",
                        gpufed_operator::time::format(*until)
                    )),
                    None => no(why),
                }
            }
            (None, None) => no("not considered by the placement engine".into()),
        },
    }
}

/// Explains `job` against `providers` at `now` (Unix seconds).
pub fn explain(job: &ComputeJob, providers: &[GpuProvider], now: i64) -> WhyReport {
    explain_with_labels(job, providers, None, now)
}

/// Explains `job` against `providers` at `now`, given its namespace's labels (for the
/// providers' tenant selectors; `None` when they could not be read).
pub fn explain_with_labels(
    job: &ComputeJob,
    providers: &[GpuProvider],
    labels: Option<&BTreeMap<String, String>>,
    now: i64,
) -> WhyReport {
    let conds = job
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    // A template that cannot be built is refused before placement, as the operator does
    // (`Stalled=InvalidTemplate`); a placed job's attempt is not judged by it.
    let placed = job.status.as_ref().is_some_and(|s| s.placement.is_some());
    let spec_errors: Vec<String> = check::job_spec(&job.spec)
        .iter()
        .map(ToString::to_string)
        .chain(gpufed_operator::job::build::template_error(&job.spec).filter(|_| !placed))
        .collect();
    let (summary, waiting) = state(job, &spec_errors);
    let mut fits = Vec::new();
    if waiting {
        // The provider that forbade one of its attempts is kept off, as the round does.
        let avoid = gpufed_operator::job::plan::avoided_until(job.status.as_ref(), now);
        let mut probe = job.clone();
        probe.status = None;
        probe.spec.suspend = false;
        let probe = Arc::new(probe);
        let fleet: BTreeMap<String, MemberView> = providers
            .iter()
            .filter_map(|p| Some((p.name_any(), member_view(p.status.as_ref()?.inventory.as_ref()?))))
            .collect();
        let mut sorted: Vec<&GpuProvider> = providers.iter().collect();
        sorted.sort_by_key(|p| p.name_any());
        fits = sorted
            .into_iter()
            .map(|p| fit(&probe, p, &fleet, &avoid, labels))
            .collect();
    }
    WhyReport {
        job: job_ref(job),
        phase: phase(job),
        waiting,
        summary,
        conditions: conds
            .iter()
            .map(|c| ConditionLine {
                type_: c.type_.clone(),
                status: format!("{:?}", c.status),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
        spec_errors,
        providers: fits,
        providers_unavailable: None,
    }
}

/// Explains `job` when the providers cannot be read (`why` the error): its state and
/// conditions only.
pub fn explain_without_providers(job: &ComputeJob, why: String) -> WhyReport {
    let mut report = explain(job, &[], 0);
    report.providers_unavailable = Some(why);
    report
}

/// The report for humans.
pub fn render(r: &WhyReport) -> String {
    let mut out = format!("computejob {} ({}): {}\n", r.job, r.phase, r.summary);
    if !r.conditions.is_empty() {
        let mut t = Table::new(&["CONDITION", "STATUS", "REASON", "MESSAGE"]);
        for c in &r.conditions {
            t.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if !r.spec_errors.is_empty() {
        out.push_str("\nInvalid spec (fix and re-apply):\n");
        for e in &r.spec_errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    if r.waiting {
        out.push_str("\nPlacement engine, re-run here on each provider's reported inventory:\n");
        if let Some(why) = &r.providers_unavailable {
            out.push_str(&format!("  not run: {why}\n"));
        } else if r.providers.is_empty() {
            out.push_str("  no GpuProviders exist\n");
        } else {
            let mut t = Table::new(&["PROVIDER", "FITS", "REASON"]);
            for p in &r.providers {
                let fits = if p.fits { "yes" } else { "no" };
                t.push(vec![p.provider.clone(), fits.into(), p.reason.clone()]);
            }
            out.push_str(&t.render());
            out.push_str(
                "(from the per-model inventory in GpuProvider status; the operator's round also weighs \
                 other queued jobs, fair share and reservations, so \"fits now\" is a hint, not a promise)\n",
            );
        }
    }
    out
}

#[cfg(test)]
#[path = "why_placement_tests.rs"]
mod placement_tests;
#[cfg(test)]
#[path = "why_tests.rs"]
mod tests;
