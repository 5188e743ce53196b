//! What a settler round found, told where operators look: metrics every round, and a
//! Warning Event on each GpuProvider whose payout account cannot receive.
//!
//! The chain settler already logs a provider's reason, a withdrawn batch and a sign error
//! when they happen (`gpufed_chain::Settler`); this adds what outlives a log line. An
//! Event is published when a provider's reason is new or changed, and again every
//! [`RETELL_SECS`] while it lasts (Events expire after an hour) — never once per round.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::GpuProvider;
use gpufed_chain::RoundReport;
use kube::ResourceExt;
use tracing::debug;

use super::unmetered::RETELL_SECS;
use crate::context::Context;
use crate::job::events::note;
use crate::metrics::Metrics;

/// Reason of the Warning Event on a GpuProvider whose payout account cannot receive.
pub const PAYOUT_ACCOUNT_UNUSABLE: &str = "PayoutAccountUnusable";

/// Sets the settlement metrics from one round's report.
pub(super) fn record(m: &Metrics, report: &RoundReport) {
    let n = |x: usize| i64::try_from(x).unwrap_or(i64::MAX);
    m.settlement_backlog_records.set(n(report.backlog));
    m.settlement_paused.set(i64::from(report.paused.is_some()));
    m.settlement_batches_settled_total
        .inc_by(report.settled.len() as u64);
    m.settlement_batches_failed_total
        .inc_by(report.failed.len() as u64);
    m.settlement_rpc_errors_total.inc_by(report.rpc_errors as u64);
    m.settlement_sign_errors_total
        .inc_by(report.sign_errors.len() as u64);
    m.settlement_batches_withdrawn_total
        .inc_by(report.withdrawn.len() as u64);
    // A paused round checks no payout account: the last known count stands.
    if report.paused.is_none() {
        m.settlement_unpaid_providers.set(n(report.unpaid_reasons.len()));
    }
}

/// When each provider's payout problem was last told, and as what.
#[derive(Debug, Default)]
pub(super) struct PayoutTold {
    at: BTreeMap<String, (String, i64)>,
}

impl PayoutTold {
    /// Of `reasons` (provider → why its records wait), those to tell at `now`: new, changed,
    /// or told [`RETELL_SECS`] ago. A provider missing from one round (its account not
    /// read: the node did not answer) is not forgotten at once, so an RPC hiccup does not
    /// tell it again; one told over an hour ago and no longer reported is.
    pub fn due(&mut self, reasons: &BTreeMap<String, String>, now: i64) -> Vec<(String, String)> {
        self.at
            .retain(|p, (_, t)| reasons.contains_key(p) || now.saturating_sub(*t) < RETELL_SECS);
        let mut out = Vec::new();
        for (p, why) in reasons {
            let fresh = self
                .at
                .get(p)
                .is_some_and(|(told, t)| told == why && now.saturating_sub(*t) < RETELL_SECS);
            if !fresh {
                self.at.insert(p.clone(), (why.clone(), now));
                out.push((p.clone(), why.clone()));
            }
        }
        out
    }
}

/// The message of the Event on a provider whose payout account cannot receive.
pub fn payout_message(reason: &str) -> String {
    format!(
        "{reason}: this provider's usage records wait unsettled (nothing is lost) until its \
         payout account can receive the settlement mint; checked every settlement round"
    )
}

/// Publishes the payout problems due ([`PayoutTold::due`]) as Warning Events on their
/// GpuProviders: `reasons` are the round's unpaid reasons as the operator tells them
/// (`super::payouts::Payouts::reasons`). A provider that no longer exists (deleted with
/// records unsettled) has no object to carry one; the settler's log names it.
pub(super) fn tell_payouts(
    ctx: &Context,
    told: &mut PayoutTold,
    report: &RoundReport,
    reasons: &BTreeMap<String, String>,
    providers: &[Arc<GpuProvider>],
) {
    if report.paused.is_some() {
        return;
    }
    for (p, why) in told.due(reasons, crate::time::now()) {
        let Some(obj) = providers.iter().find(|o| o.name_any() == p) else {
            debug!(provider = %p, "unpaid provider has no GpuProvider to carry an Event");
            continue;
        };
        ctx.reporter.publish(
            kube::Resource::object_ref(obj.as_ref(), &()),
            vec![note(
                true,
                PAYOUT_ACCOUNT_UNUSABLE,
                "Settle",
                payout_message(&why),
            )],
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "surface_tests.rs"]
mod tests;
