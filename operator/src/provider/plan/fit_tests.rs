use super::*;
use crate::fleet::{GpuNode, MemberView};
use crate::provider::plan::{Unreachable, listed_inventory, status};
use gpufed_api::GpuProvider;

fn provider() -> GpuProvider {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": "a", "generation": 1},
        "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc", "key": "kubeconfig"},
                 "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                 "prices": [{"model": "H100", "pricePerGpuHour": "2"}], "heartbeatGracePeriod": "60s"}
    }))
    .expect("provider")
}

fn node(name: &str, model: &str, memory_mib: u32, compute: (u8, u8)) -> GpuNode {
    GpuNode {
        name: name.into(),
        model: model.into(),
        memory_mib,
        compute,
        nvlink_domain: None,
        allocatable: 2,
        ready: true,
        taints: Vec::new(),
        labels: Default::default(),
        resources: None,
    }
}

/// The errors the API server would answer a status write of `provider` with `st`.
fn schema_errors(st: &GpuProviderStatus) -> Vec<String> {
    let crd = gpufed_api::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "GpuProvider")
        .expect("GpuProvider CRD");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    let object = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": "a"},
        "spec": serde_json::to_value(&provider().spec).expect("spec"),
        "status": serde_json::to_value(st).expect("status"),
    });
    let schema = serde_json::to_value(schema).expect("schema");
    gpufed_api::schema_check::check(&schema, &object)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A report no honest member sends: 40 models (each of two memory sizes), an empty model,
/// models the schema's pattern refuses, compute capabilities it cannot write.
fn hostile() -> MemberView {
    let mut nodes: Vec<GpuNode> = (0..40)
        .flat_map(|i| {
            [
                node(&format!("m{i}-a"), &format!("Model-{i:02}"), 40_960, (8, 0)),
                node(&format!("m{i}-b"), &format!("Model-{i:02}"), 81_920, (9, 0)),
            ]
        })
        .collect();
    nodes.extend([
        node("empty", "", 1, (8, 0)),
        node("spaced", "NVIDIA H100 80GB", 1, (9, 0)),
        node("long", &"A".repeat(64), 1, (9, 0)),
        node("dash", "-H100", 1, (9, 0)),
        node("cc-major", "H100", 81_920, (100, 0)),
        node("cc-minor", "H100", 81_920, (9, 10)),
        node(&"n".repeat(100_000), "\u{1F600}", 1, (255, 255)),
    ]);
    MemberView {
        nodes,
        ..MemberView::default()
    }
}

#[test]
fn the_inventory_of_a_hostile_report_fits_the_schema() {
    let view = hostile();
    let (inv, unlisted) = listed_inventory(&view);
    assert_eq!(inv.models.len(), MAX_MODELS);
    assert!(
        inv.models
            .iter()
            .all(|m| model_ok(&m.model) && m.compute_capability.len() <= 4)
    );
    assert!(inv.models.windows(2).all(|w| w[0].model <= w[1].model), "sorted");
    // Every GPU still counted, as placement counts them.
    assert_eq!(inv.gpus, 2 * 87);
    assert_eq!(unlisted.invalid_nodes, 7);
    assert_eq!(unlisted.overflow, (80 - MAX_MODELS, 2 * (80 - 32)));
    let st = status(&provider(), &Ok(view), 1000, "2026-01-01T00:00:00Z");
    assert_eq!(schema_errors(&st), Vec::<String>::new());
    let ready = gpufed_api::conditions::find(&st.conditions, "Ready").expect("Ready");
    assert!(
        ready
            .message
            .contains("not listed in status.inventory.models: 7 GPU node(s)")
            && ready
                .message
                .contains("48 more model(s) with 96 GPU(s) past the first 32"),
        "{}",
        ready.message
    );
    assert!(ready.message.chars().count() < 2_000, "names are cut");
}

#[test]
fn an_unreachable_member_s_whole_error_page_fits_the_schema() {
    // A member's proxy answers with a 100 KiB page of multi-byte text; the error quotes it.
    let page = format!("<html>{}</html>", "é".repeat(50_000));
    let mut p = provider();
    let ok = status(&p, &Ok(MemberView::default()), 1000, &crate::time::format(1000));
    p.status = Some(ok);
    let down = Unreachable::from(page);
    let st = status(&p, &Err(down), 2000, &crate::time::format(2000));
    let ready = gpufed_api::conditions::find(&st.conditions, "Ready").expect("Ready");
    assert_eq!(
        ready.reason, "HeartbeatLost",
        "the page is in Ready's message too"
    );
    assert_eq!(schema_errors(&st), Vec::<String>::new());
    for c in &st.conditions {
        assert!(c.message.chars().count() <= MAX_MESSAGE_CHARS, "{}", c.type_);
    }
    let reachable = gpufed_api::conditions::find(&st.conditions, "Reachable").expect("Reachable");
    assert!(reachable.message.starts_with("<html>éé") && reachable.message.ends_with('…'));
}

#[test]
fn messages_are_cut_on_character_boundaries_only_when_too_long() {
    let mut exact = "ü".repeat(MAX_MESSAGE_CHARS);
    message(&mut exact);
    assert_eq!(exact.chars().count(), MAX_MESSAGE_CHARS);
    assert!(!exact.ends_with('…'), "not cut");
    let mut long = "ü".repeat(MAX_MESSAGE_CHARS + 1);
    message(&mut long);
    assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS);
    assert!(long.ends_with('…'));
}

#[test]
fn model_names_and_compute_capabilities_as_the_schema_reads_them() {
    for ok in ["H100", "NVIDIA-H100-80GB-HBM3", "a.b_c-d", &"A".repeat(63)] {
        assert!(model_ok(ok), "{ok}");
    }
    for bad in [
        "",
        "-H100",
        ".x",
        "NVIDIA H100",
        "H100\n",
        &"A".repeat(64),
        "Ä100",
    ] {
        assert!(!model_ok(bad), "{bad:?}");
    }
    assert!(compute_ok((0, 0)) && compute_ok((99, 9)) && compute_ok((12, 0)));
    assert!(!compute_ok((100, 0)) && !compute_ok((9, 10)));
}
