//! Pure: the member view `why` runs the engine on, rebuilt from the inventory summary a
//! GpuProvider reports (GPUs per model, largest NVLink domain), not from its nodes.

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use gpufed_api::formats::parse_compute_capability;
use gpufed_api::provider::Inventory;
use gpufed_operator::fleet::{GpuNode, GpuPod, MemberView};
use gpufed_placement as pl;
use kube::ResourceExt;

/// Most synthetic nodes built per GPU model from an inventory summary.
pub(super) const MAX_NODES_PER_MODEL: u32 = 4096;

/// A member view rebuilt from a provider's inventory summary: per model, nodes as large
/// as its largest NVLink domain (NVLink models) or the model's share of the remaining
/// nodes, the allocated GPUs packed onto the first nodes as foreign pods.
pub fn member_view(inv: &Inventory) -> MemberView {
    let nvlink = |m: &&gpufed_api::provider::ModelInventory| m.largest_nvlink_domain > 1;
    let nvlink_nodes: u64 = inv
        .models
        .iter()
        .filter(nvlink)
        .map(|m| u64::from(m.count.div_ceil(m.largest_nvlink_domain)))
        .sum();
    let other_gpus: u64 = inv
        .models
        .iter()
        .filter(|m| !nvlink(m))
        .map(|m| u64::from(m.count))
        .sum();
    let other_nodes = u64::from(inv.nodes).saturating_sub(nvlink_nodes).max(1);
    let mut view = MemberView::default();
    for (mi, m) in inv.models.iter().enumerate().filter(|(_, m)| m.count > 0) {
        let linked = nvlink(&m);
        let size = if linked {
            m.largest_nvlink_domain
        } else {
            let share = other_nodes
                .saturating_mul(u64::from(m.count))
                .saturating_add(other_gpus / 2)
                / other_gpus.max(1);
            let nodes = u32::try_from(share.max(1)).unwrap_or(u32::MAX);
            m.count.div_ceil(nodes)
        }
        .clamp(1, u32::from(pl::MAX_GPUS_PER_NODE));
        let compute = parse_compute_capability(&m.compute_capability).unwrap_or((0, 0));
        let (mut left, mut used) = (m.count, m.count.saturating_sub(m.allocatable));
        for i in 0..m.count.div_ceil(size).min(MAX_NODES_PER_MODEL) {
            let gpus = left.min(size);
            let name = format!("m{mi}-n{i}");
            let busy = used.min(gpus);
            if busy > 0 {
                view.pods.push(GpuPod {
                    node: name.clone(),
                    gpus: busy,
                    attempt_key: None,
                    requests: Default::default(),
                    extended: Default::default(),
                });
            }
            view.nodes.push(GpuNode {
                name: name.clone(),
                model: m.model.clone(),
                memory_mib: u32::try_from(m.memory_mib).unwrap_or(u32::MAX),
                compute,
                nvlink_domain: linked.then_some(name),
                allocatable: gpus,
                ready: true,
                taints: Vec::new(),
                labels: Default::default(),
                resources: None,
            });
            (left, used) = (left - gpus, used - busy);
        }
    }
    view
}

/// `p` with its `verifiedNodes` renamed onto the rebuilt view's nodes. The inventory
/// summary does not say which nodes verified, only how many did, and a real node may be
/// rebuilt as several (NVLink domains smaller than a node) or one rebuilt node may stand
/// for several: so the verified nodes' share of the GPUs is kept ([`verified_gpus`]),
/// the first rebuilt nodes that add up to it standing for them (an estimate, like the rest
/// of the view).
pub(super) fn as_rebuilt(p: &GpuProvider, fleet: &BTreeMap<String, MemberView>) -> GpuProvider {
    let mut p = p.clone();
    let view = fleet.get(&p.name_any());
    let inv = p
        .status
        .as_ref()
        .and_then(|s| s.inventory.clone())
        .unwrap_or_default();
    if let Some(v) = p.status.as_mut().and_then(|s| s.verification.as_mut()) {
        let mut budget = verified_gpus(&inv, v.verified_nodes.len());
        v.verified_nodes = view
            .map(|view| {
                view.nodes
                    .iter()
                    .take_while(|n| {
                        let fits = u64::from(n.allocatable) <= budget;
                        budget = budget.saturating_sub(u64::from(n.allocatable));
                        fits
                    })
                    .map(|n| n.name.clone())
                    .collect()
            })
            .unwrap_or_default();
    }
    p
}

/// GPUs on `verified` of the provider's nodes: all of them when every node verified, else
/// the nodes' share of the GPUs (the inventory counts nodes and GPUs, not GPUs per node).
fn verified_gpus(inv: &Inventory, verified: usize) -> u64 {
    let gpus: u64 = inv.models.iter().map(|m| u64::from(m.count)).sum();
    let (verified, nodes) = (u64::try_from(verified).unwrap_or(u64::MAX), u64::from(inv.nodes));
    if verified >= nodes {
        return if verified == 0 { 0 } else { gpus };
    }
    // At most 5000 verified nodes of at most 2^32 × 32 models' GPUs: no overflow in u128.
    u64::try_from(u128::from(verified) * u128::from(gpus) / u128::from(nodes)).unwrap_or(u64::MAX)
}
