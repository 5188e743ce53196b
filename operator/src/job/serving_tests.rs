use super::*;
use gpufed_api::job::OpenObject;
use gpufed_api::serving::ServingPort;
use k8s_openapi::api::core::v1::Container;

fn serving(type_: ExposeType) -> Serving {
    Serving {
        port: ServingPort {
            port: 8000,
            name: "http".into(),
            type_,
        },
        readiness_probe: None,
    }
}

fn pod(ready: bool, phase: PodPhase) -> PodView {
    PodView {
        rank: 0,
        phase,
        started: None,
        finished: None,
        node_lost: false,
        node_unreachable: false,
        ready,
        host_ip: Some("10.0.0.7".into()),
        gpu_uuids: Vec::new(),
        waiting: None,
    }
}

fn exposure(node_port: i32, ingress: Option<&str>) -> Exposure {
    Exposure {
        type_: ExposeType::NodePort,
        node_port: Some(node_port),
        ingress: ingress.map(str::to_owned),
    }
}

#[test]
fn the_service_selects_only_the_live_attempt() {
    let labels = BTreeMap::from([(names::LABEL_JOB_UID.to_owned(), "u1".to_owned())]);
    let svc = service(&serving(ExposeType::NodePort), "gf-x", &labels, 3);
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let sel = spec.selector.expect("selector");
    assert_eq!(sel.get(names::LABEL_ATTEMPT).map(String::as_str), Some("3"));
    assert_eq!(sel.get(names::LABEL_JOB_UID).map(String::as_str), Some("u1"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.port, 8000);
    assert_eq!(port.node_port, None, "the member allocates node ports");
}

#[test]
fn prepare_adds_port_and_a_tcp_probe_but_keeps_the_templates_own() {
    let mut spec = PodSpec {
        containers: vec![Container {
            name: "server".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    prepare(&mut spec, &serving(ExposeType::NodePort)).expect("prepared");
    let c = &spec.containers[0];
    assert_eq!(c.ports.as_ref().expect("ports")[0].container_port, 8000);
    let probe = c.readiness_probe.as_ref().expect("probe");
    assert_eq!(
        probe.tcp_socket.as_ref().map(|t| t.port.clone()),
        Some(IntOrString::Int(8000))
    );
    // Preparing twice changes nothing (no duplicate port).
    let once = spec.clone();
    prepare(&mut spec, &serving(ExposeType::NodePort)).expect("prepared");
    assert_eq!(spec, once);

    let mut own = serving(ExposeType::NodePort);
    own.readiness_probe = Some(OpenObject(
        serde_json::json!({"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 30})
            .as_object()
            .cloned()
            .expect("object"),
    ));
    let mut spec2 = PodSpec {
        containers: vec![Container::default()],
        ..Default::default()
    };
    prepare(&mut spec2, &own).expect("prepared");
    let probe = spec2.containers[0].readiness_probe.as_ref().expect("probe");
    assert_eq!(probe.initial_delay_seconds, Some(30));
    assert!(probe.http_get.is_some());
}

#[test]
fn a_bad_probe_is_an_error_naming_the_field() {
    let mut bad = serving(ExposeType::NodePort);
    bad.readiness_probe = Some(OpenObject(
        serde_json::json!({"periodSeconds": "often"})
            .as_object()
            .cloned()
            .expect("object"),
    ));
    let mut spec = PodSpec {
        containers: vec![Container::default()],
        ..Default::default()
    };
    let err = prepare(&mut spec, &bad).expect_err("refused");
    assert!(err.starts_with("spec.serving.readinessProbe"), "{err}");
    let mut empty = PodSpec::default();
    assert!(prepare(&mut empty, &serving(ExposeType::NodePort)).is_err());
}

#[test]
fn addresses_follow_the_service_type() {
    let e = exposure(31234, None);
    assert_eq!(
        address(&serving(ExposeType::NodePort), "ns", Some(&e), Some("10.0.0.7")).as_deref(),
        Some("10.0.0.7:31234")
    );
    assert_eq!(
        address(&serving(ExposeType::NodePort), "ns", None, Some("10.0.0.7")),
        None
    );
    assert_eq!(
        address(&serving(ExposeType::ClusterIP), "gf-a", None, None).as_deref(),
        Some("serve.gf-a.svc:8000")
    );
    let lb = exposure(31234, Some("203.0.113.9"));
    assert_eq!(
        address(
            &serving(ExposeType::LoadBalancer),
            "ns",
            Some(&lb),
            Some("10.0.0.7")
        )
        .as_deref(),
        Some("203.0.113.9:8000")
    );
    // No ingress yet: the node port still reaches it.
    assert_eq!(
        address(
            &serving(ExposeType::LoadBalancer),
            "ns",
            Some(&e),
            Some("10.0.0.7")
        )
        .as_deref(),
        Some("10.0.0.7:31234")
    );
}

#[test]
fn readiness_is_the_pods_and_since_moves_only_on_change() {
    let s = serving(ExposeType::NodePort);
    let e = exposure(30001, None);
    let unready = endpoint(
        &s,
        "ns",
        "p1",
        &[pod(false, PodPhase::Running)],
        Some(&e),
        None,
        "t1",
    );
    assert!(!unready.ready);
    assert_eq!(unready.since.as_deref(), Some("t1"));
    let still = endpoint(
        &s,
        "ns",
        "p1",
        &[pod(false, PodPhase::Running)],
        Some(&e),
        Some(&unready),
        "t2",
    );
    assert_eq!(still.since.as_deref(), Some("t1"));
    let ready = endpoint(
        &s,
        "ns",
        "p1",
        &[pod(true, PodPhase::Running)],
        Some(&e),
        Some(&still),
        "t3",
    );
    assert!(ready.ready);
    assert_eq!(ready.since.as_deref(), Some("t3"));
    assert_eq!(ready.address.as_deref(), Some("10.0.0.7:30001"));
    // A pod on a lost node is not ready, whatever its last condition said.
    let mut lost = pod(true, PodPhase::Running);
    lost.node_lost = true;
    assert!(!endpoint(&s, "ns", "p1", &[lost], Some(&e), Some(&ready), "t4").ready);
    // A new provider starts a new `since`.
    let moved = endpoint(
        &s,
        "ns",
        "p2",
        &[pod(true, PodPhase::Running)],
        Some(&e),
        Some(&ready),
        "t5",
    );
    assert_eq!(moved.since.as_deref(), Some("t5"));
    // No pod: not ready, no address.
    let none = endpoint(&s, "ns", "p1", &[], Some(&e), None, "t6");
    assert!(!none.ready && none.address.is_none());
}
