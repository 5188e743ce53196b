//! Challenges, hub ↔ member, without waiting for the next round. The hub times a
//! challenge from its request to the commitment it reads back, and that round trip bounds
//! what a passing node proves (docs/trust.md, "What the hub's clock proves"). A relay
//! once a round each way would add two agent intervals to it, slack any slower machine
//! could use. So the agent relays a new or changed request as soon as its watch of the
//! hub's challenge ConfigMap fires ([`relay_challenges`]), and while a challenge is open
//! it reports its nodes' signed reports ([`reports_round`]: a metadata list of the nodes,
//! no pods) as soon as its watch of its nodes sees a new one ([`wake_on_new_reports`]),
//! and every `challengePollMillis` of the hub's config regardless. The hub watches the
//! agents' reports in turn, so a commitment reaches it within the watches' latency.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use gpufed_api::pull::{AGENT_FIELD_MANAGER, CHALLENGE_CONFIGMAP, REPORT_CONFIGMAP, REPORT_KEY};
use gpufed_operator::fleet::MemberView;
use gpufed_operator::member::ops;
use gpufed_operator::member::pull::AgentReport;
use gpufed_operator::member::wakes::NodeChanges;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use crate::sync::State;

/// Passes the hub's challenge requests on to the member's device plugins when they
/// changed since the last relay.
pub async fn relay_challenges(hub: &Client, member: &Client, st: &mut State) -> anyhow::Result<()> {
    let challenges = Api::<ConfigMap>::default_namespaced(hub.clone())
        .get_opt(CHALLENGE_CONFIGMAP)
        .await
        .context("reading challenges from the hub")?
        .and_then(|c| c.data)
        .unwrap_or_default();
    if st.mirrored.as_ref() != Some(&challenges) {
        let member_cms: Api<ConfigMap> = Api::default_namespaced(member.clone());
        ops::write_challenge_data(&member_cms, &challenges, AGENT_FIELD_MANAGER)
            .await
            .context("passing challenges on to the device plugins")?;
        st.mirrored = Some(challenges);
    }
    Ok(())
}

/// While a challenge is open: relays the requests (a missed watch event costs one poll,
/// not a round) and reports the nodes' fresh signed reports, merged into the last whole
/// view. Nothing to merge into before the first whole round: that round reports.
pub async fn reports_round(hub: &Client, member: &Client, st: &mut State) -> anyhow::Result<()> {
    relay_challenges(hub, member, st).await?;
    let Some(selector) = st.node_selector.clone() else {
        return Ok(());
    };
    if st.view.is_none() {
        return Ok(());
    }
    let fresh = ops::probe_reports(member.clone(), &selector)
        .await
        .context("reading this cluster's node reports")?;
    let mut view = st.view.take().unwrap_or_default();
    view.merge_reports(fresh);
    publish(hub, st, view).await
}

/// Writes `view` as the agent's report (the heartbeat) and keeps it for the reports-only
/// rounds.
pub async fn publish(hub: &Client, st: &mut State, view: MemberView) -> anyhow::Result<()> {
    st.sequence += 1;
    let report = AgentReport {
        view,
        interval_seconds: st.interval.as_secs(),
        sequence: st.sequence,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": REPORT_CONFIGMAP},
        "data": {REPORT_KEY: serde_json::to_string(&report)?},
    });
    let written = Api::<ConfigMap>::default_namespaced(hub.clone())
        .patch(
            REPORT_CONFIGMAP,
            &PatchParams::apply(AGENT_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .context("writing the report to the hub");
    st.view = Some(report.view);
    written.map(|_| ())
}

/// Notifies `reported` whenever one of the member's nodes publishes a new signed report
/// (a watch of the nodes' metadata; kubelets' status updates change no report). The loop
/// acts on it only while a challenge is open. Runs until the task is dropped.
pub async fn wake_on_new_reports(member: Client, reported: std::sync::Arc<Notify>) {
    use futures::StreamExt as _;
    let api = Api::<PartialObjectMeta<Node>>::all(member);
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    let mut changes = NodeChanges::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(n)) => {
                if changes.seen(&n).report {
                    reported.notify_one();
                }
            }
            Ok(watcher::Event::Delete(n)) => changes.deleted(&n.name_any()),
            // A (re)list: every node is seen afresh, first sight counting as a change.
            Ok(watcher::Event::InitApply(n)) => {
                changes.seen(&n);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "node watch interrupted; reports rounds continue");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// How soon the next reports-only round is due: `Some` only while one of the member's
/// nodes has a challenge open and the hub asked for such rounds.
pub fn fast_every(challenge_poll: Duration, mirrored: Option<&BTreeMap<String, String>>) -> Option<Duration> {
    let open = mirrored.is_some_and(|m| !m.is_empty());
    (open && !challenge_poll.is_zero()).then_some(challenge_poll)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rounds_only_while_a_challenge_is_open_and_the_hub_asks_for_them() {
        let poll = Duration::from_millis(1000);
        let open = BTreeMap::from([("gpu-0".to_owned(), "{}".to_owned())]);
        assert_eq!(fast_every(poll, Some(&open)), Some(poll));
        assert_eq!(
            fast_every(poll, Some(&BTreeMap::new())),
            None,
            "no challenge open"
        );
        assert_eq!(fast_every(poll, None), None, "nothing relayed yet");
        assert_eq!(
            fast_every(Duration::ZERO, Some(&open)),
            None,
            "an older hub: every round only"
        );
    }
}
