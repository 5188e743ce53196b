//! A live attempt holds the GPUs it was placed with, whatever its spec says since.
#![allow(clippy::unwrap_used)]

use super::tests::{job, provider, view};
use super::*;

#[test]
fn a_live_attempt_holds_its_placed_gpus_after_its_spec_is_edited() {
    let fleet = BTreeMap::from([("a".to_owned(), view())]);
    // Placed with 2 GPUs on h1 (one worker); the spec edited since to 1 or to 4 per worker
    // (an API server before 1.25 lets it through).
    for edited in [1, 4] {
        let mut live = (*job("live", "Any", Some(("a", "h1")))).clone();
        live.spec.gpus_per_worker = edited;
        let snap = snapshot(&[Arc::new(live)], &[provider("a", true)], &fleet);
        let h1 = snap.providers[0].nodes.iter().find(|n| n.name == "h1").unwrap();
        assert_eq!(
            h1.free.len(),
            8 - 2 - 1,
            "spec says {edited}: the placement's 2 count"
        );
        assert_eq!(snap.running[0].gpus.len(), 2);
    }
}
