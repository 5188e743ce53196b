//! Pure: what makes a job a serving replica in its member cluster — the model server's
//! port and readiness probe, the Service that exposes it, the NetworkPolicy rule that
//! lets clients in — and the endpoint the hub reports from what was observed.

use std::collections::BTreeMap;

use gpufed_api::serving::{Endpoint, ExposeType, Exposure, Serving};
use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, Probe, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicyIngressRule, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names;
use super::plan::{PodPhase, PodView};

/// Name of the Service that exposes a serving replica in its tenant namespace.
pub const SERVING_SERVICE: &str = "serve";

fn type_name(t: ExposeType) -> &'static str {
    match t {
        ExposeType::ClusterIP => "ClusterIP",
        ExposeType::NodePort => "NodePort",
        ExposeType::LoadBalancer => "LoadBalancer",
    }
}

/// The Service exposing the replica's port, selecting the live attempt's pod only (a
/// fenced older attempt never receives traffic).
pub fn service(serving: &Serving, ns: &str, labels: &BTreeMap<String, String>, attempt: u32) -> Service {
    let uid = labels.get(names::LABEL_JOB_UID).cloned().unwrap_or_default();
    Service {
        metadata: ObjectMeta {
            name: Some(SERVING_SERVICE.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_name(serving.port.type_).to_owned()),
            selector: Some(BTreeMap::from([
                (names::LABEL_JOB_UID.to_owned(), uid),
                (names::LABEL_ATTEMPT.to_owned(), attempt.to_string()),
            ])),
            ports: Some(vec![ServicePort {
                name: Some(serving.port.name.clone()),
                port: i32::from(serving.port.port),
                target_port: Some(IntOrString::Int(i32::from(serving.port.port))),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The NetworkPolicy rule admitting clients to the served port (from anywhere; the rest
/// of the tenant namespace stays closed).
pub fn ingress_rule(serving: &Serving) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: None,
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(serving.port.port))),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
    }
}

/// Declares the port on the model server (first container) and gives it a readiness
/// probe: the template's own, else `spec.serving.readinessProbe`, else TCP on the port.
pub fn prepare(spec: &mut PodSpec, serving: &Serving) -> Result<(), String> {
    let Some(c) = spec.containers.first_mut() else {
        return Err("spec.template.spec.containers: at least one container is required".into());
    };
    let port = i32::from(serving.port.port);
    let ports = c.ports.get_or_insert_with(Vec::new);
    if !ports.iter().any(|p| p.container_port == port) {
        ports.push(ContainerPort {
            container_port: port,
            name: Some(serving.port.name.clone()),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        });
    }
    if c.readiness_probe.is_none() {
        let probe = match &serving.readiness_probe {
            Some(p) => serde_json::from_value(serde_json::Value::Object(p.0.clone()))
                .map_err(|e| format!("spec.serving.readinessProbe: {e}"))?,
            None => Probe {
                tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                    port: IntOrString::Int(port),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                ..Default::default()
            },
        };
        c.readiness_probe = Some(probe);
    }
    Ok(())
}

/// What an exposing Service's address is made of, as its cluster allocated it.
pub fn exposure_of(svc: &Service) -> Exposure {
    let spec = svc.spec.clone().unwrap_or_default();
    let type_ = match spec.type_.as_deref() {
        Some("NodePort") => ExposeType::NodePort,
        Some("LoadBalancer") => ExposeType::LoadBalancer,
        _ => ExposeType::ClusterIP,
    };
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref()?.first().cloned())
        .and_then(|i| i.ip.or(i.hostname));
    Exposure {
        type_,
        node_port: spec.ports.iter().flatten().find_map(|p| p.node_port),
        ingress,
    }
}

/// Where the replica is reachable, from the Service as allocated and the pod's node.
pub fn address(
    serving: &Serving,
    ns: &str,
    exposure: Option<&Exposure>,
    host_ip: Option<&str>,
) -> Option<String> {
    let port = serving.port.port;
    let node_port = || Some(format!("{}:{}", host_ip?, exposure?.node_port?));
    match serving.port.type_ {
        ExposeType::ClusterIP => Some(format!("{SERVING_SERVICE}.{ns}.svc:{port}")),
        ExposeType::NodePort => node_port(),
        ExposeType::LoadBalancer => exposure
            .and_then(|e| e.ingress.as_deref())
            .map(|i| format!("{i}:{port}"))
            .or_else(node_port),
    }
}

/// The replica's endpoint: its running pod's readiness (as its kubelet reports it) and
/// address. `previous` keeps `since` across rounds where readiness did not change.
pub fn endpoint(
    serving: &Serving,
    ns: &str,
    provider: &str,
    pods: &[PodView],
    exposure: Option<&Exposure>,
    previous: Option<&Endpoint>,
    now: &str,
) -> Endpoint {
    let pod = pods.iter().find(|p| p.rank == 0);
    let ready =
        pod.is_some_and(|p| p.phase == PodPhase::Running && p.ready && !p.node_lost && !p.node_unreachable);
    let address = address(serving, ns, exposure, pod.and_then(|p| p.host_ip.as_deref()));
    let same = previous.filter(|e| e.provider == provider && e.ready == ready);
    Endpoint {
        provider: provider.to_owned(),
        address,
        ready,
        since: same.map_or_else(|| Some(now.to_owned()), |e| e.since.clone()),
    }
}

#[cfg(test)]
#[path = "serving_tests.rs"]
mod tests;
