use super::*;

fn c<'a>(provider: &'a str, node: &'a str, uuid: &'a str) -> Claim<'a> {
    Claim {
        provider,
        node,
        uuid,
        serial: None,
    }
}

#[test]
fn duplicates_across_and_within_providers() {
    let d = duplicates([
        c("p1", "n1", "GPU-a"),
        c("p2", "n9", "gpu-A"),
        c("p1", "n1", "GPU-b"),
        c("p3", "n1", "GPU-c"),
        c("p3", "n2", "GPU-c"),
        c("p4", "n1", "GPU-d"),
        c("p4", "n1", "GPU-d"),
    ]);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(others(&d, "GPU-a", "p1/n1").as_deref(), Some("p2/n9"));
    assert_eq!(others(&d, "GPU-c", "p3/n2").as_deref(), Some("p3/n1"));
    assert_eq!(others(&d, "GPU-b", "p1/n1"), None);
    assert_eq!(
        others(&d, "GPU-d", "p4/n1"),
        None,
        "one node repeating itself is one claim"
    );
}
