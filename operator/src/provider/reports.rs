//! I/O: the cheap probe of a challenge round — the member's nodes' signed reports and its
//! challenge requests, nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::{Api, Client};

use super::observe::REPORT_ANNOTATION;
use crate::fleet::NodeReports;

/// The signed reports of the member's nodes (matching `node_selector`) and its challenge
/// requests: what a challenge round between two heartbeats needs. The hub reads this every
/// `--challenge-poll` while a challenge is open, so it lists the nodes' metadata only and
/// no pod: it stays cheap for a member of thousands of nodes and pods.
pub async fn probe_reports(
    client: Client,
    node_selector: &BTreeMap<String, String>,
) -> Result<NodeReports, kube::Error> {
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&node_list(node_selector))
        .await?;
    Ok(NodeReports {
        reports: nodes
            .items
            .iter()
            .filter_map(|n| report_of(&n.metadata))
            .collect(),
        challenges: crate::verification::read_challenges(&client).await?,
    })
}

/// Nodes matching `node_selector`, served from the API server's watch cache
/// (resourceVersion 0), not a quorum read of etcd: a heartbeat's inventory may be
/// milliseconds old, and every member is probed every interval.
pub(super) fn node_list(node_selector: &BTreeMap<String, String>) -> ListParams {
    let selector: Vec<String> = node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let lp = ListParams::default().match_any();
    if selector.is_empty() {
        lp
    } else {
        lp.labels(&selector.join(","))
    }
}

/// `(node, report)` when the node publishes a signed report.
pub(crate) fn report_of(meta: &ObjectMeta) -> Option<(String, String)> {
    let text = meta.annotations.as_ref()?.get(REPORT_ANNOTATION)?;
    Some((meta.name.clone()?, text.clone()))
}
