//! The admin server: `/healthz` (the process runs), `/readyz` (caches synced; ready is
//! independent of leadership so a standby passes its probe), `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Serves until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening");
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.changed() => return Ok(()),
        };
        let (ready, metrics) = (ready.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match stream.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = respond(path, &ready, &metrics);
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
        });
    }
}

#[cfg(test)]
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
}
