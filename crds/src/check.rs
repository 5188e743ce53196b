//! The CEL rules of the CRDs, in Rust. API servers before 1.25 drop CEL rules, so the
//! operator runs these before acting on an object and reports a violation as a
//! `Stalled` condition (reason `InvalidSpec`) naming the field. A test keeps both in
//! step: every CEL fixture in `examples/invalid/` is refused by both. Job specs are also
//! held to the `restricted` pod security profile ([`crate::pod_security`]), which no
//! schema can express (fixtures `rejected-by: operator`).

use crate::formats::{self, parse_decimal};
use crate::job::{Interconnect, MAX_NVLINK_DOMAIN_GPUS, MAX_TOTAL_GPUS};
use crate::provider::ConnectionMode;
use crate::schema_check::FieldError;
use crate::{ComputeJob, ComputeJobSpec, GpuProviderSpec, StakeSpec};

fn field(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn positive_decimal(path: &str, value: &str, errors: &mut Vec<FieldError>) {
    match parse_decimal(value) {
        Ok(0) => errors.push(field(path, "must be greater than 0")),
        Ok(_) => {}
        Err(e) => errors.push(field(path, e.to_string())),
    }
}

fn gpu_requirements(gpu: &crate::job::GpuRequirements, errors: &mut Vec<FieldError>) {
    if let Some(m) = &gpu.min_memory
        && let Err(e) = formats::parse_memory_mib(m)
    {
        errors.push(field("spec.gpu.minMemory", e.to_string()));
    }
    if let Some(cc) = &gpu.min_compute_capability
        && let Err(e) = formats::parse_compute_capability(cc)
    {
        errors.push(field("spec.gpu.minComputeCapability", e.to_string()));
    }
}

/// Checks a service spec's cross-field rules.
pub fn service_spec(spec: &crate::ComputeServiceSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    positive_decimal(
        "spec.maxPricePerGpuHour",
        &spec.max_price_per_gpu_hour,
        &mut errors,
    );
    if spec.placement.spread.is_some() {
        errors.push(field(
            "spec.placement.spread",
            "not used by a ComputeService: set spec.spread (Provider, Region or None)",
        ));
    }
    gpu_requirements(&spec.gpu, &mut errors);
    if spec.gpu.interconnect == Interconnect::NVLink && spec.gpus_per_replica < 2 {
        errors.push(field(
            "spec.gpu.interconnect",
            "NVLink needs gpusPerReplica of at least 2",
        ));
    }
    if let Err(bad) = spec.rollout.check() {
        errors.extend(bad.into_iter().map(|(f, e)| field(f, e)));
    }
    if let Some(Err(bad)) = spec
        .disruption_budget
        .as_ref()
        .map(|b| b.min_healthy(spec.replicas))
    {
        errors.extend(bad.into_iter().map(|(f, e)| field(f, e)));
    }
    errors
}

/// Checks a job spec's cross-field rules.
pub fn job_spec(spec: &ComputeJobSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let total = u64::from(spec.workers) * u64::from(spec.gpus_per_worker);
    if total > u64::from(MAX_TOTAL_GPUS) {
        errors.push(field(
            "spec.workers",
            format!("workers × gpusPerWorker = {total}, at most {MAX_TOTAL_GPUS}"),
        ));
    }
    if spec.gpu.interconnect == Interconnect::NVLinkDomain && total > u64::from(MAX_NVLINK_DOMAIN_GPUS) {
        errors.push(field(
            "spec.gpu.interconnect",
            format!("a gang in one NVLink domain may use at most {MAX_NVLINK_DOMAIN_GPUS} GPUs, not {total}"),
        ));
    }
    if spec.gpu.interconnect == Interconnect::NVLink && spec.gpus_per_worker < 2 {
        errors.push(field(
            "spec.gpu.interconnect",
            "NVLink needs gpusPerWorker of at least 2",
        ));
    }
    positive_decimal(
        "spec.maxPricePerGpuHour",
        &spec.max_price_per_gpu_hour,
        &mut errors,
    );
    if spec.serving.is_some() && spec.workers != 1 {
        errors.push(field(
            "spec.workers",
            "a serving job (spec.serving) has exactly one worker",
        ));
    }
    for (path, d) in [
        ("spec.maxDuration", &spec.max_duration),
        ("spec.startTimeout", &spec.start_timeout),
    ] {
        match d.as_deref().map(formats::parse_duration) {
            Some(Ok(0)) => errors.push(field(path, "must be longer than 0s")),
            Some(Err(e)) => errors.push(field(path, e.to_string())),
            Some(Ok(_)) | None => {}
        }
    }
    gpu_requirements(&spec.gpu, &mut errors);
    errors.extend(crate::pod_security::check(&spec.template.spec));
    errors
}

/// Checks a job update: the gang shape and GPU requirements are frozen once placed.
pub fn job_update(old: &ComputeJob, new: &ComputeJob) -> Vec<FieldError> {
    let mut errors = job_spec(&new.spec);
    let placed = old.status.as_ref().is_some_and(|s| s.placement.is_some());
    let (o, n) = (&old.spec, &new.spec);
    if placed && (o.workers != n.workers || o.gpus_per_worker != n.gpus_per_worker || o.gpu != n.gpu) {
        errors.push(field(
            "spec",
            "workers, gpusPerWorker and gpu are immutable once the job is placed",
        ));
    }
    errors
}

/// Checks that a placed job's spec still has the gang shape its live placement was made
/// for. The CEL rule that freezes `workers`, `gpusPerWorker` and `gpu` once a job is placed
/// ([`job_update`]) needs the stored object, which the operator does not see, and API
/// servers before 1.25 drop it; so the operator compares the spec with what the placement
/// recorded from it instead: one worker entry per worker, and `workers × gpusPerWorker`
/// GPUs. (`spec.gpu` is not recorded: it only decides where the next attempt goes, while
/// pods and billing follow the shape.) A finished job's last placement is a record only.
pub fn job_placement(job: &ComputeJob) -> Vec<FieldError> {
    use crate::job_status::JobPhase;
    let mut errors = Vec::new();
    let Some(st) = job.status.as_ref() else {
        return errors;
    };
    let Some(p) = st.placement.as_ref() else {
        return errors;
    };
    if matches!(st.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        return errors;
    }
    let spec = &job.spec;
    let how = "workers, gpusPerWorker and gpu are immutable once the job is placed: set it back, or suspend \
               the job until its attempt has stopped and change it then";
    // A placement written without per-worker entries tells nothing of the worker count.
    let placed_workers = match p.workers.len() {
        0 => spec.workers,
        n => u32::try_from(n).unwrap_or(u32::MAX),
    };
    if placed_workers != spec.workers {
        errors.push(field(
            "spec.workers",
            format!(
                "is {} but attempt {} runs {placed_workers} workers; {how}",
                spec.workers, p.attempt
            ),
        ));
    }
    if u64::from(p.gpus) != u64::from(placed_workers) * u64::from(spec.gpus_per_worker) {
        let per_worker = p.gpus.checked_div(placed_workers).unwrap_or(p.gpus);
        errors.push(field(
            "spec.gpusPerWorker",
            format!(
                "is {} but attempt {} runs {per_worker} GPUs per worker ({} in all); {how}",
                spec.gpus_per_worker, p.attempt, p.gpus
            ),
        ));
    }
    errors
}

/// A field path without its list indices: `spec.gpu.models[2]` → `spec.gpu.models`
/// (how an API server names a field inside a list in some of its errors).
pub fn without_indices(path: &str) -> String {
    let mut plain = String::with_capacity(path.len());
    let mut depth = 0u32;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    plain
}

/// Checks a provider spec's cross-field rules.
pub fn provider_spec(spec: &GpuProviderSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.mode == ConnectionMode::Push && spec.kubeconfig_secret_ref.is_none() {
        errors.push(field(
            "spec.kubeconfigSecretRef",
            "required when spec.mode is Push",
        ));
    }
    for (i, p) in spec.prices.iter().enumerate() {
        positive_decimal(
            &format!("spec.prices[{i}].pricePerGpuHour"),
            &p.price_per_gpu_hour,
            &mut errors,
        );
    }
    // Zero would count a provider lost at its first failed probe and fail every job on it
    // over (CEL refuses it too, on API servers that keep CEL rules).
    match formats::parse_duration(&spec.heartbeat_grace_period) {
        Ok(0) => errors.push(field("spec.heartbeatGracePeriod", "must be longer than 0s")),
        Ok(_) => {}
        Err(e) => errors.push(field("spec.heartbeatGracePeriod", e.to_string())),
    }
    if let Some(Err(e)) = spec.drain_deadline.as_deref().map(formats::parse_duration) {
        errors.push(field("spec.drainDeadline", e.to_string()));
    }
    let selector = spec.tenants.as_ref().and_then(|t| t.namespace_selector.as_ref());
    for (i, e) in selector
        .iter()
        .flat_map(|s| s.match_expressions.iter())
        .enumerate()
    {
        if !e.is_well_formed() {
            errors.push(field(
                &format!("spec.tenants.namespaceSelector.matchExpressions[{i}].values"),
                "In and NotIn need values, Exists and DoesNotExist take none",
            ));
        }
    }
    for (i, t) in spec.worker_tolerations.iter().enumerate() {
        if let Some(problem) = t.problem() {
            errors.push(field(&format!("spec.workerTolerations[{i}]"), problem));
        }
    }
    errors
}

/// Checks a stake spec, and against the stored one on updates.
pub fn stake_spec(old: Option<&StakeSpec>, new: &StakeSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    positive_decimal("spec.amount", &new.amount, &mut errors);
    if let Some(old) = old {
        if (
            &old.provider,
            &old.amount,
            &old.deposit_signature,
            &old.staker_wallet,
        ) != (
            &new.provider,
            &new.amount,
            &new.deposit_signature,
            &new.staker_wallet,
        ) {
            errors.push(field(
                "spec.depositSignature",
                "provider, amount, depositSignature and stakerWallet are immutable; create a new Stake",
            ));
        }
        if old.unbond && !new.unbond {
            errors.push(field("spec.unbond", "cannot be undone once requested"));
        }
    }
    errors
}

/// Checks a quota spec: it caps something, and its spend is a decimal.
pub fn quota_spec(spec: &crate::ComputeQuotaSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.gpus.is_none() && spec.max_spend_per_hour.is_none() {
        errors.push(field(
            "spec.gpus",
            "set spec.gpus, spec.maxSpendPerHour or both: a quota without either caps nothing",
        ));
    }
    if let Some(s) = &spec.max_spend_per_hour
        && let Err(e) = parse_decimal(s)
    {
        errors.push(field("spec.maxSpendPerHour", e.to_string()));
    }
    errors
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_lose_their_list_indices_only() {
        use super::without_indices;
        assert_eq!(without_indices("spec.gpu.models[2]"), "spec.gpu.models");
        assert_eq!(
            without_indices("spec.tenants.namespaceSelector.matchExpressions[0].operator"),
            "spec.tenants.namespaceSelector.matchExpressions.operator"
        );
        assert_eq!(without_indices("a[1][2].b"), "a.b");
        assert_eq!(without_indices("spec.workers"), "spec.workers");
        assert_eq!(
            without_indices("odd]path[x"),
            "oddpath",
            "unbalanced brackets never panic"
        );
    }
}
