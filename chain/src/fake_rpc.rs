//! A JSON-RPC server on 127.0.0.1 answering each call from a function of its method (tests
//! of what the client makes of a node's answers; a real validator is in e2e).

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `answer(method)` is the JSON-RPC response's `result` (`Ok`) or `error` (`Err`). Returns
/// the URL; the server lives as long as the runtime.
pub async fn serve(answer: fn(&str) -> Result<Value, Value>) -> String {
    serve_with(move |method, _| answer(method)).await
}

/// [`serve`] with an answer that sees the call's `params` and may keep state (a node
/// whose blockhash, heights and accounts a test moves on).
pub async fn serve_with<F>(answer: F) -> String
where
    F: Fn(&str, &Value) -> Result<Value, Value> + Send + Sync + 'static,
{
    let answer = std::sync::Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then content-length bytes of body.
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let req: Value =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                    buf.drain(..end + 4 + len);
                    let method = req["method"].as_str().unwrap_or_default();
                    let body = match answer(method, &req["params"]) {
                        Ok(result) => json!({"jsonrpc": "2.0", "id": req["id"], "result": result}),
                        Err(error) => json!({"jsonrpc": "2.0", "id": req["id"], "error": error}),
                    }
                    .to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
