//! The operator's admin server (`--admin-addr`) from a test: a free port for it, its
//! pages, and the metrics lines an assertion shows.

/// The lines of `text` (say, a metrics page) that contain `needle`: what an assertion on
/// one of them shows when it fails.
pub fn lines_with(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The operator's `/metrics` text.
pub async fn reqwest_metrics(addr: std::net::SocketAddr) -> String {
    let body = admin_get(addr, "/metrics").await.expect("admin server");
    assert!(body.contains("gpufed_build_info"), "{body}");
    body
}

/// The admin server's whole HTTP response to `GET path`.
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

/// A free 127.0.0.1 port for the operator's admin server (`--admin-addr`).
pub fn free_admin_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}
