//! The hub Service's Endpoints: which provider-reported addresses are routed.
use crate::service::build;
use crate::service::plan::rollout_tests::service;

#[test]
fn hub_endpoints_route_only_routable_provider_addresses() {
    let svc = service(3, "vllm", serde_json::json!({}));
    let ready = [
        "10.0.0.1:30001".to_owned(),
        "10.0.0.2:30001".to_owned(),
        "10.0.0.3:30002".to_owned(),
        "127.0.0.1:6443".to_owned(),
        "169.254.169.254:80".to_owned(),
        "lb.example.com:8000".to_owned(),
        "::ffff:127.0.0.1:80".to_owned(),
    ];
    let (eps, refused) = build::hub_endpoints(&svc, &ready, &[]);
    let subsets = eps.subsets.expect("subsets");
    assert_eq!(subsets.len(), 2, "one subset per node port");
    let ips: Vec<String> = subsets
        .iter()
        .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
        .collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(
        refused,
        [
            "127.0.0.1:6443",
            "169.254.169.254:80",
            "lb.example.com:8000",
            "::ffff:127.0.0.1:80"
        ]
    );
    // With an allow-list, only addresses inside it.
    let allowed: Vec<ipnet::IpNet> = vec!["10.0.0.0/31".parse().expect("cidr")];
    let (eps, refused) = build::hub_endpoints(&svc, &ready[..3], &allowed);
    let n: usize = eps
        .subsets
        .iter()
        .flatten()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum();
    assert_eq!(n, 1);
    assert_eq!(refused, ["10.0.0.2:30001", "10.0.0.3:30002"]);
    // A port no Endpoints may hold (a provider's node port is its word): refused, so the
    // write of the others goes through.
    let bad_ports = [
        "10.0.0.7:0".to_owned(),
        "10.0.0.8:70000".to_owned(),
        "10.0.0.9:30003".to_owned(),
    ];
    let (eps, refused) = build::hub_endpoints(&svc, &bad_ports, &[]);
    assert_eq!(refused, ["10.0.0.7:0", "10.0.0.8:70000"]);
    let ports: Vec<i32> = eps
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.ports.iter().flatten().map(|p| p.port))
        .collect();
    assert_eq!(ports, [30003]);
}
