//! A TCP forwarder on 127.0.0.1 that a test can cut and restore: the network between a
//! pull-mode agent and its hub. Cutting drops every open connection and refuses new
//! ones at once (as a NAT gateway losing its uplink would, minus the timeouts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::Result;

/// A running forwarder.
pub struct TcpProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards a fresh 127.0.0.1 port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let io = |source| crate::error::Error::Io {
            action: "binding the TCP proxy on",
            path: "127.0.0.1:0".into(),
            source,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
        let port = listener.local_addr().map_err(io)?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut guard = k.lock().await;
                guard.retain(|t| !t.is_finished());
                guard.push(task);
            }
        });
        Ok(Self {
            port,
            cut,
            conns,
            accept,
        })
    }

    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and refuses new ones until [`Self::restore`].
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.conns.lock().await.drain(..) {
            t.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
