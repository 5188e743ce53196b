//! Pure: `submit` flags → a ComputeJob, validated as the API server would (the CRD's
//! schema and the Rust copy of its CEL rules) and as the operator checks its template,
//! each error naming the flag to change.

use std::collections::BTreeMap;

use gpufed_api::job::{
    Checkpoint, FailurePolicy, GpuRequirements, GpuTier, Interconnect, OpenObject, PlacementConstraints,
    ProviderLossAction, TemplateMetadata, WorkerPodSpec, WorkerTemplate,
};
use gpufed_api::{ComputeJob, ComputeJobSpec, check, crd, schema_check};
use serde_json::{Map, Value, json};

use crate::cli::{InterconnectArg, LossArg, SubmitArgs, TierArg};
use crate::error::{Error, Result};

/// Field manager of the plugin's server-side applies.
pub const FIELD_MANAGER: &str = "kubectl-gpufed";

/// Which flag sets which field (longest prefix first where they nest).
const FIELD_FLAGS: &[(&str, &str)] = &[
    ("metadata.name", "NAME"),
    ("spec.gpusPerWorker", "--gpus-per-worker"),
    ("spec.workers", "--workers"),
    ("spec.gpu.models", "--model"),
    ("spec.gpu.tier", "--tier"),
    ("spec.gpu.minMemory", "--min-memory"),
    ("spec.gpu.minComputeCapability", "--min-compute-capability"),
    ("spec.gpu.interconnect", "--interconnect"),
    ("spec.maxPricePerGpuHour", "--max-price"),
    ("spec.maxDuration", "--max-duration"),
    ("spec.startTimeout", "--start-timeout"),
    ("spec.ttlSecondsAfterFinished", "--ttl-after-finished"),
    ("spec.placement.regions", "--region"),
    ("spec.placement.providers", "--provider"),
    ("spec.placement.preferredProviders", "--prefer"),
    ("spec.placement.minReputation", "--min-reputation"),
    ("spec.failurePolicy.maxAttempts", "--max-attempts"),
    ("spec.checkpoint.uri", "--checkpoint"),
    ("spec.checkpoint.credentialsSecret", "--checkpoint-secret"),
    ("spec.priority", "--priority"),
    ("spec.template.metadata.labels", "--label"),
    // The container's fields that other flags set, before the container as a whole.
    ("spec.template.spec.containers.env", "--env"),
    ("spec.template.spec.containers.resources.requests.cpu", "--cpu"),
    (
        "spec.template.spec.containers.resources.requests.memory",
        "--memory",
    ),
    ("spec.template.spec.containers", "--image"),
];

/// The flag that sets the field at `path` (`spec.gpu.models[2]` → `--model`).
pub fn flag_for(path: &str) -> Option<&'static str> {
    let plain = gpufed_api::check::without_indices(path);
    FIELD_FLAGS
        .iter()
        .find(|(field, _)| plain == *field || plain.starts_with(&format!("{field}.")))
        .map(|(_, flag)| *flag)
}

fn key_value(flag: &str, text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Error::Flag {
            flag: flag.to_owned(),
            message: format!("expected KEY=VALUE, got {text:?}"),
        }),
    }
}

/// `--ttl-after-finished` in seconds.
fn ttl_after_finished(text: Option<&str>) -> Result<Option<u32>> {
    let Some(text) = text else { return Ok(None) };
    let bad = |message: String| Error::Flag {
        flag: "--ttl-after-finished".to_owned(),
        message,
    };
    let secs = gpufed_api::formats::parse_duration(text).map_err(|e| bad(e.to_string()))?;
    u32::try_from(secs)
        .map(Some)
        .map_err(|_| bad(format!("{text} is too long (at most {} seconds)", u32::MAX)))
}

/// `--cpu` / `--memory`: a Kubernetes quantity, checked here because the API server's
/// refusal would name only the container.
fn quantity(flag: &str, text: &str) -> Result<Value> {
    gpufed_api::formats::parse_quantity(text).map_err(|e| Error::Flag {
        flag: flag.to_owned(),
        message: e.to_string(),
    })?;
    Ok(json!(text))
}

/// A label name, or a non-empty label value: at most 63 letters, digits, '-', '_' or '.',
/// starting and ending with a letter or digit.
fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

/// A DNS subdomain (a label key's prefix): at most 253 characters, dot-separated parts of
/// lower-case letters, digits and '-', each starting and ending with a letter or digit.
fn is_dns_subdomain(s: &str) -> bool {
    let part = |p: &str| {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && alnum(p.chars().next())
            && alnum(p.chars().last())
    };
    s.len() <= 253 && s.split('.').all(part)
}

/// `--label KEY=VALUE` in Kubernetes' label syntax (`[prefix/]name=value`). The schema
/// does not check label syntax: without this the API server would refuse the job with a
/// message naming no flag, or a member cluster would refuse its pods.
fn label(text: &str) -> Result<(String, String)> {
    let (key, value) = key_value("--label", text)?;
    let bad = |message: String| Error::Flag {
        flag: "--label".to_owned(),
        message,
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key.as_str()),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(bad(format!(
            "the prefix {prefix:?} of key {key:?} must be a DNS subdomain: at most 253 lower-case letters, digits, '-' or '.', each part between dots starting and ending with a letter or digit"
        )));
    }
    // A second '/' is left in `name`, which refuses it.
    if !is_label_name(name) {
        return Err(bad(format!(
            "the name {name:?} of key {key:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (an optional prefix ends with '/')"
        )));
    }
    if !value.is_empty() && !is_label_name(&value) {
        return Err(bad(format!(
            "the value {value:?} of {key:?} must be empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )));
    }
    Ok((key, value))
}

fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(ok_char)
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

fn container(args: &SubmitArgs) -> Result<OpenObject> {
    let mut c = Map::new();
    c.insert("name".into(), json!("worker"));
    c.insert("image".into(), json!(args.image));
    if !args.args.is_empty() {
        let key = if args.command { "command" } else { "args" };
        c.insert(key.into(), json!(args.args));
    }
    if !args.env.is_empty() {
        let env = args
            .env
            .iter()
            .map(|e| key_value("--env", e).map(|(k, v)| json!({"name": k, "value": v})))
            .collect::<Result<Vec<_>>>()?;
        c.insert("env".into(), Value::Array(env));
    }
    let mut requests = Map::new();
    if let Some(cpu) = &args.cpu {
        requests.insert("cpu".into(), quantity("--cpu", cpu)?);
    }
    if let Some(memory) = &args.memory {
        requests.insert("memory".into(), quantity("--memory", memory)?);
    }
    if !requests.is_empty() {
        c.insert("resources".into(), json!({ "requests": requests }));
    }
    Ok(OpenObject(c))
}

/// The spec the flags describe (not yet validated).
pub fn spec(args: &SubmitArgs) -> Result<ComputeJobSpec> {
    let labels = args
        .labels
        .iter()
        .map(|l| label(l))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let mut placement = PlacementConstraints {
        regions: args.regions.clone(),
        providers: args.providers.clone(),
        preferred_providers: args.preferred.clone(),
        verified_only: !args.allow_unverified,
        preempt_lower_priority: args.preempt,
        ..Default::default()
    };
    if let Some(r) = args.min_reputation {
        placement.min_reputation = r;
    }
    let mut failure_policy = FailurePolicy::default();
    if let Some(n) = args.max_attempts {
        failure_policy.max_attempts = n;
    }
    if let Some(loss) = args.on_provider_loss {
        failure_policy.on_provider_loss = match loss {
            LossArg::Failover => ProviderLossAction::Failover,
            LossArg::Fail => ProviderLossAction::Fail,
        };
    }
    Ok(ComputeJobSpec {
        template: WorkerTemplate {
            metadata: (!labels.is_empty()).then(|| TemplateMetadata {
                labels,
                annotations: BTreeMap::new(),
            }),
            spec: WorkerPodSpec {
                containers: vec![container(args)?],
                rest: BTreeMap::new(),
            },
        },
        workers: args.workers,
        gpus_per_worker: args.gpus_per_worker,
        gpu: GpuRequirements {
            models: args.models.clone(),
            tier: match args.tier {
                None | Some(TierArg::Any) => GpuTier::Any,
                Some(TierArg::Datacenter) => GpuTier::Datacenter,
                Some(TierArg::Consumer) => GpuTier::Consumer,
            },
            min_memory: args.min_memory.clone(),
            min_compute_capability: args.min_compute_capability.clone(),
            interconnect: match args.interconnect {
                None | Some(InterconnectArg::Any) => Interconnect::Any,
                Some(InterconnectArg::NvLink) => Interconnect::NVLink,
                Some(InterconnectArg::NvLinkDomain) => Interconnect::NVLinkDomain,
            },
        },
        max_price_per_gpu_hour: args.max_price.clone(),
        max_duration: args.max_duration.clone(),
        start_timeout: args.start_timeout.clone(),
        placement,
        failure_policy,
        checkpoint: args.checkpoint.as_ref().map(|uri| Checkpoint {
            uri: uri.clone(),
            credentials_secret: args.checkpoint_secret.clone(),
        }),
        egress: if args.internet {
            gpufed_api::job::Egress::Internet
        } else {
            gpufed_api::job::Egress::Namespace
        },
        priority: args.priority.unwrap_or(100),
        suspend: args.suspend,
        ttl_seconds_after_finished: ttl_after_finished(args.ttl_after_finished.as_deref())?,
        serving: None,
    })
}

/// Every reason the API server (or the operator, for CEL rules an old server skips)
/// would refuse `job`, as (flag, message), friendliest first, one per flag.
pub fn problems(job: &ComputeJob) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |path: &str, message: String| {
        let flag = flag_for(path).map_or_else(|| format!("job ({path})"), str::to_owned);
        if !out.iter().any(|(f, _)| *f == flag) {
            out.push((flag, message));
        }
    };
    let name = job.metadata.name.as_deref().unwrap_or_default();
    if !valid_name(name) {
        add(
            "metadata.name",
            format!(
                "{name:?} must be at most 63 lower-case letters, digits, '-' or '.', starting and ending with a letter or digit"
            ),
        );
    }
    for e in check::job_spec(&job.spec) {
        add(&e.path, e.message);
    }
    // What the operator would refuse before placement (`InvalidTemplate`).
    if let Some(e) = gpufed_operator::job::build::template_error(&job.spec) {
        let (path, message) = e.split_once(": ").unwrap_or(("spec.template", e.as_str()));
        add(path, message.to_owned());
    }
    let schema = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "ComputeJob")
        .and_then(|c| c.spec.versions.into_iter().next())
        .and_then(|v| v.schema)
        .and_then(|s| s.open_api_v3_schema)
        .and_then(|s| serde_json::to_value(s).ok());
    match (schema, serde_json::to_value(job)) {
        (Some(schema), Ok(object)) => {
            for e in schema_check::check(&schema, &object).errors {
                add(&e.path, e.message);
            }
        }
        _ => add("spec", "the ComputeJob schema is unavailable".into()),
    }
    out
}

/// The ComputeJob `submit` creates in `namespace`, or the first flag the API would refuse.
pub fn build(args: &SubmitArgs, namespace: &str) -> Result<ComputeJob> {
    let mut job = ComputeJob::new(&args.name, spec(args)?);
    job.metadata.namespace = Some(namespace.to_owned());
    match problems(&job).into_iter().next() {
        Some((flag, message)) => Err(Error::Flag { flag, message }),
        None => Ok(job),
    }
}

#[cfg(test)]
#[path = "submit_tests.rs"]
mod tests;
