use super::*;
use crate::verification::VerifyConfig;

fn missing(shard: &str) -> Error {
    Error::Shard {
        base: "gpufed-node-keys-p".into(),
        shard: shard.into(),
        index: 2,
        count: 3,
    }
}

fn verifier() -> (Verifier, crate::metrics::Metrics) {
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(VerifyConfig::default()).with_metrics(metrics.clone());
    (v, metrics)
}

fn gauge(m: &crate::metrics::Metrics) -> String {
    m.encode()
        .lines()
        .find(|l| l.starts_with("gpufed_verification_unreadable_maps "))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_unreadable_map_is_told_when_found_and_hourly_not_every_heartbeat() {
    let (v, _) = verifier();
    let e = missing("gpufed-2-node-keys-p");
    // First found: not told yet (a read that met a save under way passes next heartbeat).
    assert_eq!(v.map_unreadable("p", Kept::Pins, &e, 1_000), None);
    assert_eq!(v.map_unreadable("p", Kept::Pins, &e, 31_000), None);
    let at = 1_000 + CONFIRM_MS;
    let told = v.map_unreadable("p", Kept::Pins, &e, at).unwrap();
    assert!(
        told.contains("pinned node keys") && told.contains("gpufed-2-node-keys-p"),
        "{told}"
    );
    assert!(told.contains("docs/trust.md"), "{told}");
    // The next heartbeats: nothing new to tell.
    assert_eq!(v.map_unreadable("p", Kept::Pins, &e, at + 30_000), None);
    assert_eq!(v.map_unreadable("p", Kept::Pins, &e, at + RETELL_MS - 1), None);
    // Told again an hour later (an Event expires after an hour).
    assert!(v.map_unreadable("p", Kept::Pins, &e, at + RETELL_MS).is_some());
    // Another ConfigMap as the cause, or the other map: confirmed anew before told.
    let other = missing("gpufed-1-node-keys-p");
    let later = at + 2 * RETELL_MS;
    assert_eq!(v.map_unreadable("p", Kept::Pins, &other, later), None);
    assert!(
        v.map_unreadable("p", Kept::Pins, &other, later + CONFIRM_MS)
            .is_some()
    );
    assert_eq!(v.map_unreadable("p", Kept::Verdicts, &other, later), None);
    assert!(
        v.map_unreadable("p", Kept::Verdicts, &other, later + CONFIRM_MS)
            .is_some()
    );
    // Read, then unreadable again: confirmed anew.
    v.map_read("p", Kept::Pins);
    let again = later + 2 * CONFIRM_MS;
    assert_eq!(v.map_unreadable("p", Kept::Pins, &other, again), None);
    assert!(
        v.map_unreadable("p", Kept::Pins, &other, again + CONFIRM_MS)
            .is_some()
    );
}

/// A read that met another leader's save under way fails once and passes the next
/// heartbeat: no Event asks for a repair by hand.
#[test]
fn a_read_that_fails_once_is_not_told() {
    let (v, _) = verifier();
    let e = missing("gpufed-2-node-keys-p");
    assert_eq!(v.map_unreadable("p", Kept::Pins, &e, 0), None);
    v.map_read("p", Kept::Pins);
    assert_eq!(v.map_unreadable("p", Kept::Pins, &e, CONFIRM_MS), None);
}

#[test]
fn a_failure_that_passes_by_itself_is_not_told() {
    let (v, m) = verifier();
    let lapsed = Error::Lapsed { name: "x".into() };
    assert_eq!(v.map_unreadable("p", Kept::Verdicts, &lapsed, 0), None);
    assert_eq!(v.unreadable_providers(), 0);
    assert_eq!(gauge(&m), "gpufed_verification_unreadable_maps 0");
}

#[test]
fn the_gauge_counts_providers_until_their_maps_read_or_they_go() {
    let (v, m) = verifier();
    let e = missing("s");
    let headless = Error::Headless {
        base: "gpufed-verdicts-q".into(),
        shard: "gpufed-1-verdicts-q".into(),
    };
    v.map_unreadable("p", Kept::Pins, &e, 0);
    v.map_unreadable("p", Kept::Verdicts, &e, 0);
    assert_eq!(
        gauge(&m),
        "gpufed_verification_unreadable_maps 1",
        "providers, not maps"
    );
    assert!(v.map_unreadable("q", Kept::Verdicts, &headless, 0).is_none());
    assert!(
        v.map_unreadable("q", Kept::Verdicts, &headless, CONFIRM_MS)
            .is_some()
    );
    assert_eq!(gauge(&m), "gpufed_verification_unreadable_maps 2");
    v.map_read("p", Kept::Pins);
    assert_eq!(v.unreadable_providers(), 2, "p's verdicts still cannot be read");
    v.map_read("p", Kept::Verdicts);
    assert_eq!(gauge(&m), "gpufed_verification_unreadable_maps 1");
    // q deleted: forgotten with the rest of what was known of it.
    assert!(!v.adopt("q", "u1"));
    assert_eq!(v.retain_providers(10, 0, |_, _| false), ["q"]);
    assert_eq!(gauge(&m), "gpufed_verification_unreadable_maps 0");
    // Another term reads every map again.
    v.map_unreadable("p", Kept::Pins, &e, 0);
    v.enter_term(7);
    assert_eq!(gauge(&m), "gpufed_verification_unreadable_maps 0");
    assert!(v.map_unreadable("p", Kept::Pins, &e, 1).is_none());
    assert!(
        v.map_unreadable("p", Kept::Pins, &e, 1 + CONFIRM_MS).is_some(),
        "told again"
    );
}
