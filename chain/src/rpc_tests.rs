//! What the client makes of answers a real node rarely gives.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Rpc;
use crate::fake_rpc;
use gpufed_settlement::Commitment;

/// A server answering every request with `status` and `body`, whatever it asked.
async fn raw(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_busy_gateway_s_own_json_is_retried_not_a_bad_answer() {
    let url = raw("503 Service Unavailable", r#"{"message":"overloaded"}"#).await;
    let rpc = Rpc::new(&url, Duration::from_secs(2)).unwrap();
    let e = rpc.health().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("503"), "{e}");
}

fn unlabelled(method: &str) -> Result<serde_json::Value, serde_json::Value> {
    match method {
        "getSignatureStatuses" => Ok(serde_json::json!({"context": {"slot": 9}, "value": [
            {"slot": 5, "confirmations": null, "err": null, "confirmationStatus": null}
        ]})),
        other => Err(serde_json::json!({"code": -32601, "message": format!("{other} not served")})),
    }
}

#[tokio::test]
async fn a_status_without_its_level_is_read_from_its_confirmations() {
    let url = fake_rpc::serve(unlabelled).await;
    let rpc = Rpc::new(&url, Duration::from_secs(2)).unwrap();
    let (st, context) = rpc.reported_signature_status("sig").await.unwrap();
    let st = st.unwrap();
    assert_eq!((st.slot, st.commitment, context), (5, Commitment::Finalized, 9));
}

fn refusing(method: &str) -> Result<serde_json::Value, serde_json::Value> {
    match method {
        "getHealth" => Err(serde_json::json!({
            "code": -32002,
            "message": "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1",
            "data": {"err": {"InstructionError": [0, {"Custom": 1}]}, "logs": [
                "Program ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL invoke [1]",
                "Transfer: insufficient lamports 0, need 2039280",
                "Program ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL failed: custom program error: 0x1",
                "x".repeat(2_000),
            ]}
        })),
        other => Err(serde_json::json!({"code": -32601, "message": format!("{other} not served")})),
    }
}

#[tokio::test]
async fn a_preflight_refusal_says_why_from_its_data() {
    let url = fake_rpc::serve(refusing).await;
    let rpc = Rpc::new(&url, Duration::from_secs(2)).unwrap();
    let e = rpc.health().await.unwrap_err();
    assert!(e.refused_in_preflight(), "{e}");
    let text = e.to_string();
    assert!(text.contains("InstructionError"), "{text}");
    assert!(
        text.contains("insufficient lamports"),
        "the logs name the cause: {text}"
    );
    assert!(text.len() < 800, "details are cut: {} bytes", text.len());
    let plain = fake_rpc::serve(unlabelled).await;
    let e = Rpc::new(&plain, Duration::from_secs(2))
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert!(!e.refused_in_preflight(), "{e}");
    assert!(!e.to_string().contains('('), "no data, no details: {e}");
}
