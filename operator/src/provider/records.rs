//! What the provider controller records in the hub beside the provider's status: evidence
//! against it, and the ledger of its attempts' outcomes (its reputation's input).

use std::time::Instant;

use gpufed_api::GpuProvider;
use kube::ResourceExt;

use crate::context::Context;

/// Records `evidence` in the hub unless this process or the hub holds one of its kind
/// against the provider from within the cooldown (a provider that keeps failing is slashed
/// once per period).
pub(super) async fn record_evidence(ctx: &Context, evidence: &gpufed_trust::evidence::Evidence, now_ms: u64) {
    let (provider, kind) = (&evidence.provider, &evidence.kind);
    if !ctx.verifier.evidence_due(provider, kind, now_ms) {
        return;
    }
    let cfg = ctx.verifier.config();
    match crate::verification::evidence::record(&ctx.hub, &cfg.namespace, evidence, cfg.evidence_cooldown)
        .await
    {
        Ok(recorded) => {
            // Recorded now or within the cooldown already: no new list until it ends.
            ctx.verifier.evidence_settled(provider, kind, now_ms);
            if recorded {
                ctx.metrics.evidence_recorded_total.inc();
                tracing::warn!(evidence = %evidence.hash(), %kind, gpus = evidence.gpus.len(),
                               jobs = evidence.jobs.len(), "evidence recorded");
            }
        }
        Err(e) => tracing::warn!(error = %e, %kind, "cannot record evidence; next round retries"),
    }
}

/// `(completed, lost)` attempts of the provider for its reputation: from its ledger in the
/// hub, with the jobs the hub holds recorded into it first (so deleted jobs still count);
/// from those jobs alone while the ledger cannot be read.
pub(super) async fn outcome_counts(
    ctx: &Context,
    provider: &GpuProvider,
    fence: &crate::lease::Fence,
) -> (u64, u64) {
    use crate::verification::outcomes;
    let name = provider.name_any();
    let ns = ctx.verifier.config().namespace.clone();
    let views = ctx.job_views.get(&ctx.jobs, Instant::now());
    let jobs = views.of_provider(&name);
    if !ctx.verifier.outcomes_loaded(&name) {
        match outcomes::load(&ctx.hub, &ns, provider).await {
            Ok(l) => ctx.verifier.load_outcomes(&name, l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the provider's outcome ledger; counting the jobs held")
            }
        }
    }
    let Some(counts) = ctx
        .verifier
        .record_outcomes(&name, jobs.iter().map(AsRef::as_ref))
    else {
        return crate::verification::plan::job_outcomes(jobs.iter().map(AsRef::as_ref), &name);
    };
    if let Some(ledger) = ctx.verifier.outcomes_to_save(&name)
        && fence.holds()
    {
        match outcomes::save(&ctx.hub, &ns, provider, &ledger).await {
            Ok(()) => ctx.verifier.outcomes_saved(&name, &ledger),
            Err(e) => tracing::warn!(error = %e, "cannot save the outcome ledger; next round retries"),
        }
    }
    counts
}
