//! A TCP forwarder on 127.0.0.1 that a test can cut, stall, turn into a liar and restore:
//! the network between a pull-mode agent and its hub, or between the operator and a
//! member's API server.
//!
//! - [`TcpProxy::cut`]: drops every open connection and refuses new ones at once (as a
//!   NAT gateway losing its uplink would, minus the timeouts).
//! - [`TcpProxy::stall`]: open connections stop being forwarded in both directions and new
//!   ones are accepted but never answered; every socket stays open. A hung API server or a
//!   black-holing network: only the client's own timeouts end its requests.
//! - [`TcpProxy::garbage`]: every connection, open or new, gets bytes that are neither
//!   HTTP nor TLS and is then closed. A lying endpoint.
//! - [`TcpProxy::restore`]: forwards again; connections held by a stall resume.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Result;

/// What the proxy does with its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Drops open connections, refuses new ones.
    Cut,
    /// Holds every connection open and forwards nothing.
    Stall,
    /// Answers every connection with [`GARBAGE`] and closes it.
    Garbage,
}

/// What a connection gets in [`Mode::Garbage`]: not HTTP (no status line), not TLS (the
/// first byte is no TLS record type, 20–24), not even text.
pub const GARBAGE: &[u8] =
    b"\x00\xde\xad\xbe\xef gpufed tcpproxy: garbage, neither HTTP nor TLS \xff\xfe\x00\r\n\r\n";

/// A running forwarder.
pub struct TcpProxy {
    port: u16,
    mode: watch::Sender<Mode>,
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
        let (mode, rx) = watch::channel(Mode::Pass);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *rx.borrow() == Mode::Cut {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(serve(inbound, upstream, rx.clone()));
            }
        });
        Ok(Self { port, mode, accept })
    }

    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Drops every connection and refuses new ones until [`Self::restore`].
    pub async fn cut(&self) {
        self.set(Mode::Cut);
        // Let the connection tasks see it before the caller goes on.
        tokio::task::yield_now().await;
    }

    /// Stops forwarding on every connection, open or new, holding them all open, until
    /// [`Self::restore`] (or another mode).
    pub fn stall(&self) {
        self.set(Mode::Stall);
    }

    /// Sends [`GARBAGE`] on every connection, open or new, and closes it, until
    /// [`Self::restore`] (or another mode).
    pub fn garbage(&self) {
        self.set(Mode::Garbage);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.set(Mode::Pass);
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The connection tasks end when the mode sender goes.
        self.accept.abort();
    }
}

/// One client connection, following the mode until it ends.
async fn serve(mut inbound: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let mut outbound: Option<TcpStream> = None;
    // Half-closes seen: client → upstream, upstream → client.
    let (mut in_eof, mut out_eof) = (false, false);
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Cut => return,
            Mode::Garbage => {
                lie(inbound).await;
                return;
            }
            Mode::Stall => {
                // Nothing read, nothing written: both sockets stay open and unanswered.
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Mode::Pass => {
                let out = match outbound.as_mut() {
                    Some(out) => out,
                    None => match TcpStream::connect(upstream).await {
                        Ok(out) => outbound.insert(out),
                        Err(_) => return,
                    },
                };
                loop {
                    if in_eof && out_eof {
                        return;
                    }
                    // Reads are cancel-safe; a write, once its bytes are read, completes
                    // before the mode is looked at again, so a stall never splits a record.
                    tokio::select! {
                        biased;
                        changed = mode.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        n = inbound.read(&mut a), if !in_eof => match n {
                            Ok(0) => {
                                in_eof = true;
                                let _ = out.shutdown().await;
                            }
                            Ok(n) => {
                                if out.write_all(&a[..n]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        },
                        n = out.read(&mut b), if !out_eof => match n {
                            Ok(0) => {
                                out_eof = true;
                                let _ = inbound.shutdown().await;
                            }
                            Ok(n) => {
                                if inbound.write_all(&b[..n]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        },
                    }
                }
            }
        }
    }
}

/// Sends [`GARBAGE`] and closes: the write side first, then, after draining what the
/// client still sends (briefly), the socket, so the client reads the junk rather than a
/// reset.
async fn lie(mut inbound: TcpStream) {
    let _ = inbound.write_all(GARBAGE).await;
    let _ = inbound.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(inbound.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back on each connection.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn connect(proxy: &TcpProxy) -> TcpStream {
        TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect")
    }

    /// Writes `msg` and reads it back within 5 s.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(got, msg);
    }

    /// What a read gets within `wait`: `None` when nothing came (the socket still open).
    async fn read_within(s: &mut TcpStream, wait: Duration) -> Option<std::io::Result<Vec<u8>>> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Err(_) => None,
            Ok(r) => Some(r.map(|n| buf[..n].to_vec())),
        }
    }

    /// Everything until EOF (or an error), within 5 s.
    async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
            .await
            .expect("closed in time");
        all
    }

    #[tokio::test]
    async fn forwards_and_cut_drops_and_refuses() {
        let proxy = TcpProxy::start(echo().await).await.expect("proxy");
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"hello").await;
        proxy.cut().await;
        // The open connection ends (EOF or reset), a new one is closed at once.
        let got = read_within(&mut open, Duration::from_secs(5)).await;
        assert!(
            matches!(got, Some(Ok(ref b)) if b.is_empty()) || matches!(got, Some(Err(_))),
            "{got:?}"
        );
        let mut new = connect(&proxy).await;
        let _ = new.write_all(b"x").await;
        assert_eq!(read_to_end(&mut new).await, b"");
        proxy.restore();
        round_trip(&mut connect(&proxy).await, b"again").await;
    }

    #[tokio::test]
    async fn stall_holds_connections_open_unanswered_and_restore_resumes_them() {
        let proxy = TcpProxy::start(echo().await).await.expect("proxy");
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"before").await;
        proxy.stall();
        assert_eq!(proxy.mode(), Mode::Stall);
        // Let the connection task see the stall before the next bytes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        open.write_all(b"during")
            .await
            .expect("write to a stalled connection");
        assert!(
            read_within(&mut open, Duration::from_millis(700)).await.is_none(),
            "a stalled connection neither answers nor closes"
        );
        // A new connection is accepted (the handshake completes) but never answered.
        let mut new = connect(&proxy).await;
        new.write_all(b"new").await.expect("write to a stalled accept");
        assert!(
            read_within(&mut new, Duration::from_millis(700)).await.is_none(),
            "a new connection neither answers nor closes"
        );
        proxy.restore();
        // Both resume where they stopped: nothing lost, nothing doubled.
        let mut got = vec![0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), open.read_exact(&mut got))
            .await
            .expect("resumed in time")
            .expect("resumed");
        assert_eq!(&got, b"during");
        let mut got = vec![0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), new.read_exact(&mut got))
            .await
            .expect("resumed in time")
            .expect("resumed");
        assert_eq!(&got, b"new");
        round_trip(&mut open, b"after").await;
    }

    #[tokio::test]
    async fn garbage_answers_junk_and_closes_then_restore_forwards() {
        let proxy = TcpProxy::start(echo().await).await.expect("proxy");
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"before").await;
        proxy.garbage();
        // The open connection gets the junk, then EOF.
        assert_eq!(read_to_end(&mut open).await, GARBAGE);
        // So does a new one, whatever it sent (here a TLS ClientHello's first bytes).
        let mut new = connect(&proxy).await;
        let _ = new.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05]).await;
        let junk = read_to_end(&mut new).await;
        assert_eq!(junk, GARBAGE);
        assert!(!junk.starts_with(b"HTTP/"), "not an HTTP answer");
        assert!(!(20..=24).contains(&junk[0]), "not a TLS record");
        proxy.restore();
        round_trip(&mut connect(&proxy).await, b"again").await;
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let proxy = TcpProxy::start(echo().await).await.expect("proxy");
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"x").await;
        proxy.stall();
        drop(proxy);
        assert_eq!(read_to_end(&mut open).await, b"");
    }
}
