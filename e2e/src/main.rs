//! `gpufed-e2e`: bring a demo federation (a hub and three providers with SIMULATED GPU
//! nodes, on real Kubernetes 1.20.2 control planes) up and down.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use gpufed_e2e::federation::{RunState, run_root};
use gpufed_e2e::process::{ManagedProcess, stop_records};
use gpufed_e2e::{Federation, FederationSpec};
use rustix::process::Signal;

#[derive(Parser)]
#[command(about = "Real control planes with simulated GPU nodes for gpufed demos and tests")]
struct Cli {
    /// Run directory (default: $GPUFED_RUN/demo, $GPUFED_RUN defaulting to /tmp/gpufed-e2e).
    #[arg(long, global = true)]
    run_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a hub and provider-a/b/c in the background and print their kubeconfigs.
    Up,
    /// Stop exactly the processes `up` started.
    Down,
    /// Tell what is running.
    Status,
    /// Run the federation in the foreground until SIGTERM/SIGINT (what `up` starts detached).
    Serve,
    /// Run a local Solana validator with a settlement token, escrows and payout accounts in
    /// the foreground; writes `<run dir>/chain.env` when ready.
    Chain {
        /// Tenant namespaces that get a funded escrow delegated to the settlement authority.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Provider payout wallets that get a token account.
        #[arg(long = "payout-wallet")]
        payout_wallets: Vec<String>,
    },
    /// Run the real hub operator in the foreground, exactly as `gpufed-operator ARGS...`
    /// does, against the hub in $KUBECONFIG (fault tests SIGKILL/SIGSTOP this process).
    #[command(disable_help_flag = true)]
    Operator {
        /// The operator's own flags (`gpufed-e2e operator --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

mod chaindemo;
mod operator_cmd;

fn state_if_running(dir: &Path) -> Option<RunState> {
    RunState::read(dir)
        .ok()
        .filter(|s| s.owner.as_ref().is_some_and(|o| o.is_alive()))
}

fn print_clusters(state: &RunState) {
    println!(
        "federation ready in {:.1} s; run dir {}",
        state.ready_seconds,
        state.run_dir.display()
    );
    for c in &state.clusters {
        println!(
            "  {:<11} {}  KUBECONFIG={}",
            c.name,
            c.server,
            c.kubeconfig.display()
        );
    }
    println!("nodes are SIMULATED (label gpufed.io/simulated=true); stop with `gpufed-e2e down`");
}

fn up(dir: &Path) -> anyhow::Result<()> {
    if let Some(state) = state_if_running(dir) {
        println!("already running");
        print_clusters(&state);
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let exe = std::env::current_exe()?;
    let args = [
        "--run-dir".to_owned(),
        dir.display().to_string(),
        "serve".to_owned(),
    ];
    let log = dir.join("serve.log");
    let mut serve = ManagedProcess::spawn("gpufed-e2e serve", &exe, &args, &log)?;
    let t0 = Instant::now();
    loop {
        if let Ok(state) = RunState::read(dir)
            && state.ready_seconds > 0.0
        {
            print_clusters(&state);
            return Ok(());
        }
        if let Err(e) = serve.check_running() {
            bail!("{e}\n{}", tail(&log, 30));
        }
        if t0.elapsed() > Duration::from_secs(300) {
            serve.stop(Duration::from_secs(30));
            bail!("federation not ready after 300 s; log: {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let state = match RunState::read(dir) {
        Ok(s) => s,
        Err(_) => {
            println!("nothing to stop: no state in {}", dir.display());
            return Ok(());
        }
    };
    if let Some(owner) = &state.owner
        && owner.signal(Signal::TERM)
    {
        let t0 = Instant::now();
        while owner.is_alive() && t0.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("stopped the federation supervisor (pid {})", owner.pid);
    }
    // Anything the supervisor did not stop (e.g. it was killed): stop it by recorded PID.
    let strays = stop_records(&state.processes, Duration::from_secs(10));
    for name in strays {
        println!("stopped stray {name}");
    }
    let left: Vec<_> = state
        .processes
        .iter()
        .filter(|p| p.is_alive())
        .map(|p| p.name.clone())
        .collect();
    if !left.is_empty() {
        bail!("still running: {left:?}");
    }
    std::fs::remove_file(dir.join(gpufed_e2e::federation::STATE_FILE)).ok();
    std::fs::remove_dir_all(dir.join("etcd")).ok();
    println!("down; logs kept in {}", dir.display());
    Ok(())
}

async fn status(dir: &Path) -> anyhow::Result<()> {
    let Ok(state) = RunState::read(dir) else {
        println!("not running (no state in {})", dir.display());
        std::process::exit(3);
    };
    let owner_alive = state.owner.as_ref().is_some_and(|o| o.is_alive());
    println!(
        "supervisor: {}",
        if owner_alive { "running" } else { "NOT running" }
    );
    for p in &state.processes {
        println!(
            "  {:<40} pid {:<8} {}",
            p.name,
            p.pid,
            if p.is_alive() { "running" } else { "dead" }
        );
    }
    for c in &state.clusters {
        let ready = match gpufed_e2e::kubeconfig::client_from_kubeconfig(&c.kubeconfig).await {
            Ok(client) => {
                let req = http::Request::get("/readyz").body(Vec::new())?;
                matches!(tokio::time::timeout(Duration::from_secs(3), client.request_text(req)).await, Ok(Ok(ref b)) if b.trim() == "ok")
            }
            Err(_) => false,
        };
        println!(
            "  {:<11} {} readyz={}  KUBECONFIG={}",
            c.name,
            c.server,
            if ready { "ok" } else { "FAIL" },
            c.kubeconfig.display()
        );
    }
    if !owner_alive {
        std::process::exit(3);
    }
    Ok(())
}

async fn serve(dir: &Path) -> anyhow::Result<()> {
    let mut spec = FederationSpec::demo("demo");
    spec.run_dir = Some(dir.to_owned());
    spec.keep_run_dir = true;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let fed = tokio::select! {
        fed = Federation::start(spec) => fed?,
        _ = term.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    tracing::info!(seconds = fed.ready_after().as_secs_f64(), "demo federation ready");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
    fed.down();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The operator installs its own logging, as its binary does.
    if !matches!(cli.command, Command::Operator { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,kube_client=off".into()),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = cli.run_dir.unwrap_or_else(|| run_root().join("demo"));
    match cli.command {
        Command::Up => up(&dir),
        Command::Down => down(&dir),
        Command::Status => status(&dir).await,
        Command::Serve => serve(&dir).await,
        Command::Chain {
            tenants,
            payout_wallets,
        } => chaindemo::run(&dir.join("chain"), &tenants, &payout_wallets).await,
        Command::Operator { args } => operator_cmd::run(args).await,
    }
}
