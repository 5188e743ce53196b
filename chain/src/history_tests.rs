use serde_json::{Value, json};

use super::*;
use crate::fake_rpc;

fn no_history(method: &str) -> Result<Value, Value> {
    match method {
        "getSignaturesForAddress" => Err(json!({
            "code": -32011,
            "message": "Transaction history is not available from this node"
        })),
        other => Err(json!({"code": -32601, "message": format!("{other} not served here")})),
    }
}

fn with_history(method: &str) -> Result<Value, Value> {
    match method {
        "getSignaturesForAddress" => Ok(json!([])),
        other => Err(json!({"code": -32601, "message": format!("{other} not served here")})),
    }
}

fn rpc(url: &str) -> Rpc {
    Rpc::new(url, Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn a_node_without_history_closes_the_gate_and_says_what_to_do() {
    let url = fake_rpc::serve(no_history).await;
    let mut gate = HistoryGate::default();
    let probe = crate::Keypair::generate().pubkey();
    let err = gate.check(&rpc(&url), &probe).await.unwrap_err();
    assert!(matches!(err, Closed::NoHistory { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&url)
            && text.contains("--enable-rpc-transaction-history")
            && text.contains("not available"),
        "{text}"
    );
    // Asked again every time while it says no.
    assert!(gate.check(&rpc(&url), &probe).await.is_err());
}

#[tokio::test]
async fn a_node_with_history_opens_it_and_is_trusted_until_the_recheck() {
    let url = fake_rpc::serve(with_history).await;
    let mut gate = HistoryGate::default();
    let probe = crate::Keypair::generate().pubkey();
    let t0 = Instant::now();
    gate.check_at(&rpc(&url), &probe, t0).await.unwrap();
    // The node goes away: within RECHECK it is not asked (its other calls back off)...
    let gone = rpc("http://127.0.0.1:9");
    gate.check_at(&gone, &probe, t0 + RECHECK / 2).await.unwrap();
    // ...after it, a node that does not answer is unknown: the gate stays shut.
    let err = gate.check_at(&gone, &probe, t0 + RECHECK).await.unwrap_err();
    assert!(matches!(err, Closed::Unknown(_)), "{err}");
    // A node never heard from is unknown too.
    let err = HistoryGate::default().check(&gone, &probe).await.unwrap_err();
    assert!(matches!(err, Closed::Unknown(_)), "{err}");
}

#[test]
fn only_the_history_error_means_no_history() {
    let rpc_err = |code| {
        Err(ChainError::Rpc {
            method: "getSignaturesForAddress",
            code,
            message: "m".into(),
        })
    };
    assert_eq!(classify(Ok(json!([]))).unwrap(), Ok(()));
    assert_eq!(classify(rpc_err(-32011)).unwrap(), Err("m".to_owned()));
    assert!(
        classify(rpc_err(-32005)).is_err(),
        "node unhealthy: unknown, not 'no'"
    );
}
