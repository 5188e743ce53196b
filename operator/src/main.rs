//! `gpufed-operator`: the hub operator. Everything lives in the library; this only
//! parses flags, sets up logging and runs until SIGTERM.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = gpufed_operator::cli::Args::parse();
    gpufed_operator::telemetry::init(args.log_json);
    gpufed_operator::run(args).await
}
