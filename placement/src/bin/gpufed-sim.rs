//! `gpufed-sim`: replays a seeded synthetic trace through the placement engine and the
//! naive policies, prints a comparison and writes CSV files and an SVG plot.
//!
//! ```text
//! gpufed-sim [--seed N] [--providers N] [--nodes N] [--hours N] [--tick SECONDS]
//!            [--load 0.9] [--namespaces N] [--mtbf HOURS] [--downtime HOURS]
//!            [--policies ours,first-fit,spread] [--out DIR]
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use gpufed_placement::sim::{Params, Policy, Trace, simulate, write_outputs};

fn parse(args: &[String]) -> Result<(Params, Vec<Policy>, PathBuf), String> {
    let mut p = Params::default();
    let mut policies = vec![Policy::Ours, Policy::FirstFit, Policy::Spread];
    let mut out = PathBuf::from("sim-out");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--seed" => p.seed = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--providers" => p.providers = num(value)? as usize,
            "--nodes" => p.nodes = num(value)? as usize,
            "--hours" => p.hours = num(value)? as u64,
            "--tick" => p.tick = num(value)? as u64,
            "--load" => p.load = num(value)?,
            "--namespaces" => p.namespaces = num(value)? as usize,
            "--mtbf" => p.mtbf_hours = num(value)?,
            "--downtime" => p.downtime_hours = num(value)?,
            "--out" => out = PathBuf::from(value),
            "--policies" => {
                policies = value
                    .split(',')
                    .map(|s| match s {
                        "ours" => Ok(Policy::Ours),
                        "first-fit" => Ok(Policy::FirstFit),
                        "spread" => Ok(Policy::Spread),
                        other => Err(format!("unknown policy {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if p.providers == 0 || p.nodes == 0 || p.hours == 0 || p.tick == 0 {
        return Err("providers, nodes, hours and tick must be positive".into());
    }
    Ok((p, policies, out))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (params, policies, out) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{}",
                include_str!("gpufed-sim.rs")
                    .lines()
                    .skip(4)
                    .take(3)
                    .map(|l| l.trim_start_matches("//! "))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let trace = Trace::new(&params);
    eprintln!(
        "trace: seed {}, {} providers, {} GPUs, {} jobs over {} h",
        params.seed,
        params.providers,
        trace.gpus(),
        trace.jobs(),
        params.hours
    );
    let mut outcomes = Vec::new();
    for policy in policies {
        let mut last = -1i64;
        let outcome = simulate(&trace, &params, policy, |f| {
            let pct = (f * 100.0) as i64;
            if pct != last {
                last = pct;
                let bar = "#".repeat(usize::try_from(pct / 4).unwrap_or(0));
                eprint!("\r{:<10} [{bar:<25}] {pct:>3}%", policy.name());
                let _ = std::io::stderr().flush();
            }
        });
        eprintln!("\r{:<10} [{}] done", policy.name(), "#".repeat(25));
        outcomes.push(outcome);
    }
    match write_outputs(&out, &params, &outcomes) {
        Ok(table) => {
            println!("{table}");
            println!("wrote {}/timeseries.csv, summary.csv, report.svg", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: writing {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
