//! Pure: the objects a `ComputeService` owns — its replica `ComputeJob`s (one worker,
//! `spec.serving` set, spread group = the service) and, at the hub, a Service without
//! selector whose Endpoints are the ready replicas.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gpufed_api::job::{ComputeJobSpec, FailurePolicy, ProviderLossAction};
use gpufed_api::serving::{LABEL_SERVICE, Serving, Spread};
use gpufed_api::{ComputeJob, ComputeService};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

/// Label: the service spec revision a replica was created from (a spec change rolls
/// the replicas: new ones first, old ones retired once enough new ones are ready).
pub const LABEL_REVISION: &str = "gpufed.io/service-revision";
/// Finalizer: replicas are stopped and metered before the service goes.
pub const FINALIZER: &str = "gpufed.io/replicas-metered";

/// The replica `ComputeJob` spec a service asks for.
pub fn replica_spec(svc: &ComputeService) -> ComputeJobSpec {
    let s = &svc.spec;
    let mut placement = s.placement.clone();
    placement.spread = s.spread.domain().map(|across| Spread {
        group: svc.name_any(),
        across,
    });
    ComputeJobSpec {
        template: s.template.clone(),
        workers: 1,
        gpus_per_worker: s.gpus_per_replica,
        gpu: s.gpu.clone(),
        max_price_per_gpu_hour: s.max_price_per_gpu_hour.clone(),
        max_duration: None,
        start_timeout: None,
        placement,
        failure_policy: FailurePolicy {
            max_attempts: 3,
            on_provider_loss: ProviderLossAction::Failover,
        },
        checkpoint: None,
        egress: Default::default(),
        priority: s.priority,
        suspend: false,
        ttl_seconds_after_finished: None,
        serving: Some(Serving {
            port: s.port.clone(),
            readiness_probe: s.readiness_probe.clone(),
        }),
    }
}

/// Short hash of the replica spec: replicas of another revision are rolled.
pub fn revision(spec: &ComputeJobSpec) -> String {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn owner(svc: &ComputeService) -> OwnerReference {
    OwnerReference {
        api_version: "gpufed.io/v1alpha1".into(),
        kind: "ComputeService".into(),
        name: svc.name_any(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Replica `index`'s name: `<service>-<index>`.
pub fn replica_name(svc: &str, index: u32) -> String {
    format!("{svc}-{index}")
}

/// The index of a replica from its name, if it is one of `svc`'s.
pub fn replica_index(svc: &str, name: &str) -> Option<u32> {
    name.strip_prefix(svc)?.strip_prefix('-')?.parse().ok()
}

/// A new replica job.
pub fn replica(svc: &ComputeService, index: u32, spec: &ComputeJobSpec, rev: &str) -> ComputeJob {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_owned(), "gpufed".to_owned()),
        (LABEL_SERVICE.to_owned(), svc.name_any()),
        (LABEL_REVISION.to_owned(), rev.to_owned()),
    ]);
    let mut job = ComputeJob::new(&replica_name(&svc.name_any(), index), spec.clone());
    job.metadata.namespace = svc.namespace();
    job.metadata.labels = Some(labels);
    job.metadata.owner_references = Some(vec![owner(svc)]);
    job
}

fn hub_meta(svc: &ComputeService) -> ObjectMeta {
    ObjectMeta {
        name: Some(svc.name_any()),
        namespace: svc.namespace(),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/managed-by".to_owned(), "gpufed".to_owned()),
            (LABEL_SERVICE.to_owned(), svc.name_any()),
        ])),
        owner_references: Some(vec![owner(svc)]),
        ..Default::default()
    }
}

/// The hub Service: no selector, so its Endpoints are ours to write.
pub fn hub_service(svc: &ComputeService) -> Service {
    let port = &svc.spec.port;
    Service {
        metadata: hub_meta(svc),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(vec![ServicePort {
                name: Some(port.name.clone()),
                port: i32::from(port.port),
                target_port: Some(IntOrString::Int(i32::from(port.port))),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a provider-reported address may be routed by a hub Service: never loopback,
/// link-local, multicast or unspecified (they would reach the hub's own processes), and
/// inside `allowed` when that is set.
pub fn routable(ip: IpAddr, allowed: &[ipnet::IpNet]) -> bool {
    // `::ffff:127.0.0.1` is 127.0.0.1: judge IPv4-mapped addresses as IPv4.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    !special && (allowed.is_empty() || allowed.iter().any(|n| n.contains(&ip)))
}

/// The hub Endpoints: ready replicas whose address is a routable `IP:port`, and the
/// addresses refused (a host name, as a load balancer may give, cannot be an endpoint;
/// it stays in the service's status). Subsets group addresses by port, since every
/// replica has its own node port.
pub fn hub_endpoints(
    svc: &ComputeService,
    ready: &[String],
    allowed: &[ipnet::IpNet],
) -> (Endpoints, Vec<String>) {
    let mut by_port: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut refused = Vec::new();
    for a in ready {
        let parsed = a
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.parse::<IpAddr>().ok()?, port.parse::<i32>().ok()?)));
        match parsed {
            // A port the API server would refuse (a provider's reported node port is not
            // checked) would fail the whole Endpoints write, freezing every replica's
            // address, dead ones included.
            Some((ip, port)) if (1..=65535).contains(&port) && routable(ip, allowed) => {
                by_port.entry(port).or_default().push(ip.to_string())
            }
            _ => refused.push(a.clone()),
        }
    }
    let subsets = by_port
        .into_iter()
        .map(|(port, mut ips)| {
            ips.sort();
            ips.dedup();
            EndpointSubset {
                addresses: Some(
                    ips.into_iter()
                        .map(|ip| EndpointAddress {
                            ip,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: Some(vec![EndpointPort {
                    name: Some(svc.spec.port.name.clone()),
                    port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }
        })
        .collect();
    let endpoints = Endpoints {
        metadata: hub_meta(svc),
        subsets: Some(subsets),
    };
    (endpoints, refused)
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
