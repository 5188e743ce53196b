//! Command-line flags (each also readable from the environment).

use std::net::SocketAddr;
use std::time::Duration;

/// Flags of `gpufed-operator`.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "gpufed-operator", version, about = "gpufed hub operator")]
pub struct Args {
    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "GPUFED_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "GPUFED_NAMESPACE", default_value = "gpufed-system")]
    pub namespace: String,
    /// Identity in the Lease (defaults to the host name and process id). Not empty: a
    /// Lease with no holder is free to take. Two processes given the same identity still
    /// never both lead (each also marks the Lease with a nonce of its own).
    #[arg(long, env = "GPUFED_IDENTITY", value_parser = parse_identity)]
    pub identity: Option<String>,
    /// How long a Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// How often providers are probed (heartbeat); at least 1s.
    #[arg(long, default_value = "5s", value_parser = parse_period)]
    pub heartbeat_interval: Duration,
    /// How often a placement round runs when nothing triggers one; at least 1s.
    #[arg(long, default_value = "2s", value_parser = parse_period)]
    pub placement_interval: Duration,
    /// Whose running jobs a job with `spec.placement.preemptLowerPriority` may evict when
    /// it fits nowhere (always only of strictly lower priority): `namespace` (its own
    /// tenant's), `any` (every tenant's) or `off` (docs/placement.md#preemption).
    #[arg(long, env = "GPUFED_PREEMPTION", value_enum, default_value_t = crate::placement::Preemption::Namespace)]
    pub preemption: crate::placement::Preemption,
    /// Timeout of each request to a member cluster; at least 1s.
    #[arg(long, default_value = "10s", value_parser = parse_period)]
    pub member_timeout: Duration,
    /// Networks a serving replica's address must lie in to be routed by the hub Service
    /// (comma-separated CIDRs, e.g. the providers' node networks). Empty: any address but
    /// loopback, link-local, multicast and unspecified ones. Addresses come from
    /// providers; without a list a provider could point a hub Service at hub-internal IPs.
    #[arg(long, env = "GPUFED_SERVING_ENDPOINT_CIDRS", value_delimiter = ',')]
    pub serving_endpoint_cidrs: Vec<ipnet::IpNet>,
    /// Log as JSON lines.
    #[arg(long, env = "GPUFED_LOG_JSON")]
    pub log_json: bool,
    /// Solana JSON-RPC URL; settlement is off without it (usage is still metered in status).
    #[arg(long, env = "GPUFED_SOLANA_RPC")]
    pub solana_rpc: Option<String>,
    /// Settlement authority keypair (solana-keygen JSON), e.g. mounted from a Secret.
    #[arg(long, env = "GPUFED_SETTLEMENT_KEYPAIR", requires = "solana_rpc")]
    pub settlement_keypair: Option<std::path::PathBuf>,
    /// Mint of the settlement token (base58).
    #[arg(long, env = "GPUFED_SETTLEMENT_MINT", requires = "solana_rpc")]
    pub settlement_mint: Option<String>,
    /// Decimals of the settlement mint. Optional: read from the chain at the first start
    /// and recorded in the journal; give it to start metering while the RPC node is
    /// unreachable on a fresh journal. Checked against the chain once it answers.
    #[arg(long, env = "GPUFED_SETTLEMENT_MINT_DECIMALS", requires = "solana_rpc")]
    pub settlement_mint_decimals: Option<u8>,
    /// Commitment at which a batch counts as settled: processed, confirmed or finalized.
    #[arg(long, default_value = "finalized", value_parser = parse_commitment)]
    pub settlement_commitment: gpufed_settlement::Commitment,
    /// Period of settlement rounds; at least 1s.
    #[arg(long, default_value = "2s", value_parser = parse_period)]
    pub settlement_interval: Duration,
    /// Smallest slice of a running attempt's usage that is journaled.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub meter_slice: Duration,
    /// How far behind the provider's last heartbeat running attempts are metered.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub meter_lag: Duration,
    /// Whether a tenant whose usage cannot be charged (no escrow, or too little in it) has
    /// its new jobs held from starting (`hold`) or only reported (`report`). Running jobs
    /// are never stopped by the chain's state.
    #[arg(long, default_value = "hold", value_parser = ["hold", "report"])]
    pub escrow_shortfall_policy: String,
    /// Stake controller (docs/settlement.md, "Stake"): on with `--solana-rpc` and the four
    /// `--stake-*` accounts below. Mint of the stake token (base58).
    #[arg(
        long,
        env = "GPUFED_STAKE_MINT",
        requires = "solana_rpc",
        help_heading = "Stake"
    )]
    pub stake_mint: Option<String>,
    /// Vault token account (of the stake mint, owned by the stake authority).
    #[arg(
        long,
        env = "GPUFED_STAKE_VAULT",
        requires = "solana_rpc",
        help_heading = "Stake"
    )]
    pub stake_vault: Option<String>,
    /// Stake authority keypair (solana-keygen JSON): owns the vault, signs and pays releases
    /// and slashes.
    #[arg(
        long,
        env = "GPUFED_STAKE_AUTHORITY_KEYPAIR",
        requires = "solana_rpc",
        help_heading = "Stake"
    )]
    pub stake_authority_keypair: Option<std::path::PathBuf>,
    /// Treasury token account that receives slashed stake.
    #[arg(
        long,
        env = "GPUFED_STAKE_TREASURY",
        requires = "solana_rpc",
        help_heading = "Stake"
    )]
    pub stake_treasury: Option<String>,
    /// How long an unbonding stake waits before its tokens return.
    #[arg(long, default_value = "168h", value_parser = parse_duration, help_heading = "Stake")]
    pub unbonding_period: Duration,
    /// How long a raised slash can be dismissed before it executes.
    #[arg(long, default_value = "24h", value_parser = parse_duration, help_heading = "Stake")]
    pub dispute_window: Duration,
    /// How long an unknown deposit signature is retried before the Stake is rejected.
    #[arg(long, default_value = "10m", value_parser = parse_duration, help_heading = "Stake")]
    pub deposit_grace: Duration,
    /// Timing bands of the GPU compute challenge (YAML or JSON, docs/trust.md). Without
    /// it no GPU verifies: the hub cannot judge a model it has no band for.
    #[arg(long, env = "GPUFED_CHALLENGE_BANDS", help_heading = "Verification")]
    pub challenge_bands: Option<std::path::PathBuf>,
    /// How often every GPU node is challenged: all of them at once, at each multiple of
    /// this period on the clock (a round; docs/trust.md).
    #[arg(long, default_value = "1h", value_parser = parse_duration, help_heading = "Verification")]
    pub verify_interval: Duration,
    /// How late after a round's start the hub may issue a node's round challenge without
    /// the node losing the time: the hub's spread over the fleet (see
    /// `gpufed_challenge_round_lag_seconds`). Later (an unreachable member, a withheld
    /// report) the node's clock runs from this much after the round's start.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Verification")]
    pub challenge_round_grace: Duration,
    /// How long a node has to commit to, and then to open, a challenge.
    #[arg(long, default_value = "2m", value_parser = parse_duration, help_heading = "Verification")]
    pub challenge_timeout: Duration,
    /// How often a provider is probed while one of its nodes has a challenge open (instead
    /// of every heartbeat; between heartbeats only the nodes' reports are read). A node's
    /// new report wakes the hub at once (its watch of a push member's nodes, or of the
    /// pull-mode agents' reports); this poll is the fallback while a watch is not current
    /// (and pull-mode agents report this often regardless while a challenge is open).
    /// At least 1s.
    #[arg(long, default_value = "1s", value_parser = parse_period, help_heading = "Verification")]
    pub challenge_poll: Duration,
    /// A `verifiedOnly` job starts only on nodes that passed a challenge within this
    /// time; an older verdict is renewed first (a challenge at once). `0s`: any verdict
    /// still listed will do.
    #[arg(long, default_value = "10m", value_parser = parse_duration, help_heading = "Verification")]
    pub verify_before_start: Duration,
    /// Probation: a GPU counts as verified only once it has passed a round. Passes between
    /// rounds (a new node's, new GPUs') wait for the next round, so identities made afresh
    /// to be challenged alone gain nothing; a new provider's GPUs then count up to one
    /// `--verify-interval` after they join (docs/trust.md, "Probation").
    #[arg(long, help_heading = "Verification")]
    pub join_probation: bool,
    /// At most one new evidence of a kind per provider within this time (so a provider
    /// that keeps failing is slashed once per period, not once per challenge).
    #[arg(long, default_value = "24h", value_parser = parse_duration, help_heading = "Verification")]
    pub evidence_cooldown: Duration,
    /// Share of a provider's bonded stake that one slash for recorded evidence takes, in
    /// basis points (1000 = 10%; 0: evidence is never slashed automatically).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=10_000), help_heading = "Stake")]
    pub slash_bps: u32,
    /// Stake a provider needs per verified GPU (stake-token units, decimal) for its GPUs to
    /// count as verified in placement; `0` needs none (docs/trust.md, "Stake").
    #[arg(long, default_value = "0", help_heading = "Stake")]
    pub stake_per_gpu: String,
    /// Per-model factor on `--stake-per-gpu`, `MODEL=FACTOR` (e.g.
    /// `NVIDIA-H100-80GB-HBM3=2.5`); repeatable. Other models: factor 1.
    #[arg(long, value_parser = parse_multiplier, help_heading = "Stake")]
    pub stake_multiplier: Vec<(String, u32)>,
}

/// Parses `MODEL=FACTOR` into the model key and basis points.
pub fn parse_multiplier(s: &str) -> Result<(String, u32), String> {
    let (model, factor) = s
        .split_once('=')
        .ok_or_else(|| format!("--stake-multiplier {s:?}: expected MODEL=FACTOR"))?;
    let micros = gpufed_api::formats::parse_decimal(factor.trim())
        .map_err(|e| format!("--stake-multiplier {s:?}: factor: {e}"))?;
    let bps =
        u32::try_from(micros / 100).map_err(|_| format!("--stake-multiplier {s:?}: factor too large"))?;
    if model.trim().is_empty() {
        return Err(format!("--stake-multiplier {s:?}: empty model"));
    }
    Ok((gpufed_trust::bands::model_key(model), bps))
}

impl Args {
    /// Verification settings; an error names the bands file and what is wrong in it.
    pub fn verification(&self) -> Result<crate::verification::VerifyConfig, String> {
        let bands = match &self.challenge_bands {
            None => gpufed_trust::Bands::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--challenge-bands {}: {e}", path.display()))?;
                let bands: gpufed_trust::Bands = serde_yaml::from_str(&text)
                    .map_err(|e| format!("--challenge-bands {}: {e}", path.display()))?;
                bands
                    .validate()
                    .map_err(|e| format!("--challenge-bands {}: {e}", path.display()))?;
                bands
            }
        };
        if self.verify_interval.is_zero() || self.challenge_timeout.is_zero() {
            return Err("--verify-interval and --challenge-timeout must be greater than 0".into());
        }
        // Abandoned-job evidence lists the attempts of the last FRESH_SECS (plus the margin
        // around fleet-wide losses): a shorter cooldown would list one attempt in two
        // documents, and slash it twice.
        let least = crate::verification::abandoned::FRESH_SECS + crate::verification::abandoned::MARGIN_SECS;
        if self.evidence_cooldown < std::time::Duration::from_secs(least.unsigned_abs()) {
            return Err(format!(
                "--evidence-cooldown ({:?}) must be at least {} minutes (an abandoned job would be evidence twice)",
                self.evidence_cooldown,
                least / 60
            ));
        }
        if self.challenge_round_grace >= self.verify_interval {
            return Err(format!(
                "--challenge-round-grace ({:?}) must be shorter than --verify-interval ({:?})",
                self.challenge_round_grace, self.verify_interval
            ));
        }
        Ok(crate::verification::VerifyConfig {
            bands,
            interval: self.verify_interval,
            timeout: self.challenge_timeout,
            round_grace: self.challenge_round_grace,
            namespace: self.namespace.clone(),
            evidence_cooldown: self.evidence_cooldown,
            stake_per_gpu: {
                gpufed_api::formats::parse_decimal(&self.stake_per_gpu)
                    .map_err(|e| format!("--stake-per-gpu {:?}: {e}", self.stake_per_gpu))?;
                self.stake_per_gpu.clone()
            },
            stake_multipliers: self.stake_multiplier.iter().cloned().collect(),
            before_start: self.verify_before_start,
            probation: self.join_probation,
        })
    }
}

impl Args {
    /// Settlement settings when `--solana-rpc` is given; an error names a missing flag.
    pub fn settlement(&self) -> Result<Option<crate::settlement::SettlementConfig>, String> {
        let Some(rpc_url) = self.solana_rpc.clone() else {
            return Ok(None);
        };
        let keypair = self
            .settlement_keypair
            .clone()
            .ok_or("--solana-rpc needs --settlement-keypair")?;
        let mint = self
            .settlement_mint
            .clone()
            .ok_or("--solana-rpc needs --settlement-mint")?;
        // A running attempt is metered only up to last heartbeat − lag; the lag must cover
        // the job controller's observation of a finished attempt (it polls running jobs
        // every 10 s), or a slice could reach past the attempt's real end.
        if self.meter_lag < Duration::from_secs(20) {
            return Err(format!(
                "--meter-lag {:?} is too short: at least 20s (twice the running-job poll period)",
                self.meter_lag
            ));
        }
        Ok(Some(crate::settlement::SettlementConfig {
            rpc_url,
            keypair,
            mint,
            mint_decimals: self.settlement_mint_decimals,
            commitment: self.settlement_commitment,
            interval: self.settlement_interval,
            meter_slice: self.meter_slice,
            meter_lag: self.meter_lag,
            namespace: self.namespace.clone(),
            hold_on_shortfall: self.escrow_shortfall_policy == "hold",
        }))
    }
}

impl Args {
    /// Stake controller settings when `--solana-rpc` and the `--stake-*` accounts are given;
    /// `None` when no stake flag is; an error names a missing one.
    pub fn stake(&self) -> Result<Option<crate::stake::StakeControllerConfig>, String> {
        let given = [
            self.stake_mint.is_some(),
            self.stake_vault.is_some(),
            self.stake_authority_keypair.is_some(),
            self.stake_treasury.is_some(),
        ];
        let Some(rpc_url) = self.solana_rpc.clone().filter(|_| given.contains(&true)) else {
            return Ok(None);
        };
        let missing = |flag: &str| format!("the stake controller needs {flag} (or no --stake-* flag at all)");
        Ok(Some(crate::stake::StakeControllerConfig {
            rpc_url,
            mint: self.stake_mint.clone().ok_or_else(|| missing("--stake-mint"))?,
            vault: self.stake_vault.clone().ok_or_else(|| missing("--stake-vault"))?,
            keypair: self
                .stake_authority_keypair
                .clone()
                .ok_or_else(|| missing("--stake-authority-keypair"))?,
            treasury: self
                .stake_treasury
                .clone()
                .ok_or_else(|| missing("--stake-treasury"))?,
            unbonding_period: self.unbonding_period,
            dispute_window: self.dispute_window,
            deposit_grace: self.deposit_grace,
            commitment: self.settlement_commitment,
            interval: self.settlement_interval,
            namespace: self.namespace.clone(),
            slash_bps: self.slash_bps,
        }))
    }
}

/// Parses a Solana commitment level.
pub fn parse_commitment(s: &str) -> Result<gpufed_settlement::Commitment, String> {
    use gpufed_settlement::Commitment;
    match s {
        "processed" => Ok(Commitment::Processed),
        "confirmed" => Ok(Commitment::Confirmed),
        "finalized" => Ok(Commitment::Finalized),
        other => Err(format!("{other:?} is not one of processed, confirmed, finalized")),
    }
}

/// Parses `90s`, `2m`, `1h30m` (the CRDs' duration format).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    gpufed_api::formats::parse_duration(s)
        .map(Duration::from_secs)
        .map_err(|e| e.to_string())
}

/// A period or timeout the operator loops or waits on: at least 1 s. `0s` would spin a
/// loop (heartbeats, placement rounds, settlement rounds; pull-mode agents told to report
/// every millisecond) or time out every member request at once.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s}: must be at least 1s"));
    }
    Ok(d)
}

/// A Lease identity: not empty (nor blank) — a Lease with no holder is free to take, so
/// replicas of no name would each take it from the others.
pub fn parse_identity(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the Lease identity must not be empty (leave --identity and GPUFED_IDENTITY unset for the host name and process id)".into());
    }
    Ok(s.to_owned())
}

/// A Lease duration: at least 3 s (renewed every third of it; shorter would hammer the
/// API server and never stay fresh across one slow round) and at most a day (the
/// Lease's `leaseDurationSeconds` is 32-bit, and a successor waits that long after a
/// crash).
pub fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(3..=86_400).contains(&d.as_secs()) {
        return Err(format!("{s}: a lease duration must be between 3s and 24h"));
    }
    Ok(d)
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
