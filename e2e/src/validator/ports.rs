//! Ports for the test validator: finding free blocks below the ephemeral range, holding
//! a stopped validator's RPC and pubsub ports, and telling a lost bind race from other exits.

use std::path::Path;
use std::time::Duration;

use crate::{Error, Result};

/// A port held by this process while the validator is stopped: UDP, and TCP **listening
/// and closing every connection at once**, on all interfaces. Listening is what keeps every
/// other bind out (a merely bound socket would have to go without `SO_REUSEADDR`, and then
/// could not be bound at all while the killed validator's connections sit in TIME_WAIT);
/// closing at once is what keeps clients seeing a dead endpoint — a listener that never
/// accepted left the operator's RPC calls hanging until their timeouts.
#[derive(Debug)]
pub(super) struct Reservation {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    closer: Option<std::thread::JoinHandle<()>>,
    _udp: std::net::UdpSocket,
}

/// Holds `port`, or `None` when something else already has it.
pub(super) fn reserve(port: u16) -> Option<Reservation> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tcp = std::net::TcpListener::bind(("0.0.0.0", port)).ok()?;
    let udp = std::net::UdpSocket::bind(("0.0.0.0", port)).ok()?;
    tcp.set_nonblocking(true).ok()?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let closer = std::thread::Builder::new()
        .name(format!("hold-port-{port}"))
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .ok()?;
    Some(Reservation {
        stop,
        closer: Some(closer),
        _udp: udp,
    })
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.closer.take() {
            let _ = t.join();
        }
    }
}

/// Whether `port` can be bound for TCP and UDP, on 127.0.0.1 and on all interfaces (the
/// validator's faucet and RPC listen on 0.0.0.0 whatever the flags).
pub(super) fn port_free(port: u16) -> bool {
    ["127.0.0.1", "0.0.0.0"].iter().all(|host| {
        std::net::TcpListener::bind((*host, port)).is_ok() && std::net::UdpSocket::bind((*host, port)).is_ok()
    })
}

/// A block of 100 ports claimed by this validator for its life: an exclusive lock on
/// `$TMPDIR/gpufed-validator-ports/<base>.lock`. Every test validator, in this process or
/// another, claims its blocks before binding, so two of them never pick the same block.
/// Before claims, two tests of one binary started at the same moment once drew the same
/// block: the second validator lost its RPC port and exited, and the first one's RPC
/// answered the second test's health check, so that test settled against a chain that
/// had none of its accounts (every call an RPC error, nothing settled).
#[derive(Debug)]
pub(super) struct Claim {
    _lock: std::fs::File,
    base: u16,
}

impl Claim {
    /// The claimed block's first port.
    pub(super) fn base(&self) -> u16 {
        self.base
    }
}

/// Claims the block starting at `base` (a multiple of 100), or `None` when another test
/// validator holds it.
pub(super) fn claim(base: u16) -> Option<Claim> {
    let dir = std::env::temp_dir().join("gpufed-validator-ports");
    std::fs::create_dir_all(&dir).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{base}.lock")))
        .ok()?;
    file.try_lock().ok()?;
    Some(Claim { _lock: file, base })
}

/// Finds `n` (≤ 100) consecutive free ports (the validator wants contiguous ranges) in a
/// block of 100 other than `avoid`'s, and claims that block. Blocks lie in 20000–31999,
/// below Linux's ephemeral range (32768–60999), so outgoing connections don't take them
/// while the validator is down.
pub(super) fn free_block(n: u16, avoid: Option<u16>) -> Result<Claim> {
    for _ in 0..200 {
        let base = 20_000 + (rand_u16() % 120) * 100;
        if avoid.is_some_and(|a| a / 100 == base / 100) {
            continue;
        }
        let Some(claim) = claim(base) else { continue };
        if (base..base + n).all(port_free) {
            return Ok(claim);
        }
    }
    Err(Error::State("no block of free ports for the validator".into()))
}

/// Whether a validator that exited early did so because a port was taken: its log (which
/// every start appends to) says so after byte `from`.
pub(super) fn lost_bind_race(log: &Path, from: u64) -> bool {
    std::fs::read(log)
        .ok()
        .and_then(|b| {
            b.get(from as usize..)
                .map(|t| String::from_utf8_lossy(t).into_owned())
        })
        .is_some_and(|t| t.contains("Address already in use"))
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // A fresh random state per call: threads of one process starting together draw apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % 65_521) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn blocks_avoid_the_ephemeral_range_and_the_given_block() {
        for _ in 0..50 {
            let b = free_block(super::super::AUX_PORTS, Some(20_000)).expect("a free block");
            let b = b.base();
            assert!((20_100..32_000).contains(&b), "block {b}");
            assert_eq!(b % 100, 0);
        }
    }

    #[test]
    fn a_claimed_block_is_never_handed_out_again_until_released() {
        let held: Vec<_> = (0..20)
            .map(|_| free_block(2, None).expect("a free block"))
            .collect();
        let mut bases: Vec<u16> = held.iter().map(Claim::base).collect();
        bases.sort_unstable();
        bases.dedup();
        assert_eq!(bases.len(), held.len(), "20 claims, 20 distinct blocks");
        let first = bases[0];
        assert!(claim(first).is_none(), "a second claim of a held block fails");
        drop(held);
        assert!(claim(first).is_some(), "released with its holder");
    }

    #[tokio::test]
    async fn a_reserved_port_is_held_and_answers_nothing_until_released() {
        let block = free_block(2, None).expect("a free block");
        let port = block.base();
        let held = reserve(port).expect("reserve a free port");
        assert!(!port_free(port), "held for TCP and UDP on all interfaces");
        assert!(reserve(port).is_none(), "a second reservation fails");
        // Clients see the stopped validator as gone (closed at once), not as a server
        // that hangs: a request ends without an answer well within a second.
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let _ = s.write_all(b"POST / HTTP/1.0\r\n\r\n").await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            Ok::<_, std::io::Error>(out)
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .expect("closed at once, not left hanging");
        assert!(
            answer.map_or(true, |b| b.is_empty()),
            "no answer from a held port"
        );
        drop(held);
        assert!(port_free(port));
    }

    #[test]
    fn a_taken_port_is_not_free_and_is_skipped() {
        let held = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        assert!(!port_free(held.local_addr().expect("addr").port()));
    }

    #[test]
    fn only_the_newest_start_decides_a_lost_bind_race() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("validator.out");
        std::fs::write(&log, "failed to start faucet: Address already in use\n").expect("write");
        let from = std::fs::metadata(&log).expect("len").len();
        assert!(lost_bind_race(&log, 0));
        assert!(!lost_bind_race(&log, from));
        std::fs::write(&log, "old\nUnable to bind faucet: Address already in use\n").expect("write");
        assert!(lost_bind_race(&log, 4));
        assert!(!lost_bind_race(&dir.path().join("missing"), 0));
    }
}
