//! A job's node selector (its pod template's `nodeSelector`): every worker goes to a node
//! carrying those labels, whatever else is cheaper; a selector no node satisfies leaves the
//! job waiting, told which labels it lacks.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{Config, Job, Reason, Snapshot, place};

use common::{UNIT, check, job, provider};

fn selecting(mut j: Job, pairs: &[(&str, &str)]) -> Job {
    j.node_selector = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    j
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn workers_go_only_to_nodes_with_the_selected_labels() {
    // cheap: n0 plain, n1 nvme; dear: all three nvme in zone z1.
    let mut cheap = provider("cheap", "H100", 80, 2, 8, UNIT);
    cheap.nodes[1].labels = labels(&[("disk", "nvme")]);
    let mut dear = provider("dear", "H100", 80, 3, 8, 3 * UNIT);
    for n in &mut dear.nodes {
        n.labels = labels(&[("disk", "nvme"), ("zone", "z1")]);
    }
    let snap = Snapshot {
        providers: vec![cheap, dear],
        jobs: vec![
            // One worker fits cheap's single nvme node.
            selecting(job("one", 8, 1), &[("disk", "nvme")]),
            // Two workers of 8 need two nvme nodes: only dear has them.
            selecting(job("two", 8, 2), &[("disk", "nvme")]),
            // Both labels: dear only.
            selecting(job("zoned", 4, 1), &[("disk", "nvme"), ("zone", "z1")]),
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    let at = |id: &str| {
        let p = d
            .placements
            .iter()
            .find(|p| p.job == id)
            .unwrap_or_else(|| panic!("{id} placed: {d:?}"));
        let nodes: Vec<&str> = p.workers.iter().map(|w| w.node.as_str()).collect();
        (p.provider.as_str(), nodes)
    };
    assert_eq!(at("one"), ("cheap", vec!["n1"]));
    let (provider, nodes) = at("two");
    assert_eq!(provider, "dear");
    assert_eq!(nodes.len(), 2);
    assert_eq!(at("zoned").0, "dear");
}

#[test]
fn a_selector_no_node_satisfies_waits_and_says_which_labels() {
    let mut a = provider("a", "H100", 80, 2, 8, UNIT);
    a.nodes[0].labels = labels(&[("disk", "hdd")]);
    let snap = Snapshot {
        providers: vec![a, provider("b", "H100", 80, 1, 8, UNIT)],
        jobs: vec![selecting(job("x", 1, 1), &[("disk", "nvme"), ("arch", "arm64")])],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty(), "{d:?}");
    let u = &d.unplaced[0];
    assert_eq!(
        u.explanation.primary(),
        Some(&Reason::NodeSelector {
            selector: "arch=arm64,disk=nvme".into()
        })
    );
    assert!(
        u.explanation
            .to_string()
            .contains("2 lack a suitable node labelled arch=arm64,disk=nvme"),
        "{}",
        u.explanation
    );
    assert!(
        d.reservations.is_empty(),
        "nothing held for a job no node can take"
    );
}

#[test]
fn identical_jobs_with_different_selectors_are_decided_each_by_its_own() {
    // The memo of failed shapes must not carry one selector's failure to another.
    let mut a = provider("a", "H100", 80, 1, 8, UNIT);
    a.nodes[0].labels = labels(&[("disk", "nvme")]);
    let snap = Snapshot {
        providers: vec![a],
        jobs: vec![
            selecting(job("hdd", 1, 1), &[("disk", "hdd")]),
            selecting(job("nvme", 1, 1), &[("disk", "nvme")]),
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    let placed: Vec<&str> = d.placements.iter().map(|p| p.job.as_str()).collect();
    assert_eq!(placed, ["nvme"]);
    assert_eq!(d.unplaced.len(), 1);
}
