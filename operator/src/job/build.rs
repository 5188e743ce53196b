//! Pure: the member-side objects of one attempt — tenant namespace (pod security
//! `restricted`), default-deny NetworkPolicy (the gang may talk to itself), a quota,
//! the gang's headless Service, and the worker pods.

use std::collections::BTreeMap;

use gpufed_api::job_status::Placement;
use gpufed_api::{ComputeJob, ComputeJobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, Namespace, Pod, PodSecurityContext, PodSpec, ResourceQuota, ResourceQuotaSpec,
    ResourceRequirements, SeccompProfile, Secret, SecurityContext, Service, ServiceSpec, Toleration,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;

use super::{names, serving};

pub mod affinity;
pub mod checkpoint;
pub mod credentials;
mod egress;
mod owned;
pub use egress::internet_allowed;

/// Everything an attempt needs in its member cluster.
#[derive(Debug, Clone)]
pub struct MemberObjects {
    /// The tenant namespace.
    pub namespace: Namespace,
    /// Default deny, except traffic inside the namespace.
    pub network_policy: NetworkPolicy,
    /// GPUs and pods of the namespace capped at the gang's size.
    pub quota: ResourceQuota,
    /// Headless Service for the gang's rendezvous; none for a single worker (its rank 0
    /// is itself), which spares the member's endpoint controllers a Service per job.
    pub service: Option<Service>,
    /// A serving replica's Service exposing its port ([`super::serving`]).
    pub exposure: Option<Service>,
    /// The attempt's copy of the tenant's checkpoint credentials ([`credentials`]): not
    /// built here (the tenant's Secret is read from the hub), added by
    /// [`with_credentials`] before dispatch.
    pub credentials: Option<Secret>,
    /// Worker pods, by rank.
    pub pods: Vec<Pod>,
}

/// Adds the attempt's copy of the checkpoint credentials `data` to `objects`.
pub fn with_credentials(
    objects: &mut MemberObjects,
    job: &ComputeJob,
    attempt: u32,
    data: BTreeMap<String, k8s_openapi::ByteString>,
) {
    let ns = objects.namespace.name_any();
    objects.credentials = Some(credentials::member_secret(&ns, &job_labels(job), attempt, data));
}

fn meta(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

/// Labels common to all objects of a job.
pub fn job_labels(job: &ComputeJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_owned(), "gpufed".to_owned()),
        (names::LABEL_JOB_UID.to_owned(), job.uid().unwrap_or_default()),
        (
            names::LABEL_JOB_NAMESPACE.to_owned(),
            job.namespace().unwrap_or_default(),
        ),
        (
            names::LABEL_JOB_NAME.to_owned(),
            names::job_name_label(&job.name_any()),
        ),
    ])
}

/// The annotation naming the job in full, where [`job_labels`] could not (a name over 63
/// characters): a member pod's change is traced back to its job by it. None otherwise, so
/// the objects of other jobs stay as they were.
fn job_annotation(job: &ComputeJob) -> Option<(String, String)> {
    let name = job.name_any();
    (names::job_name_label(&name) != name).then(|| (names::ANNOTATION_JOB_NAME.to_owned(), name))
}

/// The worker template as a `PodSpec`, with a serving job's port and readiness probe:
/// the part of [`build`] that can fail, and it depends on the spec alone.
pub fn template(spec: &ComputeJobSpec) -> Result<PodSpec, String> {
    let mut template: PodSpec = serde_json::to_value(&spec.template.spec)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("spec.template.spec: {e}"))?;
    if template.containers.is_empty() {
        return Err("spec.template.spec.containers: at least one container is required".into());
    }
    owned::check(&template)?;
    owned::check_metadata(spec.template.metadata.as_ref())?;
    if let Some(e) = gpufed_api::pod_security::reserved_env(&spec.template.spec).first() {
        return Err(e.to_string());
    }
    affinity::node_terms(&template)?;
    if let Some(s) = &spec.serving {
        serving::prepare(&mut template, s)?;
    }
    if let Some(e) = credentials::conflict(spec, &template) {
        return Err(e);
    }
    Ok(template)
}

/// Why `spec`'s pod template cannot be built into worker pods, naming the field; `None`
/// when it can. [`build`] fails exactly then, whatever the placement, so a job is checked
/// before it is placed ([`super::plan::plan`], [`crate::mapping::is_queued`]).
pub fn template_error(spec: &ComputeJobSpec) -> Option<String> {
    template(spec).err()
}

/// The parts of one worker pod of `spec` that decide what it requests, as
/// kube-scheduler counts them ([`crate::fleet::requests::pod_requests`],
/// [`crate::fleet::extended::pod_requests`]): the template's own, for [`worker_pod`] adds
/// GPUs, environment, mounts and affinity, but no container, no resources and no
/// overhead. Reads only the template's resource fields; a malformed one counts as
/// nothing.
pub fn worker_request_pod(spec: &ComputeJobSpec) -> k8s_openapi::api::core::v1::PodSpec {
    let t = &spec.template.spec;
    crate::fleet::requests::template_pod(t.containers.iter().map(|c| &c.0), &t.rest)
}

/// Builds the objects of `placement`'s attempt; an invalid pod template is an error
/// naming the field ([`template_error`]).
pub fn build(job: &ComputeJob, placement: &Placement, resource: &str) -> Result<MemberObjects, String> {
    let ns = names::tenant_namespace(&job.namespace().unwrap_or_default(), &job.name_any());
    let labels = job_labels(job);
    let mut ns_labels = labels.clone();
    for mode in ["enforce", "warn", "audit"] {
        ns_labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".to_owned(),
        );
    }
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            names::LABEL_JOB_UID.to_owned(),
            job.uid().unwrap_or_default(),
        )])),
        ..Default::default()
    };
    let same_namespace = vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    }];
    let network_policy = NetworkPolicy {
        metadata: meta("gpufed-default-deny", Some(&ns), &labels),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(
                std::iter::once(NetworkPolicyIngressRule {
                    from: Some(same_namespace.clone()),
                    ..Default::default()
                })
                .chain(job.spec.serving.as_ref().map(serving::ingress_rule))
                .collect(),
            ),
            egress: Some(egress::rules(&job.spec, same_namespace)),
        }),
    };
    let total = placement.gpus;
    let quota = ResourceQuota {
        metadata: meta("gpufed-gang", Some(&ns), &labels),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                format!("requests.{resource}"),
                Quantity(total.to_string()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = (job.spec.workers > 1).then(|| Service {
        metadata: meta(names::GANG_SERVICE, Some(&ns), &labels),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: selector.match_labels.clone(),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    });
    let template = template(&job.spec)?;
    let exposure = job
        .spec
        .serving
        .as_ref()
        .map(|s| serving::service(s, &ns, &labels, placement.attempt));
    let pods = placement
        .workers
        .iter()
        .map(|w| worker_pod(job, placement, &template, &ns, w.rank, &w.node, resource))
        .collect();
    Ok(MemberObjects {
        namespace: Namespace {
            metadata: ObjectMeta {
                annotations: job_annotation(job).map(|a| BTreeMap::from([a])),
                ..meta(&ns, None, &ns_labels)
            },
            ..Default::default()
        },
        network_policy,
        quota,
        service,
        exposure,
        credentials: None,
        pods,
    })
}

/// The labels of worker `rank` of `attempt`: the job's, the attempt and rank, then the
/// template's (ours win).
pub fn worker_labels(job: &ComputeJob, attempt: u32, rank: u32) -> BTreeMap<String, String> {
    let mut labels = job_labels(job);
    labels.insert(names::LABEL_ATTEMPT.into(), attempt.to_string());
    labels.insert(names::LABEL_RANK.into(), rank.to_string());
    let user = job.spec.template.metadata.as_ref().map(|m| &m.labels);
    for (k, v) in user.into_iter().flatten() {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    labels
}

fn worker_pod(
    job: &ComputeJob,
    placement: &Placement,
    template: &PodSpec,
    ns: &str,
    rank: u32,
    node: &str,
    resource: &str,
) -> Pod {
    let labels = worker_labels(job, placement.attempt, rank);
    let user = job.spec.template.metadata.clone().unwrap_or_default();
    let mut spec = template.clone();
    credentials::mount(&job.spec, &mut spec);
    let env = gang_env(job, placement, ns, rank);
    let gpus = Quantity(job.spec.gpus_per_worker.to_string());
    for (i, c) in spec.containers.iter_mut().enumerate() {
        c.env.get_or_insert_with(Vec::new).extend(env.iter().cloned());
        let sc = c.security_context.get_or_insert_with(SecurityContext::default);
        sc.allow_privilege_escalation.get_or_insert(false);
        sc.capabilities.get_or_insert(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        });
        if i == 0 {
            // The first container is the worker: it holds the GPUs.
            let res = c.resources.get_or_insert_with(ResourceRequirements::default);
            res.limits
                .get_or_insert_with(BTreeMap::new)
                .insert(resource.into(), gpus.clone());
            res.requests
                .get_or_insert_with(BTreeMap::new)
                .insert(resource.into(), gpus.clone());
        }
    }
    // Init containers get the same hardening: the restricted profile covers them too (a
    // member enforcing it would refuse the pod), and on one that does not they would run
    // with privilege escalation and the default capabilities.
    for c in spec.init_containers.iter_mut().flatten() {
        let sc = c.security_context.get_or_insert_with(SecurityContext::default);
        sc.allow_privilege_escalation.get_or_insert(false);
        sc.capabilities.get_or_insert(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        });
    }
    let psc = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    psc.run_as_non_root.get_or_insert(true);
    psc.seccomp_profile.get_or_insert(SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    });
    spec.restart_policy = Some("Never".into());
    spec.hostname = Some(names::worker_host(rank));
    spec.subdomain = (job.spec.workers > 1).then(|| names::GANG_SERVICE.into());
    spec.automount_service_account_token = Some(false);
    affinity::pin(&mut spec, node);
    let name = names::pod_name(&job.name_any(), placement.attempt, rank);
    let mut metadata = meta(&name, Some(ns), &labels);
    let mut annotations = user.annotations;
    // Ours wins over the template's: the operator finds the pod's job by it.
    annotations.extend(job_annotation(job));
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Pod {
        metadata,
        spec: Some(spec),
        ..Default::default()
    }
}

/// Adds `tolerations` (the provider's, [`gpufed_api::GpuProviderSpec::effective_tolerations`])
/// to every worker pod after the template's own: the taints the provider's inventory
/// counted a node despite are the ones its workers tolerate.
pub fn tolerate(objects: &mut MemberObjects, tolerations: &[gpufed_api::tolerations::WorkerToleration]) {
    let ours: Vec<Toleration> = tolerations
        .iter()
        .map(gpufed_api::tolerations::WorkerToleration::to_k8s)
        .collect();
    for pod in &mut objects.pods {
        let spec = pod.spec.get_or_insert_with(PodSpec::default);
        let list = spec.tolerations.get_or_insert_with(Vec::new);
        for t in &ours {
            if !list.contains(t) {
                list.push(t.clone());
            }
        }
    }
}

/// Rank 0's address: its name under the gang's Service, or itself for a single worker.
fn master_addr(job: &ComputeJob, ns: &str) -> String {
    if job.spec.workers > 1 {
        format!("{}.{}.{ns}.svc", names::worker_host(0), names::GANG_SERVICE)
    } else {
        "localhost".into()
    }
}

fn gang_env(job: &ComputeJob, placement: &Placement, ns: &str, rank: u32) -> Vec<EnvVar> {
    let var = |n: &str, v: String| EnvVar {
        name: n.into(),
        value: Some(v),
        ..Default::default()
    };
    let mut env = vec![
        var("GPUFED_WORLD_SIZE", job.spec.workers.to_string()),
        var("GPUFED_RANK", rank.to_string()),
        var("GPUFED_MASTER_ADDR", master_addr(job, ns)),
        var("GPUFED_ATTEMPT", placement.attempt.to_string()),
        var("GPUFED_GPUS_PER_WORKER", job.spec.gpus_per_worker.to_string()),
    ];
    env.extend(
        checkpoint::env(job, placement.attempt)
            .into_iter()
            .map(|(n, v)| var(n, v)),
    );
    env
}

#[cfg(test)]
mod tests;
