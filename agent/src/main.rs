//! `gpufed-agent`: runs in a pull-mode provider's cluster. Everything lives in the
//! library; this parses flags, sets up logging and runs until SIGTERM.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = gpufed_agent::Args::parse();
    gpufed_operator::telemetry::init(args.log_json);
    gpufed_agent::run(args).await
}
