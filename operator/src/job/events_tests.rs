use super::*;

fn status(v: serde_json::Value) -> ComputeJobStatus {
    serde_json::from_value(v).expect("status")
}

fn placement(attempt: u32, provider: &str) -> serde_json::Value {
    serde_json::json!({"attempt": attempt, "provider": provider, "gpus": 2, "pricePerGpuHour": "0.40",
        "workers": [{"rank": 0, "node": "n1", "gpuUuids": []}], "placedTime": "2026-12-01T00:00:00Z"})
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-12-01T00:00:00Z"})
}

fn reasons(notes: &[Note]) -> Vec<(bool, &str)> {
    notes.iter().map(|n| (n.warning, n.reason.as_str())).collect()
}

#[test]
fn placing_running_and_succeeding_are_told_once_each() {
    let queued = status(serde_json::json!({"phase": "Queued"}));
    let placed = status(serde_json::json!({"phase": "Placed", "placement": placement(1, "provider-a")}));
    let notes = transitions(Some(&queued), &placed);
    assert_eq!(reasons(&notes), [(false, "Placed")]);
    assert!(
        notes[0].message.contains("provider-a") && notes[0].message.contains("n1"),
        "{:?}",
        notes[0]
    );
    assert!(
        transitions(Some(&placed), &placed).is_empty(),
        "no change, no Event"
    );

    let running = status(
        serde_json::json!({"phase": "Running", "placement": placement(1, "provider-a"),
        "conditions": [cond("Ready", "True", "Running", "2 of 2 workers running")]}),
    );
    let notes = transitions(Some(&placed), &running);
    assert_eq!(reasons(&notes), [(false, "Running")]);
    assert_eq!(notes[0].message, "2 of 2 workers running");

    let done = status(serde_json::json!({"phase": "Succeeded",
        "attempts": [{"attempt": 1, "provider": "provider-a", "outcome": "Succeeded", "gpuSeconds": 60,
                      "pricePerGpuHour": "0.40", "endTime": "2026-12-01T00:01:00Z"}],
        "usage": {"gpuSeconds": 60, "cost": "0.006666"}}));
    let notes = transitions(Some(&running), &done);
    assert_eq!(
        reasons(&notes),
        [(false, "Succeeded")],
        "a succeeded attempt is told by the phase"
    );
    assert!(notes[0].message.contains("60 GPU-seconds"), "{:?}", notes[0]);
}

#[test]
fn a_lost_provider_and_the_new_placement_are_warned_in_order() {
    let running = status(serde_json::json!({"phase": "Running", "placement": placement(1, "provider-a")}));
    let failed_over = status(
        serde_json::json!({"phase": "Recovering", "placement": placement(2, "provider-b"),
        "attempts": [{"attempt": 1, "provider": "provider-a", "outcome": "ProviderLost", "gpuSeconds": 30,
                      "message": "heartbeat lost", "pricePerGpuHour": "0.40", "endTime": "2026-12-01T00:01:00Z"}]}),
    );
    let notes = transitions(Some(&running), &failed_over);
    assert_eq!(reasons(&notes), [(true, "ProviderLost"), (false, "Placed")]);
    assert!(
        notes[0].message.contains("attempt 1 on provider provider-a"),
        "{:?}",
        notes[0]
    );
    assert!(
        notes[1].message.contains("attempt 2 on provider provider-b"),
        "{:?}",
        notes[1]
    );
}

#[test]
fn placement_warnings_and_stalls_are_told_when_their_reason_changes_only() {
    let queued = status(serde_json::json!({"phase": "Queued",
        "conditions": [cond("Placed", "False", "Queued", "waiting for capacity")]}));
    assert!(
        transitions(None, &queued).is_empty(),
        "waiting one's turn is no warning"
    );
    let short = status(serde_json::json!({"phase": "Queued",
        "conditions": [cond("Placed", "False", "EscrowShortfall", "escrow holds 1 but needs 2")]}));
    assert_eq!(
        reasons(&transitions(Some(&queued), &short)),
        [(true, "EscrowShortfall")]
    );
    let shorter = status(serde_json::json!({"phase": "Queued",
        "conditions": [cond("Placed", "False", "EscrowShortfall", "escrow holds 0 but needs 2")]}));
    assert!(
        transitions(Some(&short), &shorter).is_empty(),
        "a new message alone is not news"
    );

    let stalled = status(serde_json::json!({"phase": "Queued",
        "conditions": [cond("Stalled", "True", "SettlementPaused", "settlement is paused: rpc down")]}));
    let notes = transitions(Some(&queued), &stalled);
    assert_eq!(reasons(&notes), [(true, "SettlementPaused")]);
    assert_eq!(notes[0].message, "settlement is paused: rpc down");
    let failed = status(serde_json::json!({"phase": "Failed",
        "conditions": [cond("Stalled", "True", "JobFailed", "3 attempts failed"),
                       cond("Ready", "False", "Failed", "3 attempts failed")]}));
    assert_eq!(
        reasons(&transitions(Some(&queued), &failed)),
        [(true, "Failed")],
        "a failed job is told once, by its phase"
    );
    let rejected = status(serde_json::json!({"phase": "Failed",
        "conditions": [cond("Stalled", "True", "DispatchRejected", "attempt 2 Failed: refused"),
                       cond("Ready", "False", "Failed", "attempt 2 Failed: refused")]}));
    let notes = transitions(Some(&queued), &rejected);
    assert_eq!(reasons(&notes), [(true, "Failed")], "whatever its Stalled reason");
    assert_eq!(notes[0].message, "attempt 2 Failed: refused ()");
}

#[test]
fn an_unreachable_node_is_warned_once_and_its_return_told() {
    let running = status(serde_json::json!({"phase": "Running", "placement": placement(1, "provider-a")}));
    let mut waiting_placement = placement(1, "provider-a");
    waiting_placement["nodeUnreachableSince"] = "2026-12-01T00:05:00Z".into();
    let waiting = status(
        serde_json::json!({"phase": "Running", "placement": waiting_placement,
        "conditions": [cond("Ready", "False", "NodeUnreachable", "the node of worker 0 is unreachable")]}),
    );
    let notes = transitions(Some(&running), &waiting);
    assert_eq!(reasons(&notes), [(true, "NodeUnreachable")]);
    assert_eq!(notes[0].message, "the node of worker 0 is unreachable");
    assert!(transitions(Some(&waiting), &waiting).is_empty(), "told once");
    assert_eq!(
        reasons(&transitions(Some(&waiting), &running)),
        [(false, "NodeReachable")]
    );
    // A new attempt is told as a placement, not as a node's return.
    let next = status(serde_json::json!({"phase": "Placed", "placement": placement(2, "provider-b")}));
    assert_eq!(reasons(&transitions(Some(&waiting), &next)), [(false, "Placed")]);
}

#[test]
fn the_rounds_reasons_for_a_job_no_provider_takes_are_warnings() {
    let queued = status(serde_json::json!({"phase": "Queued"}));
    for reason in [
        crate::placement::NO_PROVIDER_FITS,
        crate::placement::TENANT_NOT_ADMITTED,
        crate::placement::NODE_SELECTOR_UNMATCHED,
        crate::placement::INSUFFICIENT_NODE_RESOURCES,
    ] {
        let waiting = status(serde_json::json!({"phase": "Queued",
            "conditions": [cond("Placed", "False", reason,
                                "0/2 providers fit: 2 lack a suitable node with 100 CPU for one worker")]}));
        let notes = transitions(Some(&queued), &waiting);
        assert_eq!(reasons(&notes), [(true, reason)]);
        assert!(notes[0].message.contains("100 CPU"), "{:?}", notes[0]);
    }
}
