//! `kubectl-gpufed`: on `PATH`, kubectl runs it as `kubectl gpufed ...`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kubectl_gpufed::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Client logs only on request (RUST_LOG=debug), on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kubectl_gpufed::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
