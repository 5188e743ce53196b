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
    /// Identity in the Lease (defaults to the host name and process id).
    #[arg(long, env = "GPUFED_IDENTITY")]
    pub identity: Option<String>,
    /// How long a Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often providers are probed (heartbeat).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How often a placement round runs when nothing triggers one.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub placement_interval: Duration,
    /// Timeout of each request to a member cluster.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub member_timeout: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "GPUFED_LOG_JSON")]
    pub log_json: bool,
}

/// Parses `90s`, `2m`, `1h30m` (the CRDs' duration format).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    gpufed_api::formats::parse_duration(s)
        .map(Duration::from_secs)
        .map_err(|e| e.to_string())
}
