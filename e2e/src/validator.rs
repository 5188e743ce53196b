//! The real Solana test validator (agave `solana-test-validator` 3.1.12, built and cached by
//! `scripts/install-solana.sh`), started on 127.0.0.1 ports. Stopping and starting it again
//! on the same ledger is how tests take "the chain" down and bring it back.
//!
//! Its RPC, pubsub and faucet listen on all interfaces whatever the flags; tests talk to
//! 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// While stopped: sockets holding the RPC and pubsub ports, so that no other test's
    /// port search takes them during an outage (a 60-minute run lost its RPC port so).
    reserved: Vec<Reservation>,
    /// The finalized slot (last root) when it was stopped: a resume must root past it (a
    /// wedged restart once served this old root's bank for ten minutes — escrows 0, every
    /// batch unconfirmed; see [`Self::set_tower_aside`]).
    root_at_stop: Option<u64>,
    /// The claims on the blocks holding `base_port` and `aux_port` (one block until the
    /// auxiliary ports are re-picked), held for the validator's life.
    claims: Vec<Claim>,
}

/// Ports in the auxiliary block: faucet, gossip, then a 48-port dynamic range.
const AUX_PORTS: u16 = 50;

/// How many times a resume re-picks its auxiliary ports after losing a bind race.
const BIND_RETRIES: usize = 3;

mod ports;
mod rpc;
mod spin;
use ports::{Claim, Reservation, free_block, lost_bind_race, port_free, reserve};

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
        let block = free_block(2 + AUX_PORTS, None)?;
        let base_port = block.base();
        let mut v = Self {
            program,
            dir: dir.to_path_buf(),
            base_port,
            aux_port: base_port + 2,
            process: None,
            reserved: Vec::new(),
            root_at_stop: None,
            claims: vec![block],
        };
        // Nobody holds the URL yet, so a fresh validator whose RPC or pubsub port another
        // process took (the resume's own retries only move the auxiliary ports) moves to a
        // new block.
        let mut attempt = 0;
        loop {
            match v.resume().await {
                Ok(()) => return Ok(v),
                Err(e)
                    if attempt < BIND_RETRIES && !(port_free(v.base_port) && port_free(v.base_port + 1)) =>
                {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "the new validator's RPC port was taken; re-picking");
                    let block = free_block(2 + AUX_PORTS, Some(v.base_port))?;
                    v.base_port = block.base();
                    v.aux_port = v.base_port + 2;
                    v.claims = vec![block];
                }
                Err(e) => return Err(e),
            }
        }
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

    /// The chain's finalized slot (its last root), if it answers.
    pub async fn finalized_slot(&self) -> Option<u64> {
        let port = self.base_port;
        tokio::task::spawn_blocking(move || rpc::finalized_slot(port))
            .await
            .ok()
            .flatten()
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Stops the validator (SIGTERM, then SIGKILL); the ledger stays for [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            // Roots only grow; a validator stopped after coming back too low keeps the old one.
            self.root_at_stop = self.root_at_stop.max(rpc::finalized_slot(self.base_port));
            p.stop(Duration::from_secs(10));
            self.reserved = [self.base_port, self.base_port + 1]
                .into_iter()
                .filter_map(|port| {
                    let held = reserve(port);
                    if held.is_none() {
                        tracing::warn!(port, "could not hold the stopped validator's port");
                    }
                    held
                })
                .collect();
        }
    }

    /// Starts the validator on its existing ledger, on the same RPC and pubsub ports.
    ///
    /// Slots stay at the default 64 ticks: ≈0.57 s each with the polling threads niced
    /// ([`spin`]; 1.2–1.4 s before), so finality ≈18 s and a lost blockhash expires after
    /// ~1.5 minutes. Fewer ticks do not make them faster in a way that helps: the node's
    /// block pipeline then falls ever further behind and `getBlock`/`getTransaction` served
    /// only slots ≤46 with 152 final (16 ticks, 2026-12-01); at 64 ticks with the hot crates
    /// optimized (`scripts/install-solana.sh`) `getBlock` stays one slot behind finality.
    pub async fn resume(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        self.reserved.clear();
        self.set_tower_aside()?;
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
                self.repick_aux()?;
            }
            let from = std::fs::metadata(self.log()).map(|m| m.len()).unwrap_or(0);
            match self.spawn_once().await {
                Err(Error::ExitedEarly { log, .. })
                    if attempt < BIND_RETRIES && lost_bind_race(&log, from) =>
                {
                    attempt += 1;
                    tracing::warn!(attempt, "validator lost a port to another process; re-picking");
                    self.repick_aux()?;
                }
                Err(e) => return Err(e),
                Ok(()) => break,
            }
        }
        self.check_chain_advances().await
    }

    /// Moves the faucet, gossip and dynamic ports to a newly claimed block, releasing the
    /// previous auxiliary block unless it is the RPC port's.
    fn repick_aux(&mut self) -> Result<()> {
        let block = free_block(AUX_PORTS, Some(self.base_port))?;
        self.aux_port = block.base();
        self.claims.truncate(1);
        self.claims.push(block);
        Ok(())
    }

    /// Moves the vote tower out of the ledger, so that the restart rebuilds it from its vote
    /// account on the replayed chain. The tower is saved at every vote, before the voted
    /// slot is surely in the blockstore: a stop can leave it with a vote on a slot the
    /// restart no longer has, and the restarted node then builds that slot number anew on
    /// another fork, can never prove the switch (it is the only voter: `FailedSwitchThreshold`
    /// at every slot) and never roots again — seen in CI, and reproduced by stopping a
    /// validator at random points (first restart stuck at its root for good; with the tower
    /// moved aside the same ledger voted and rooted again). Kept as `*.before-restart`.
    fn set_tower_aside(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(self.ledger()) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("tower-") && name.ends_with(".bin") {
                let aside = path.with_file_name(format!("{name}.before-restart"));
                std::fs::rename(&path, &aside)
                    .map_err(|e| Error::State(format!("moving {} aside: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Waits (≤ 120 s) until the restarted chain finalizes a slot past the root it had when
    /// it stopped (or, with none recorded, past its first root after the restart). Answering
    /// RPC is not enough: a restart once came back at its old root and never finalized
    /// again, so every transaction sent to it stayed unconfirmed and its blockhash never
    /// expired. A validator that does not advance is stopped and reported.
    async fn check_chain_advances(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut floor = self.root_at_stop;
        let mut now = None;
        while Instant::now() < deadline {
            now = self.finalized_slot().await;
            match (floor, now) {
                (Some(f), Some(s)) if s > f => return Ok(()),
                (None, Some(s)) => floor = Some(s),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.stop();
        Err(Error::State(format!(
            "the restarted validator finalized nothing new: finalized slot {now:?} 120 s after \
             the restart, {floor:?} at the stop (log {})",
            self.log().display()
        )))
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
            if rpc::healthy(b).await {
                if self.answers_as_ours(b).await {
                    break;
                }
                // Another process answers on our RPC port: ours lost the bind and is
                // exiting, which `check_running` reports next time round.
                tracing::warn!(
                    port = b,
                    "a validator that is not this one answers on its RPC port"
                );
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
        calm(p.record().pid).await;
        self.process = Some(p);
        Ok(())
    }
}

/// Lowers the priority of the validator's polling threads ([`spin`]); they may start just
/// after RPC answers, so this looks again for a few seconds until it has found them all.
async fn calm(pid: u32) {
    let mut calmed = Vec::new();
    for _ in 0..25 {
        calmed = spin::calm_busy_threads(pid);
        if calmed.len() == spin::BUSY_THREADS.len() {
            tracing::debug!(?calmed, "validator polling threads at nice 19");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(
        ?calmed,
        expected = ?spin::BUSY_THREADS,
        "not every polling thread of the validator was found: its slots may be slower"
    );
}

impl Validator {
    /// Whether the validator answering on `port` has this ledger's identity (the key the
    /// validator wrote to `validator-keypair.json`): a healthy answer alone may come from
    /// another validator holding the port.
    async fn answers_as_ours(&self, port: u16) -> bool {
        let Ok(key) = gpufed_chain::Keypair::read(&self.ledger().join("validator-keypair.json")) else {
            return false;
        };
        let ours = key.pubkey().to_string();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"getIdentity"}"#;
        tokio::task::spawn_blocking(move || rpc::call(port, body))
            .await
            .ok()
            .flatten()
            .is_some_and(|out| rpc::identity_is(&out, &ours))
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        self.stop();
    }
}
