//! The few JSON-RPC calls the harness makes to its own validator (health, finalized slot,
//! identity), over plain HTTP/1.0 on 127.0.0.1 with no client library: they must work
//! while the validator is half up, and tell "nothing answers" from an error.

use std::time::Duration;

/// One JSON-RPC call over HTTP/1.0 to 127.0.0.1:`port` (blocking, ≤ 2 s per step); the
/// response text, or `None` when nothing answers.
pub(super) fn call(port: u16, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

pub(super) async fn healthy(port: u16) -> bool {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"getHealth"}"#;
    tokio::task::spawn_blocking(move || call(port, body))
        .await
        .ok()
        .flatten()
        .is_some_and(|out| out.contains("\"result\":\"ok\""))
}

/// The validator's finalized slot (its last root), when it answers.
pub(super) fn finalized_slot(port: u16) -> Option<u64> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":[{"commitment":"finalized"}]}"#;
    result_u64(&call(port, body)?)
}

/// The unsigned integer `result` of a JSON-RPC response (headers and all).
fn result_u64(response: &str) -> Option<u64> {
    let key = "\"result\":";
    let rest = &response[response.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether a `getIdentity` response names `identity`.
pub(super) fn identity_is(response: &str, identity: &str) -> bool {
    response.contains(&format!("\"identity\":\"{identity}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_identity_counts_as_our_validator() {
        let ours = gpufed_chain::Keypair::generate().pubkey().to_string();
        let other = gpufed_chain::Keypair::generate().pubkey().to_string();
        let answer = |id: &str| {
            format!(
                "HTTP/1.1 200 OK\r\n\r\n{{\"jsonrpc\":\"2.0\",\"result\":{{\"identity\":\"{id}\"}},\"id\":1}}"
            )
        };
        assert!(identity_is(&answer(&ours), &ours));
        assert!(!identity_is(&answer(&other), &ours));
        assert!(!identity_is("HTTP/1.1 200 OK\r\n\r\n{\"error\":{}}", &ours));
    }

    #[test]
    fn a_slot_is_read_from_the_response_and_errors_are_none() {
        let ok = "HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"result\":82,\"id\":1}";
        assert_eq!(result_u64(ok), Some(82));
        let err = "HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32005},\"id\":1}";
        assert_eq!(result_u64(err), None);
        assert_eq!(result_u64("{\"result\":\"ok\"}"), None);
    }

    #[test]
    fn nothing_listening_is_no_slot() {
        let block = super::super::ports::free_block(1, None).expect("a free port");
        assert_eq!(finalized_slot(block.base()), None);
    }
}
