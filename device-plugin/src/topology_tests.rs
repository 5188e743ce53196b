use super::*;
use crate::inventory::{ComputeCapability, Gpu};

fn gpu(i: usize, numa: i64, peers: &[usize]) -> Gpu {
    Gpu {
        uuid: format!("GPU-{i}"),
        index: i as u32,
        name: "NVIDIA H100 80GB HBM3".into(),
        memory_mib: 81559,
        compute_capability: ComputeCapability { major: 9, minor: 0 },
        pci_bus_id: String::new(),
        numa_node: Some(numa),
        nvlink_peers: peers.iter().map(|p| format!("GPU-{p}")).collect(),
        serial: None,
    }
}

fn topo(gpus: Vec<Gpu>) -> Topology {
    let mut inv = Inventory {
        gpus,
        ..Inventory::default()
    };
    inv.normalize();
    inv.validate().unwrap();
    Topology::from_inventory(&inv)
}

fn ids(v: &[usize]) -> Vec<String> {
    v.iter().map(|i| format!("GPU-{i}")).collect()
}

fn req(avail: &[usize], must: &[usize], size: usize) -> PreferredRequest {
    PreferredRequest {
        available: ids(avail),
        must_include: ids(must),
        size,
    }
}

/// Two NVLink islands of four (0-3 and 4-7, fully connected inside), NUMA 0 and 1.
fn two_islands() -> Topology {
    let mut v = Vec::new();
    for i in 0..8 {
        let base = if i < 4 { 0 } else { 4 };
        let peers: Vec<usize> = (base..base + 4).filter(|&p| p != i).collect();
        v.push(gpu(i, (i / 4) as i64, &peers));
    }
    topo(v)
}

#[test]
fn picks_a_linked_pair_over_lowest_indices() {
    // 0 and 1 are free but not linked to each other; 1 and 5 are linked.
    let t = topo(vec![
        gpu(0, 0, &[]),
        gpu(1, 0, &[5]),
        gpu(2, 0, &[]),
        gpu(5, 1, &[]),
    ]);
    assert_eq!(t.preferred(&req(&[0, 1, 2, 5], &[], 2)), ids(&[1, 5]));
}

#[test]
fn stays_inside_one_nvlink_island() {
    let t = two_islands();
    // Island 0 has only 0 and 3 free; island 1 has 4, 5, 6 free: a 3-GPU set fits in island 1 only.
    assert_eq!(t.preferred(&req(&[0, 3, 4, 5, 6], &[], 3)), ids(&[4, 5, 6]));
    assert_eq!(
        t.preferred(&req(&[0, 1, 2, 3, 4, 5, 6, 7], &[], 4)),
        ids(&[0, 1, 2, 3])
    );
}

#[test]
fn must_include_pulls_the_set_to_its_island() {
    let t = two_islands();
    assert_eq!(
        t.preferred(&req(&[0, 1, 2, 3, 4, 5, 6, 7], &[6], 2)),
        ids(&[4, 6])
    );
}

#[test]
fn numa_locality_breaks_ties_without_nvlink() {
    let t = topo(vec![gpu(0, 0, &[]), gpu(1, 1, &[]), gpu(2, 1, &[])]);
    assert_eq!(t.preferred(&req(&[0, 1, 2], &[], 2)), ids(&[1, 2]));
}

#[test]
fn unknown_ids_ignored_and_short_pool_returns_what_exists() {
    let t = two_islands();
    let mut r = req(&[0, 1], &[], 4);
    r.available.push("GPU-nope".into());
    assert_eq!(t.preferred(&r), ids(&[0, 1]));
}

#[test]
fn greedy_path_on_a_large_node_keeps_islands() {
    // 64 GPUs in islands of 8 ⇒ C(64, 8) is far beyond the exhaustive limit.
    let mut v = Vec::new();
    for i in 0..64 {
        let base = i / 8 * 8;
        let peers: Vec<usize> = (base..base + 8).filter(|&p| p != i).collect();
        v.push(gpu(i, (i / 32) as i64, &peers));
    }
    let t = topo(v);
    let avail: Vec<usize> = (3..64).collect();
    let got = t.preferred(&req(&avail, &[], 8));
    assert_eq!(
        got,
        ids(&[8, 9, 10, 11, 12, 13, 14, 15]),
        "first whole free island"
    );
}

#[test]
fn combination_helpers() {
    assert_eq!(combinations(8, 4), 70);
    assert_eq!(combinations(3, 5), 1);
    let mut p = vec![0, 1];
    let mut n = 1;
    while next_combination(&mut p, 4) {
        n += 1;
    }
    assert_eq!(n, 6);
}
