//! Pull mode with the charts' identities on real API servers: the operator preparing an
//! agent namespace, registration and renewal, one agent round in the member.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::DeleteParams;
use kube::{Api, Client};

use super::access::{access, endpoint_of, forbidden, impersonating, impersonating_as};
use super::permissions::{AGENT_HUB_DENIED, AGENT_HUB_NEEDS};
use super::{AGENT_IDENTITY_SECRET, AGENT_NS, AGENT_SA, HUB_SA, MINUTE, NS};

/// Pull mode with nothing but the charts' identities (provider-a is a push provider; only
/// the RBAC is under test here, e2e/tests/pull_mode.rs runs pull mode end to end): the
/// operator, as the hub chart's ServiceAccount, prepares provider-a's agent namespace
/// (binding the chart's agent ClusterRoles, which it may only `bind`) and uses it; the
/// bootstrap group registers and the agent renews with the chart's ClusterRoles; one
/// agent round runs with that hub token and, in the member, as the provider chart's
/// agent ServiceAccount (mode=pull); the operator then reads the agent's report.
pub async fn pull_mode_with_the_charts_identities(
    fed: &gpufed_e2e::Federation,
    hub: &Client,
    member: &Client,
) {
    use gpufed_agent::identity::{HubEndpoint, IdentityStore};
    use gpufed_operator::member::pull::{AgentPace, HubHealth, PullLink, ensure};

    assert_eq!(gpufed_api::pull::agent_namespace("provider-a"), AGENT_NS);
    let hub_kc = fed.hub().kubeconfig();
    let op_hub = impersonating(hub_kc, HUB_SA).await;
    let provider = Api::<gpufed_api::GpuProvider>::all(hub.clone())
        .get("provider-a")
        .await
        .expect("provider-a");
    let pace = AgentPace {
        interval_seconds: 5,
        challenge_poll_millis: 1000,
    };
    for round in 1..=2 {
        ensure(&op_hub, &provider, pace).await.unwrap_or_else(|e| {
            panic!("the chart's operator prepares the agent namespace (round {round}): {e}")
        });
    }
    let now = gpufed_operator::time::now();
    let link = PullLink::new(op_hub, "provider-a", HubHealth::new(now), pace);
    link.write_challenges(&std::collections::BTreeMap::new())
        .await
        .expect("the operator writes the agent's challenges");
    let (pods, lost) = link
        .attempt_pods("gpufed-t", "uid-t", 1)
        .await
        .expect("the operator reads Assignments");
    assert!(pods.is_empty() && lost.is_empty());
    link.remove_attempt("gpufed-t", 1)
        .await
        .expect("the operator withdraws an Assignment");
    link.remove_namespace("gpufed-t")
        .await
        .expect("the operator withdraws a tenant namespace's Assignments");

    // The agent's hub identity, as the authorizer sees it.
    let agent_user = format!("system:serviceaccount:{AGENT_NS}:gpufed-agent");
    let mut wrong = access(hub, &agent_user, AGENT_HUB_NEEDS, true).await;
    wrong.extend(access(hub, &agent_user, AGENT_HUB_DENIED, false).await);
    assert!(
        wrong.is_empty(),
        "the agent's hub identity (ClusterRole gpufed-agent) differs:\n{}",
        wrong.join("\n")
    );

    // Registration as the provider's bootstrap group, renewal with the token it bought.
    let (server, ca_pem) = endpoint_of(hub_kc);
    let endpoint = HubEndpoint {
        server,
        ca_pem,
        namespace: AGENT_NS.into(),
        timeout: Duration::from_secs(10),
    };
    let group = gpufed_api::pull::bootstrap_group("provider-a");
    let bootstrapper = impersonating_as(
        hub_kc,
        "system:bootstrap:abcdef",
        &["system:bootstrappers", &group, "system:authenticated"],
        AGENT_NS,
    )
    .await;
    let first = endpoint
        .request_token(&bootstrapper, 10 * MINUTE, now)
        .await
        .expect("the bootstrap group registers (ClusterRole gpufed-agent-bootstrap)");
    let elsewhere = HubEndpoint {
        namespace: NS.into(),
        ..endpoint.clone()
    };
    let denied = elsewhere.request_token(&bootstrapper, 10 * MINUTE, now).await;
    forbidden(
        "a bootstrap token outside its agent namespace",
        &denied.expect_err("denied"),
    );
    let as_agent = endpoint.client(&first.token).await.expect("hub client");
    let identity = endpoint
        .request_token(&as_agent, 10 * MINUTE, now)
        .await
        .expect("the agent renews with itself (ClusterRole gpufed-agent)");

    // In the member, as the provider chart's agent ServiceAccount (in the release namespace).
    let member_cluster = fed.cluster("provider-a").expect("member cluster");
    let member_agent = impersonating_as(member_cluster.kubeconfig(), AGENT_SA, &[], NS).await;
    let store = IdentityStore::new(&member_agent, AGENT_IDENTITY_SECRET);
    for _ in 0..2 {
        store
            .save(&identity)
            .await
            .expect("the agent creates, then updates, its identity Secret by server-side apply");
    }
    assert_eq!(store.load().await.expect("load"), Some(identity.clone()));
    let mut state = gpufed_agent::sync::State::new(Duration::from_secs(5));
    gpufed_agent::sync::round(&as_agent, &member_agent, &mut state)
        .await
        .unwrap_or_else(|e| panic!("one agent round with the charts' identities: {e:#}"));
    let view = link
        .probe()
        .await
        .unwrap_or_else(|e| panic!("the operator reads the agent's report: {e}"));
    assert!(
        !view.nodes.is_empty(),
        "the agent reported provider-a's GPU nodes"
    );

    // Leave the member as push mode expects it.
    let _ = Api::<Secret>::namespaced(member.clone(), NS)
        .delete(AGENT_IDENTITY_SECRET, &DeleteParams::default())
        .await;
    let _ = Api::<ConfigMap>::namespaced(member.clone(), NS)
        .delete(
            gpufed_operator::verification::CHALLENGE_CONFIGMAP,
            &DeleteParams::default(),
        )
        .await;
}
