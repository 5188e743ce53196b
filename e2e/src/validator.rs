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
    base_port: u16,
    process: Option<ManagedProcess>,
}

/// Finds `n` consecutive free ports on 127.0.0.1 (the validator wants a contiguous range).
fn free_block(n: u16) -> Result<u16> {
    for _ in 0..200 {
        let base = 20_000 + (rand_u16() % 400) * 100;
        let all_free = (base..base + n).all(|p| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        });
        if all_free {
            return Ok(base);
        }
    }
    Err(Error::State("no block of free ports for the validator".into()))
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
        let mut v = Self {
            program,
            dir: dir.to_path_buf(),
            base_port: free_block(60)?,
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

    /// Starts the validator on its existing ledger and the same ports.
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
        let b = self.base_port;
        let args = vec![
            "--ledger".to_owned(),
            self.ledger().display().to_string(),
            "--bind-address".to_owned(),
            "127.0.0.1".to_owned(),
            "--rpc-port".to_owned(),
            b.to_string(),
            "--faucet-port".to_owned(),
            (b + 2).to_string(),
            "--gossip-port".to_owned(),
            (b + 3).to_string(),
            "--dynamic-port-range".to_owned(),
            format!("{}-{}", b + 10, b + 59),
            "--quiet".to_owned(),
        ];
        let log = self.dir.join("validator.out");
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
