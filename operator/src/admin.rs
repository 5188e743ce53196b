//! The admin server: `/healthz` (the process runs), `/readyz` (caches synced; ready is
//! independent of leadership so a standby passes its probe), `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Readiness flag, set once the watch caches have synced.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the operator is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Answers one request line.
pub fn respond(path: &str, ready: &Readiness, metrics: &Metrics) -> (u16, &'static str, String) {
    match path {
        "/healthz" | "/livez" => (200, "text/plain", "ok\n".to_owned()),
        "/readyz" if ready.is_ready() => (200, "text/plain", "ok\n".to_owned()),
        "/readyz" => (503, "text/plain", "caches not synced\n".to_owned()),
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => (404, "text/plain", "not found\n".to_owned()),
    }
}

/// How long one connection may take to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` turns true. Nothing a client does stops it: every connection is
/// accepted at once and answered on its own task, dropped after [`CONNECTION_TIMEOUT`]
/// when it sends nothing (so idle connections cannot pile up), and a failed accept (out
/// of file descriptors) is retried — a probe is never kept waiting behind other clients,
/// and the kubelet does not restart the leader for them.
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin server: accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let (ready, metrics) = (ready.clone(), metrics.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, &ready, &metrics)).await;
        });
    }
}

/// Reads one request head (until its first line is whole, or 4 KiB) and answers it.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, ready: &Readiness, metrics: &Metrics) {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (code, ctype, body) = respond(path, ready, metrics);
    let reason = match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn readiness_gates_readyz_only() {
        let (ready, metrics) = (Readiness::default(), Metrics::new());
        assert_eq!(respond("/healthz", &ready, &metrics).0, 200);
        assert_eq!(respond("/readyz", &ready, &metrics).0, 503);
        ready.set_ready();
        assert_eq!(respond("/readyz", &ready, &metrics).0, 200);
        assert!(respond("/metrics", &ready, &metrics).2.contains("gpufed_leader"));
        assert_eq!(respond("/nope", &ready, &metrics).0, 404);
    }

    #[tokio::test]
    async fn a_request_split_across_reads_is_answered_whole() {
        let (ready, metrics) = (Readiness::default(), Metrics::new());
        let (mut client, server) = tokio::io::duplex(64);
        let served = tokio::spawn(async move { handle(server, &ready, &metrics).await });
        client.write_all(b"GET /hea").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        client
            .write_all(b"lthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        served.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn idle_connections_do_not_keep_a_probe_waiting() {
        let (ready, metrics) = (Readiness::default(), Metrics::new());
        let (_tx, rx) = watch::channel(false);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = tokio::spawn(serve(addr, ready, metrics, rx));
        let mut idle = Vec::new();
        while idle.is_empty() {
            if let Ok(c) = tokio::net::TcpStream::connect(addr).await {
                idle.push(c);
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for _ in 0..200 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // 200 silent clients: a probe is still answered within the kubelet's 1 s.
        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        probe.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(1), probe.read_to_string(&mut answer))
            .await
            .expect("answered at once beside idle connections")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(!server.is_finished());
    }
}
