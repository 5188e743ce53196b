//! Asking the real authorizer, and clients that act as a chart's identities.

use std::path::Path;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;

/// Asks the real authorizer whether `user` may do each of `checks`; returns the mismatches.
pub async fn access(
    client: &Client,
    user: &str,
    checks: &[(&str, &str, &str, &str, &str)],
    want: bool,
) -> Vec<String> {
    let sa_ns = user.split(':').nth(2).unwrap_or_default();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut wrong = Vec::new();
    for (verb, group, resource_name, sub, ns) in checks {
        let (resource, name) = match resource_name.split_once('/') {
            Some((r, n)) => (r, Some(n)),
            None if *resource_name == "leases" => (*resource_name, Some("gpufed-operator")),
            None => (*resource_name, None),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{sa_ns}"),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some((*verb).into()),
                    group: Some((*group).into()),
                    resource: Some(resource.into()),
                    subresource: (!sub.is_empty()).then(|| (*sub).into()),
                    namespace: (!ns.is_empty()).then(|| (*ns).into()),
                    name: name.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let result = api
            .create(&PostParams::default(), &review)
            .await
            .expect("SubjectAccessReview");
        let allowed = result.status.is_some_and(|s| s.allowed);
        if allowed != want {
            wrong.push(format!(
                "{verb} {group}/{resource_name}/{sub} in {ns:?}: allowed={allowed}"
            ));
        }
    }
    wrong
}

/// A client for the hub that acts as the chart's ServiceAccount.
pub async fn impersonating(kubeconfig: &Path, user: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).expect("client")
}

/// A client that acts as `user` in `groups`, with `namespace` as its default namespace (as
/// an in-cluster client of a pod in that namespace has).
pub async fn impersonating_as(kubeconfig: &Path, user: &str, groups: &[&str], namespace: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some(user.into());
    if !groups.is_empty() {
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    config.default_namespace = namespace.into();
    Client::try_from(config).expect("client")
}

/// The API server URL and CA bundle (PEM) of a harness kubeconfig.
pub fn endpoint_of(kubeconfig: &Path) -> (String, Vec<u8>) {
    use base64::Engine as _;
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let kc: Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let cluster = &kc["clusters"][0]["cluster"];
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().expect("CA data"))
        .expect("CA base64");
    (cluster["server"].as_str().expect("server").to_owned(), ca)
}

pub fn forbidden(what: &str, e: &anyhow::Error) {
    let code = e.chain().find_map(|c| match c.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    });
    assert_eq!(code, Some(403), "{what}: expected 403 Forbidden, got {e:#}");
}
