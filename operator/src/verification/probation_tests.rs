//! Probation through the verifier (`VerifyConfig::probation`, docs/trust.md
//! "Probation"): a GPU counts once it has passed a round, and stays counted across
//! challenges between rounds and across leaders.

use super::rounds::{ROUND, Requests, steps};
use super::*;

fn on_probation() -> VerifyConfig {
    VerifyConfig {
        probation: true,
        ..cfg()
    }
}

#[test]
fn a_joined_node_counts_from_the_round_it_passes() {
    let v = Verifier::new(on_probation());
    let (left, t) = steps(&v, "p", &["GPU-1", "GPU-2"], 3, (Requests::new(), 1_000), 4);
    assert!(left.is_empty(), "judged at join: {left:?}");
    let (verdict, _) = v.verdict("p", t);
    assert_eq!(
        (verdict.verified, verdict.failed, verdict.on_probation),
        (0, 0, 2),
        "{verdict:?}"
    );
    assert!(verdict.verified_nodes.is_empty(), "no verifiedOnly work yet");
    // Without probation the same join counts at once.
    let at_once = Verifier::new(cfg());
    let (_, t) = steps(&at_once, "p", &["GPU-1", "GPU-2"], 3, (Requests::new(), 1_000), 4);
    assert_eq!(at_once.verdict("p", t).0.verified, 2);
    // The round challenges it with everyone; it passes and counts.
    let (left, t) = steps(&v, "p", &["GPU-1", "GPU-2"], 3, (Requests::new(), ROUND), 4);
    assert!(left.is_empty());
    let (verdict, _) = v.verdict("p", t);
    assert_eq!((verdict.verified, verdict.on_probation), (2, 0), "{verdict:?}");
    assert!(verdict.verified_nodes.contains("n1"));
}

#[test]
fn a_new_gpu_waits_for_the_round_while_the_proven_ones_keep_counting() {
    let v = Verifier::new(on_probation());
    v.load_verdicts("p", BTreeMap::new(), 0);
    steps(&v, "p", &["GPU-1"], 3, (Requests::new(), 1_000), 4);
    steps(&v, "p", &["GPU-1"], 3, (Requests::new(), ROUND), 4);
    assert_eq!(v.verdict("p", ROUND + 5_000).0.verified, 1);
    // A second GPU appears between rounds: both are challenged (the node is in good
    // standing) and pass; only the proven one counts.
    let (left, t) = steps(
        &v,
        "p",
        &["GPU-1", "GPU-2"],
        3,
        (Requests::new(), ROUND + 60_000),
        4,
    );
    assert!(left.is_empty());
    let (verdict, _) = v.verdict("p", t);
    assert_eq!((verdict.verified, verdict.on_probation), (1, 1), "{verdict:?}");
    assert!(
        verdict.verified_nodes.is_empty(),
        "a node with a GPU on probation"
    );
    // A new leader takes over: what was proven stays proven.
    let records = v.verdicts_to_save("p").expect("records");
    let next = Verifier::new(on_probation());
    next.load_verdicts("p", records, t);
    let (verdict, _) = next.verdict("p", t);
    assert_eq!((verdict.verified, verdict.on_probation), (1, 1), "{verdict:?}");
}
