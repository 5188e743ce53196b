//! Prometheus metrics, `gpufed_` prefix, base units, no object names as labels.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[path = "metrics_labels.rs"]
mod labels;
pub use labels::*;

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Reconcile durations.
    pub reconcile_duration_seconds: Family<ControllerLabel, Histogram>,
    /// Reconcile errors by category.
    pub reconcile_errors_total: Family<ErrorLabel, Counter>,
    /// Jobs waiting for placement.
    pub queue_depth_jobs: Gauge,
    /// Placements decided.
    pub placements_total: Counter,
    /// Running attempts marked for eviction, by cause.
    pub evictions_total: Family<EvictionLabel, Counter>,
    /// Jobs the last round left waiting mostly because preempting would break a
    /// ComputeService's disruption budget.
    pub held_by_disruption_budget_jobs: Gauge,
    /// Jobs the last round left waiting because their namespace's ComputeQuota holds them.
    pub held_by_quota_jobs: Gauge,
    /// GPUs the last round kept free for jobs waiting for their evictions.
    pub held_for_preemptors_gpus: Gauge,
    /// Queued ComputeJobs the last round could not place, by their `Placed` reason.
    pub unplaced_jobs: Family<WaitingLabel, Gauge>,
    /// Providers by health.
    pub providers: Family<HealthLabel, Gauge>,
    /// GPUs of the fleet the placement engine sees, by state (`total`, `free`).
    pub fleet_gpus: Family<GpuStateLabel, Gauge>,
    /// GPU-seconds metered (all attempts, all jobs).
    pub metered_gpu_seconds_total: Counter,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Usage records journaled but not settled yet.
    pub settlement_backlog_records: Gauge,
    /// Settled usage records pruned from the journal (docs/settlement.md, "History").
    pub settlement_pruned_records_total: Counter,
    /// 1 while settlement signs and concludes nothing because the RPC node keeps no
    /// transaction history (or has not said whether it does).
    pub settlement_paused: Gauge,
    /// Settlement batches final and successful.
    pub settlement_batches_settled_total: Counter,
    /// Settlement transactions that failed on chain (records re-batched).
    pub settlement_batches_failed_total: Counter,
    /// RPC errors and timeouts seen by settlement.
    pub settlement_rpc_errors_total: Counter,
    /// Batch signing attempts that failed for other reasons than RPC (each backs off).
    pub settlement_sign_errors_total: Counter,
    /// Batches taken back before signing: they paid or charged an account that cannot.
    pub settlement_batches_withdrawn_total: Counter,
    /// Providers with usage waiting whose payout account cannot receive (last round).
    pub settlement_unpaid_providers: Gauge,
    /// Attempts with usage the meter cannot journal (last round).
    pub settlement_unmetered_attempts: Gauge,
    /// GPU challenges judged, by result.
    pub challenges_total: Family<ChallengeLabel, Counter>,
    /// GPU challenges started, by why.
    pub challenges_started_total: Family<WhyLabel, Counter>,
    /// Verdicts kept in the hub, loaded by this process, by what became of them.
    pub challenge_verdicts_restored_total: Family<RestoredLabel, Counter>,
    /// How long after its round's start each round challenge was issued: the hub's spread.
    pub challenge_round_lag_seconds: Histogram,
    /// Round challenges issued late because their node (no usable report) or its member
    /// (unreachable) was not there when the hub first found them due in the round.
    pub challenge_round_late_nodes_total: Counter,
    /// `--challenge-round-grace`, the lag a round challenge may have on its own clock.
    pub challenge_round_grace_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Challenge issued → commitment seen by the hub, by band model.
    pub challenge_round_trip_seconds: Family<ModelLabel, Histogram>,
    /// The longest round trip each band allows (`Band::max_round_trip_ms`), by model.
    pub challenge_round_trip_limit_seconds: Family<ModelLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Successful probes of push-mode members, by kind.
    pub member_probes_total: Family<ProbeLabel, Counter>,
    /// Providers whose kept pins or verdicts cannot be read (a shard missing): their
    /// verification waits for a repair.
    pub verification_unreadable_maps: Gauge,
    /// Evidence documents recorded against providers.
    pub evidence_recorded_total: Counter,
    /// Reported GPU nodes the last placement round left out as invalid, by reason.
    pub placement_excluded_nodes: Family<ExcludedLabel, Gauge>,
    /// Providers the last placement round left out because the engine rejected their part.
    pub placement_excluded_providers: Gauge,
    /// ComputeService replicas created (scale-ups, replacements, rollouts).
    pub service_replicas_created_total: Counter,
    /// ComputeService replicas retired (scale-downs, rollouts, deletion).
    pub service_replicas_retired_total: Counter,
    /// ComputeServices that became stuck, by reason.
    pub service_stalls_total: Family<StallLabel, Counter>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `gpufed` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gpufed");
        let reconcile_duration_seconds = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let challenge_round_trip_seconds = Family::<ModelLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, ROUND_TRIP_BUCKETS))
        });
        let m = Metrics {
            reconcile_duration_seconds,
            challenge_round_trip_seconds,
            challenges_started_total: Family::default(),
            challenge_verdicts_restored_total: Family::default(),
            challenge_round_lag_seconds: Histogram::new(exponential_buckets(0.01, 2.0, ROUND_LAG_BUCKETS)),
            challenge_round_grace_seconds: Gauge::default(),
            challenge_round_late_nodes_total: Counter::default(),
            challenge_round_trip_limit_seconds: Family::default(),
            reconcile_errors_total: Family::default(),
            queue_depth_jobs: Gauge::default(),
            placements_total: Counter::default(),
            evictions_total: Family::default(),
            held_by_disruption_budget_jobs: Gauge::default(),
            held_by_quota_jobs: Gauge::default(),
            held_for_preemptors_gpus: Gauge::default(),
            unplaced_jobs: Family::default(),
            providers: Family::default(),
            fleet_gpus: Family::default(),
            metered_gpu_seconds_total: Counter::default(),
            leader: Gauge::default(),
            settlement_backlog_records: Gauge::default(),
            settlement_pruned_records_total: Counter::default(),
            settlement_paused: Gauge::default(),
            settlement_batches_settled_total: Counter::default(),
            settlement_batches_failed_total: Counter::default(),
            settlement_rpc_errors_total: Counter::default(),
            settlement_sign_errors_total: Counter::default(),
            settlement_batches_withdrawn_total: Counter::default(),
            settlement_unpaid_providers: Gauge::default(),
            settlement_unmetered_attempts: Gauge::default(),
            challenges_total: Family::default(),
            member_probes_total: Family::default(),
            verification_unreadable_maps: Gauge::default(),
            evidence_recorded_total: Counter::default(),
            placement_excluded_nodes: Family::default(),
            placement_excluded_providers: Gauge::default(),
            service_replicas_created_total: Counter::default(),
            service_replicas_retired_total: Counter::default(),
            service_stalls_total: Family::default(),
            registry: Arc::new(Registry::default()),
        };
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            m.reconcile_duration_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by category",
            m.reconcile_errors_total.clone(),
        );
        registry.register(
            "queue_depth_jobs",
            "ComputeJobs waiting for placement",
            m.queue_depth_jobs.clone(),
        );
        registry.register("placements", "Placements decided", m.placements_total.clone());
        registry.register(
            "evictions",
            "Running attempts evicted, by cause (priority, drain, drain_deadline, tenancy)",
            m.evictions_total.clone(),
        );
        registry.register(
            "held_by_disruption_budget_jobs",
            "ComputeJobs that could preempt only by breaking a ComputeService's disruption budget (last round)",
            m.held_by_disruption_budget_jobs.clone(),
        );
        registry.register(
            "held_by_quota_jobs",
            "ComputeJobs their namespace's ComputeQuota holds back (last round)",
            m.held_by_quota_jobs.clone(),
        );
        registry.register(
            "held_for_preemptors_gpus",
            "GPUs kept for jobs waiting for the work they evict to stop (last round)",
            m.held_for_preemptors_gpus.clone(),
        );
        registry.register(
            "unplaced_jobs",
            "Queued ComputeJobs the last placement round could not place, by their Placed reason",
            m.unplaced_jobs.clone(),
        );
        registry.register("providers", "GpuProviders by health", m.providers.clone());
        registry.register(
            "fleet_gpus",
            "GPUs on ready nodes of usable providers (total) and those free for placement",
            m.fleet_gpus.clone(),
        );
        registry.register(
            "metered_gpu_seconds",
            "GPU-seconds metered",
            m.metered_gpu_seconds_total.clone(),
        );
        registry.register("leader", "1 while this replica holds the Lease", m.leader.clone());
        registry.register(
            "settlement_backlog_records",
            "Usage records journaled and not yet settled on chain",
            m.settlement_backlog_records.clone(),
        );
        registry.register(
            "settlement_paused",
            "1 while settlement waits for an RPC node that keeps transaction history",
            m.settlement_paused.clone(),
        );
        registry.register(
            "settlement_pruned_records",
            "Settled usage records pruned from the settlement journal",
            m.settlement_pruned_records_total.clone(),
        );
        registry.register(
            "settlement_batches_settled",
            "Settlement batches final on chain",
            m.settlement_batches_settled_total.clone(),
        );
        registry.register(
            "settlement_batches_failed",
            "Settlement transactions that failed on chain",
            m.settlement_batches_failed_total.clone(),
        );
        registry.register(
            "settlement_rpc_errors",
            "Solana RPC errors and timeouts seen by settlement",
            m.settlement_rpc_errors_total.clone(),
        );
        registry.register(
            "settlement_sign_errors",
            "Settlement batches that could not be signed for other reasons than RPC (an account gone, a transaction too big); each backs off and is retried",
            m.settlement_sign_errors_total.clone(),
        );
        registry.register(
            "settlement_batches_withdrawn",
            "Settlement batches taken back before signing because they pay or charge an account that cannot take part; their other records are re-planned",
            m.settlement_batches_withdrawn_total.clone(),
        );
        registry.register(
            "settlement_unpaid_providers",
            "Providers with usage waiting whose payout account cannot receive (reason in a Warning Event on the GpuProvider)",
            m.settlement_unpaid_providers.clone(),
        );
        registry.register(
            "settlement_unmetered_attempts",
            "Job attempts with usage the meter cannot journal (reason in a Warning Event on the ComputeJob)",
            m.settlement_unmetered_attempts.clone(),
        );
        registry.register(
            "challenges",
            "GPU compute challenges judged, by result (passed or the failure reason)",
            m.challenges_total.clone(),
        );
        registry.register(
            "challenges_started",
            "GPU compute challenges started, by why (round: the fleet-wide round; join, changed, wanted: between rounds)",
            m.challenges_started_total.clone(),
        );
        registry.register(
            "challenge_verdicts_restored",
            "Nodes' verdicts kept in the hub that this process loaded, by outcome (restored; due: restored, challenged at once; expired, bands_changed, unreadable: dropped)",
            m.challenge_verdicts_restored_total.clone(),
        );
        registry.register(
            "challenge_round_lag_seconds",
            "How long after its round's start the hub issued each round challenge: its spread over the fleet, which --challenge-round-grace covers (nodes that were not there when first found due count in challenge_round_late_nodes instead)",
            m.challenge_round_lag_seconds.clone(),
        );
        registry.register(
            "challenge_round_late_nodes",
            "Round challenges issued late because their node (no usable report) or its member (unreachable) was not there when the hub first found them due; they run on the round's clock",
            m.challenge_round_late_nodes_total.clone(),
        );
        registry.register(
            "challenge_round_grace_seconds",
            "How late after a round's start a round challenge may be issued on its own clock (--challenge-round-grace)",
            m.challenge_round_grace_seconds.clone(),
        );
        registry.register(
            "challenge_round_trip_seconds",
            "Time from a challenge's request to the hub seeing the node's commitment, by band model",
            m.challenge_round_trip_seconds.clone(),
        );
        registry.register(
            "challenge_round_trip_limit_seconds",
            "The longest round trip a band allows (maxKernelMicros + roundTripSlackMs), by model",
            m.challenge_round_trip_limit_seconds.clone(),
        );
        registry.register(
            "member_probes",
            "Successful probes of member clusters, by kind (whole; reports or watched: reports only while a challenge is open)",
            m.member_probes_total.clone(),
        );
        registry.register(
            "verification_unreadable_maps",
            "Providers whose kept node-key pins or verdicts cannot be read (a shard missing or another's; a VerificationStateUnreadable Warning Event on the GpuProvider names it): their verification waits",
            m.verification_unreadable_maps.clone(),
        );
        registry.register(
            "evidence_recorded",
            "Evidence documents recorded against providers (failed challenges)",
            m.evidence_recorded_total.clone(),
        );
        registry.register(
            "placement_excluded_nodes",
            "Reported GPU nodes the last placement round left out as invalid, by reason",
            m.placement_excluded_nodes.clone(),
        );
        registry.register(
            "placement_excluded_providers",
            "Providers the last placement round left out: the engine rejected their inventory",
            m.placement_excluded_providers.clone(),
        );
        registry.register(
            "service_replicas_created",
            "ComputeService replicas created (scale-ups, replacements, rollouts)",
            m.service_replicas_created_total.clone(),
        );
        registry.register(
            "service_replicas_retired",
            "ComputeService replicas retired (scale-downs, rollouts, deletion)",
            m.service_replicas_retired_total.clone(),
        );
        registry.register(
            "service_stalls",
            "ComputeServices that became stuck (Stalled=True), by reason",
            m.service_stalls_total.clone(),
        );
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        info.get_or_create(&vec![(
            "version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )])
        .set(1);
        registry.register("build_info", "Build information", info);
        m.seed_counters();
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Creates every counter series of a known label at 0: Prometheus's `increase()` does
    /// not count a series appearing, so a counter born at 1 (the first eviction, the first
    /// failed challenge of a reason, the first stall) would never fire its alert — after
    /// every restart or leader change, the families start empty again.
    fn seed_counters(&self) {
        for cause in EVICTION_CAUSES {
            drop(self.evictions_total.get_or_create(&EvictionLabel { cause }));
        }
        for result in std::iter::once("passed").chain(gpufed_trust::Failure::REASONS) {
            drop(self.challenges_total.get_or_create(&ChallengeLabel { result }));
        }
        for reason in STALL_REASONS {
            let reason = reason.to_owned();
            drop(self.service_stalls_total.get_or_create(&StallLabel { reason }));
        }
    }

    /// Sets the providers-by-health gauges (both states, so a state that empties reads 0).
    pub fn set_providers(&self, ready: usize, not_ready: usize) {
        for (state, n) in [("ready", ready), ("not_ready", not_ready)] {
            self.providers
                .get_or_create(&HealthLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the unplaced-jobs gauges from one round's `Placed` reasons (every known
    /// reason, so one that empties reads 0).
    pub fn set_unplaced(&self, reasons: &[&'static str]) {
        for reason in crate::placement::UNPLACED_REASONS {
            let n = reasons.iter().filter(|r| **r == reason).count();
            self.unplaced_jobs
                .get_or_create(&WaitingLabel { reason })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the fleet GPU gauges from one placement round's snapshot counts.
    pub fn set_fleet_gpus(&self, total: u64, free: u64) {
        for (state, n) in [("total", total), ("free", free)] {
            self.fleet_gpus
                .get_or_create(&GpuStateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the excluded-inventory gauges from one placement round's findings (every
    /// reason, so one that empties reads 0).
    pub fn set_excluded(&self, findings: &[crate::mapping::sanitize::Finding]) {
        let nodes = |reason: &str| -> usize {
            findings
                .iter()
                .filter(|f| f.problem.label() == reason)
                .map(|f| f.problem.nodes())
                .sum()
        };
        for reason in ["no_gpus", "duplicate_node"] {
            self.placement_excluded_nodes
                .get_or_create(&ExcludedLabel { reason })
                .set(i64::try_from(nodes(reason)).unwrap_or(i64::MAX));
        }
        let rejected: std::collections::BTreeSet<&str> = findings
            .iter()
            .filter(|f| matches!(f.problem, crate::mapping::sanitize::Problem::Rejected(_)))
            .map(|f| f.provider.as_str())
            .collect();
        self.placement_excluded_providers
            .set(i64::try_from(rejected.len()).unwrap_or(i64::MAX));
    }

    /// Sets each band's round-trip limit gauge (at start: the bands do not change).
    pub fn set_round_trip_limits(&self, bands: &gpufed_trust::Bands) {
        for band in &bands.bands {
            #[allow(clippy::cast_precision_loss)] // milliseconds well under 2^52
            let secs = band.max_round_trip_ms() as f64 / 1000.0;
            self.challenge_round_trip_limit_seconds
                .get_or_create(&ModelLabel {
                    model: band.model.clone(),
                })
                .set(secs);
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "metrics_dashboard_tests.rs"]
mod dashboard_tests;

#[cfg(test)]
#[path = "metrics_alerts_tests.rs"]
mod alerts_tests;
