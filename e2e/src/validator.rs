//! The real Solana test validator (agave `solana-test-validator` 3.1.12, built and cached by
//! `scripts/install-solana.sh`), started on 127.0.0.1 ports. Stopping and starting it again
//! on the same ledger is how tests take "the chain" down and bring it back.
//!
//! Its RPC, pubsub and faucet listen on all interfaces whatever the flags; tests talk to
//! 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::ManagedProcess;
use crate::{Error, Result};

/// The validator version the scripts build.
pub const SOLANA_VERSION: &str = "3.1.12";

/// `$GPUFED_SOLANA_VALIDATOR`, else
/// `${GPUFED_CACHE:-$HOME/.cache/gpufed}/solana-3.1.12/bin/solana-test-validator`.
pub fn validator_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GPUFED_SOLANA_VALIDATOR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    crate::binaries::cache_root().join(format!("solana-{SOLANA_VERSION}/bin/solana-test-validator"))
}

/// A running (or stopped, restartable) test validator.
pub struct Validator {
    program: PathBuf,
    dir: PathBuf,
    /// RPC on `base_port`, pubsub on `base_port + 1`: fixed for the validator's life, since
    /// clients (the operator under test) hold the URL.
    base_port: u16,
    /// Faucet, gossip and the dynamic range: `aux_port..aux_port + AUX_PORTS`. Re-picked on
    /// resume when taken — during an hour-long outage other processes on the machine took
    /// the faucet's port and the restart failed ("Address already in use").
    aux_port: u16,
    process: Option<ManagedProcess>,
}

/// Ports in the auxiliary block: faucet, gossip, then a 48-port dynamic range.
const AUX_PORTS: u16 = 50;

/// How many times a resume re-picks its auxiliary ports after losing a bind race.
const BIND_RETRIES: usize = 3;

/// Whether `port` can be bound for TCP and UDP, on 127.0.0.1 and on all interfaces (the
/// validator's faucet and RPC listen on 0.0.0.0 whatever the flags).
fn port_free(port: u16) -> bool {
    ["127.0.0.1", "0.0.0.0"].iter().all(|host| {
        std::net::TcpListener::bind((*host, port)).is_ok() && std::net::UdpSocket::bind((*host, port)).is_ok()
    })
}

/// Finds `n` (≤ 100) consecutive free ports (the validator wants contiguous ranges) in a
/// block of 100 other than `avoid`'s. Blocks lie in 20000–31999, below Linux's ephemeral
/// range (32768–60999), so outgoing connections don't take them while the validator is down.
fn free_block(n: u16, avoid: Option<u16>) -> Result<u16> {
    for _ in 0..200 {
        let base = 20_000 + (rand_u16() % 120) * 100;
        if avoid.is_some_and(|a| a / 100 == base / 100) {
            continue;
        }
        if (base..base + n).all(port_free) {
            return Ok(base);
        }
    }
    Err(Error::State("no block of free ports for the validator".into()))
}

/// Whether a validator that exited early did so because a port was taken: its log (which
/// every start appends to) says so after byte `from`.
fn lost_bind_race(log: &Path, from: u64) -> bool {
    std::fs::read(log)
        .ok()
        .and_then(|b| {
            b.get(from as usize..)
                .map(|t| String::from_utf8_lossy(t).into_owned())
        })
        .is_some_and(|t| t.contains("Address already in use"))
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((t ^ std::process::id().wrapping_mul(2_654_435_761)) % 65_521) as u16
}

impl Validator {
    /// Starts a fresh validator with its ledger under `dir`, waiting until `getHealth` is ok.
    pub async fn start(dir: &Path) -> Result<Self> {
        let program = validator_binary();
        if !program.is_file() {
            return Err(Error::MissingBinary {
                binary: "solana-test-validator".into(),
                dir: program.parent().map(Path::to_path_buf).unwrap_or_default(),
            });
        }
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let base_port = free_block(2 + AUX_PORTS, None)?;
        let mut v = Self {
            program,
            dir: dir.to_path_buf(),
            base_port,
            aux_port: base_port + 2,
            process: None,
        };
        v.resume().await?;
        Ok(v)
    }

    /// The JSON-RPC URL.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.base_port)
    }

    /// The ledger directory.
    pub fn ledger(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// The validator's output, appended to by every start.
    pub fn log(&self) -> PathBuf {
        self.dir.join("validator.out")
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Stops the validator (SIGTERM, then SIGKILL); the ledger stays for [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Starts the validator on its existing ledger, on the same RPC and pubsub ports.
    ///
    /// Slots stay at the default 64 ticks (≈1.4 s each for this debug build on 2 cores,
    /// so finality ≈45 s and a lost blockhash expires after 3–4 minutes). Fewer ticks make
    /// slots faster (16: 0.37 s) but the node's transaction-status writer then falls ever
    /// further behind: `getBlock`/`getTransaction` served only slots ≤46 with 152 final
    /// (16 ticks), ≤59 of 103 (32 ticks); 64 ticks kept up (45 of 45). Measured 2026-12-01.
    pub async fn resume(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        if !port_free(self.base_port) || !port_free(self.base_port + 1) {
            return Err(Error::State(format!(
                "the validator's RPC port {} or pubsub port {} was taken while it was stopped",
                self.base_port,
                self.base_port + 1
            )));
        }
        let mut attempt = 0;
        loop {
            if !(self.aux_port..self.aux_port + AUX_PORTS).all(port_free) {
                self.aux_port = free_block(AUX_PORTS, Some(self.base_port))?;
            }
            let from = std::fs::metadata(self.log()).map(|m| m.len()).unwrap_or(0);
            match self.spawn_once().await {
                Err(Error::ExitedEarly { log, .. })
                    if attempt < BIND_RETRIES && lost_bind_race(&log, from) =>
                {
                    attempt += 1;
                    tracing::warn!(attempt, "validator lost a port to another process; re-picking");
                    self.aux_port = free_block(AUX_PORTS, Some(self.base_port))?;
                }
                other => return other,
            }
        }
    }

    async fn spawn_once(&mut self) -> Result<()> {
        let (b, a) = (self.base_port, self.aux_port);
        let args = vec![
            "--ledger".to_owned(),
            self.ledger().display().to_string(),
            "--bind-address".to_owned(),
            "127.0.0.1".to_owned(),
            "--rpc-port".to_owned(),
            b.to_string(),
            "--faucet-port".to_owned(),
            a.to_string(),
            "--gossip-port".to_owned(),
            (a + 1).to_string(),
            "--dynamic-port-range".to_owned(),
            format!("{}-{}", a + 2, a + AUX_PORTS - 1),
            "--quiet".to_owned(),
        ];
        let log = self.log();
        let mut p = ManagedProcess::spawn_tied("solana-test-validator", &self.program, &args, &log)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            p.check_running()?;
            if healthy(b).await {
                break;
            }
            if Instant::now() >= deadline {
                p.stop(Duration::from_secs(5));
                return Err(Error::Timeout {
                    what: format!("solana-test-validator getHealth (log {})", log.display()),
                    seconds: 90,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.process = Some(p);
        Ok(())
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn healthy(port: u16) -> bool {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"getHealth"}"#;
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out.contains("\"result\":\"ok\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_avoid_the_ephemeral_range_and_the_given_block() {
        for _ in 0..50 {
            let b = free_block(AUX_PORTS, Some(20_000)).expect("a free block");
            assert!((20_100..32_000).contains(&b), "block {b}");
            assert_eq!(b % 100, 0);
        }
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
