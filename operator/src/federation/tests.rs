use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A hub API server that answers every request with `code` and a `Status` body.
async fn hub_answering(code: u16) -> Client {
    hub_answering_by(move |_| code).await
}

/// A hub API server that answers each request with the code `code_of` gives its method
/// (`GET`, `PATCH`, …) and a `Status` body.
async fn hub_answering_by(code_of: impl Fn(&str) -> u16 + Copy + Send + 'static) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let method = String::from_utf8_lossy(&seen);
                let code = code_of(method.split(' ').next().unwrap_or_default());
                let body = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                    "message": format!("secrets \"kc\" is answered {code}"),
                    "reason": if code == 403 { "Forbidden" } else if code == 404 { "NotFound" } else { "InternalError" },
                })
                .to_string();
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    let url = format!("http://{addr}").parse().expect("url");
    Client::try_from(Config::new(url)).expect("client")
}

fn provider() -> GpuProvider {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": "a", "uid": "u", "generation": 1},
        "spec": {"kubeconfigSecretRef": {"namespace": "elsewhere", "name": "kc", "key": "kubeconfig"},
                 "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                 "prices": [{"model": "H100", "pricePerGpuHour": "2"}]}
    }))
    .expect("provider")
}

#[tokio::test]
async fn a_kubeconfig_secret_the_operator_may_not_read_is_the_provider_s_problem_not_the_hub_s() {
    let members = Members::new(hub_answering(403).await, Duration::from_secs(5));
    let Err(e) = members.link_checked(&provider()).await else {
        panic!("linked without a Secret");
    };
    assert_eq!(e.reason, REASON_SECRET_FORBIDDEN);
    assert!(matches!(e.error, Error::Member { .. }), "{:?}", e.error);
    let msg = e.error.to_string();
    assert!(
        msg.contains("Secret elsewhere/kc") && msg.contains("spec.kubeconfigSecretRef"),
        "{msg}"
    );
    // A Secret that does not exist: the same kind of problem, its own reason.
    let members = Members::new(hub_answering(404).await, Duration::from_secs(5));
    let e = members.link_checked(&provider()).await.err().expect("no Secret");
    assert_eq!(e.reason, REASON_SECRET_NOT_FOUND);
    assert!(e.error.to_string().contains("Secret elsewhere/kc not found"));
    // The hub failing is the hub's: nothing said of the provider.
    let members = Members::new(hub_answering(500).await, Duration::from_secs(5));
    let e = members.link_checked(&provider()).await.err().expect("hub down");
    assert!(matches!(e.error, Error::Hub(_)), "{:?}", e.error);
}

#[test]
fn a_secret_the_operator_may_not_read_is_named_in_reachable() {
    use crate::provider::plan::{Unreachable, status};
    let forbidden = Unreachable {
        reason: REASON_SECRET_FORBIDDEN,
        message: "the operator may not read Secret elsewhere/kc".into(),
    };
    let st = status(&provider(), &Err(forbidden), 1010, &crate::time::format(1010));
    let c = gpufed_api::conditions::find(&st.conditions, "Reachable").expect("Reachable");
    assert_eq!(
        (c.status, c.reason.as_str()),
        (gpufed_api::common::ConditionStatus::False, "SecretForbidden")
    );
    assert!(c.message.contains("Secret elsewhere/kc"));
}

fn pull_provider() -> GpuProvider {
    let mut p = provider();
    p.spec.mode = ConnectionMode::Pull;
    p.spec.kubeconfig_secret_ref = None;
    p
}

#[tokio::test]
async fn a_failed_probe_of_a_pull_provider_whose_namespace_cannot_be_prepared_again_is_still_a_failed_probe()
{
    let p = pull_provider();
    // The hub failing (5xx) a first preparation: the hub's failure, nothing known.
    let members = Members::new(hub_answering(500).await, Duration::from_secs(5));
    let e = members.link_checked(&p).await.err().expect("hub down");
    assert!(matches!(e.error, Error::Hub(_)), "{:?}", e.error);
    // The agent namespace is stuck terminating: every write into it is refused (403), its
    // report is gone (404).
    let hub = hub_answering_by(|method| if method == "GET" { 404 } else { 403 }).await;
    let members = Members::new(hub, Duration::from_secs(5));
    // Prepared before; a probe failed more than a minute after.
    let long_ago = Instant::now()
        .checked_sub(prepared::REPREPARE_AFTER + Duration::from_secs(1))
        .expect("a minute of uptime");
    let entry = Prepared {
        key: ("u".to_owned(), 1),
        at: long_ago,
        recheck: true,
    };
    members.prepared.write().await.insert("a".into(), entry);
    // Preparing it again fails: the link goes on with the namespace as it is, and the
    // probe fails as the provider's (so it is marked unreachable, not retried as the hub's).
    probed(&members, &p, long_ago).await;
    // A restarted operator has prepared nothing yet: refused the same way, the same.
    members.prepared.write().await.clear();
    probed(&members, &p, long_ago).await;
}

/// Links `p` through `members`: the link is made, its probe fails as the provider's, and
/// the namespace is to be prepared again a while after now (not at every probe).
async fn probed(members: &Members, p: &GpuProvider, long_ago: Instant) {
    let link = match members.link_checked(p).await {
        Ok(link) => link,
        Err(e) => panic!("a refused preparation failed the link: {:?}", e.error),
    };
    let e = link.probe(p).await.expect_err("no report");
    assert!(matches!(e, Error::Member { .. }), "{e:?}");
    let at = members.prepared.read().await.get("a").map(|p| (p.at, p.recheck));
    assert!(
        at.is_some_and(|(at, recheck)| at > long_ago && recheck),
        "tried again a minute later, not at every probe: {at:?}"
    );
}
