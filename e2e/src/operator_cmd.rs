//! `gpufed-e2e operator [ARGS...]`: the real hub operator, run exactly as the
//! `gpufed-operator` binary runs it (same flags, logging, SIGTERM/Ctrl-C handling), with the
//! hub from `$KUBECONFIG`. The fault tests start it as a separate OS process so that they
//! can SIGKILL and SIGSTOP it (`e2e/tests/operator_process.rs`).

use clap::Parser;

/// Parses `args` (without the program name) as the operator's flags and runs it until
/// SIGTERM or Ctrl-C.
pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let args =
        gpufed_operator::cli::Args::parse_from(std::iter::once("gpufed-operator".to_owned()).chain(args));
    gpufed_operator::telemetry::init(args.log_json);
    gpufed_operator::run(args).await
}
