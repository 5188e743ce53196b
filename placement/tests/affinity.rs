//! A pod template's affinity rules that decide where its workers may run, honoured as
//! the member's scheduler would: required node affinity (terms ORed, requirements
//! ANDed, over the labels the hub sees), and a cap of workers per node (the template's
//! required pod anti-affinity between the job's own workers on `kubernetes.io/hostname`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{Config, Decisions, Job, LabelOp, LabelRequirement, Reason, Snapshot, place};

use common::{UNIT, check, job, provider};

fn req(key: &str, op: LabelOp) -> LabelRequirement {
    LabelRequirement { key: key.into(), op }
}

fn values(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

fn nodes_of<'a>(d: &'a Decisions, id: &str) -> (&'a str, Vec<&'a str>) {
    let p = d
        .placements
        .iter()
        .find(|p| p.job == id)
        .unwrap_or_else(|| panic!("{id} placed: {d:?}"));
    (
        p.provider.as_str(),
        p.workers.iter().map(|w| w.node.as_str()).collect(),
    )
}

#[test]
fn workers_go_only_to_nodes_one_of_whose_terms_holds() {
    // cheap: n0 on RoCE, n1 on Ethernet, n2 unlabelled; dear: InfiniBand everywhere.
    let mut cheap = provider("cheap", "H100", 80, 3, 8, UNIT);
    cheap.nodes[0].labels = labels(&[("net", "roce")]);
    cheap.nodes[1].labels = labels(&[("net", "ethernet")]);
    let mut dear = provider("dear", "H100", 80, 2, 8, 3 * UNIT);
    for n in &mut dear.nodes {
        n.labels = labels(&[("net", "infiniband"), ("gen", "5")]);
    }
    let fast_net = vec![vec![req("net", LabelOp::In(values(&["infiniband", "roce"])))]];
    let snap = Snapshot {
        providers: vec![cheap, dear],
        jobs: vec![
            // One worker: cheap's RoCE node.
            Job {
                node_affinity: fast_net.clone(),
                ..job("one", 8, 1)
            },
            // Two workers of 8 need two such nodes: dear only.
            Job {
                node_affinity: fast_net,
                ..job("two", 8, 2)
            },
            // NotIn holds on a node without the label: cheap's n2 (n0 is taken).
            Job {
                node_affinity: vec![vec![req("net", LabelOp::NotIn(values(&["ethernet"])))]],
                ..job("not-ethernet", 4, 1)
            },
            // Either term: a node of generation above 4, or any without a network label.
            Job {
                node_affinity: vec![
                    vec![req("gen", LabelOp::Gt(4)), req("net", LabelOp::Exists)],
                    vec![req("net", LabelOp::DoesNotExist)],
                ],
                ..job("either", 4, 1)
            },
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(nodes_of(&d, "one"), ("cheap", vec!["n0"]));
    let (provider, nodes) = nodes_of(&d, "two");
    assert_eq!((provider, nodes.len()), ("dear", 2));
    assert_eq!(nodes_of(&d, "not-ethernet"), ("cheap", vec!["n2"]));
    // The cheapest node left that satisfies a term: n2's other half.
    assert_eq!(nodes_of(&d, "either"), ("cheap", vec!["n2"]));
}

#[test]
fn an_affinity_no_node_satisfies_waits_and_says_which() {
    let mut a = provider("a", "H100", 80, 2, 8, UNIT);
    a.nodes[0].labels = labels(&[("net", "ethernet")]);
    let mut selecting = job("x", 1, 1);
    selecting.node_selector = labels(&[("disk", "nvme")]);
    let snap = Snapshot {
        providers: vec![a, provider("b", "H100", 80, 1, 8, UNIT)],
        jobs: vec![
            Job {
                node_affinity: vec![
                    vec![req("net", LabelOp::In(values(&["infiniband", "roce"])))],
                    vec![req("gen", LabelOp::Gt(4))],
                ],
                ..job("ib", 1, 1)
            },
            Job {
                node_affinity: vec![vec![req("net", LabelOp::Exists)]],
                ..selecting
            },
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(d.placements.is_empty(), "{d:?}");
    let said = |id: &str| {
        let u = d.unplaced.iter().find(|u| u.job == id).unwrap();
        (u.explanation.primary().cloned(), u.explanation.to_string())
    };
    let (primary, text) = said("ib");
    assert_eq!(
        primary,
        Some(Reason::NodeSelector {
            selector: "net in (infiniband,roce) or gen>4".into()
        })
    );
    assert!(
        text.contains("2 lack a suitable node labelled net in (infiniband,roce) or gen>4"),
        "{text}"
    );
    let (_, text) = said("x");
    assert!(text.contains("labelled disk=nvme,net"), "{text}");
}

#[test]
fn a_cap_per_node_spreads_the_gang_over_enough_nodes_or_waits_naming_them() {
    // cheap: one node of 8; dear: four nodes of 8.
    let snap = Snapshot {
        providers: vec![
            provider("cheap", "H100", 80, 1, 8, UNIT),
            provider("dear", "H100", 80, 4, 8, 2 * UNIT),
        ],
        jobs: vec![
            // Packed, two workers of 2 GPUs fit cheap's one node.
            job("packed", 2, 2),
            // Kept apart: cheap has one node, so dear, one worker on each of three nodes.
            Job {
                max_workers_per_node: 1,
                ..job("apart", 2, 3)
            },
            // Two per node at most: four workers over two nodes.
            Job {
                max_workers_per_node: 2,
                ..job("pairs", 1, 4)
            },
            // Five nodes exist nowhere.
            Job {
                max_workers_per_node: 1,
                ..job("five", 1, 5)
            },
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert_eq!(nodes_of(&d, "packed"), ("cheap", vec!["n0", "n0"]));
    let (provider, mut nodes) = nodes_of(&d, "apart");
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!((provider, nodes.len()), ("dear", 3), "one worker per node");
    let (provider, mut nodes) = nodes_of(&d, "pairs");
    assert_eq!(provider, "dear");
    nodes.sort_unstable();
    nodes.dedup();
    assert!(nodes.len() >= 2, "at most two of four per node: {nodes:?}");
    let u = d.unplaced.iter().find(|u| u.job == "five").unwrap();
    assert_eq!(
        u.explanation.primary(),
        Some(&Reason::TooFewNodes {
            workers: 5,
            per_node: 1
        })
    );
    assert!(
        u.explanation
            .to_string()
            .contains("lack 5 suitable nodes for one worker each"),
        "{}",
        u.explanation
    );
}

#[test]
fn a_capped_gang_and_a_packed_one_of_the_same_shape_are_decided_each_by_its_own() {
    // The memo of failed shapes must not carry the capped job's failure to the packed one.
    let snap = Snapshot {
        providers: vec![provider("a", "H100", 80, 1, 8, UNIT)],
        jobs: vec![
            Job {
                max_workers_per_node: 1,
                ..job("apart", 1, 2)
            },
            job("packed", 1, 2),
        ],
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    let placed: Vec<&str> = d.placements.iter().map(|p| p.job.as_str()).collect();
    assert_eq!(placed, ["packed"]);
}
