//! Simulator output: a summary table, CSV files and an SVG plot (written by hand).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use super::{Outcome, Params};
use crate::snapshot::MICROS_PER_UNIT;

/// Job-size classes for wait statistics, by GPUs of the gang.
const CLASSES: [(&str, u32, u32); 4] = [("1", 1, 1), ("2-4", 2, 4), ("8", 5, 8), ("16-64", 9, u32::MAX)];

/// One row of the summary: a policy and a size class.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Policy name.
    pub policy: &'static str,
    /// Size class.
    pub class: &'static str,
    /// Jobs of the class that started.
    pub started: usize,
    /// Wait percentiles in minutes: p50, p90, p99.
    pub wait_min: [f64; 3],
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 60.0
}

/// Wait percentiles per policy and size class.
pub fn summarize(outcomes: &[Outcome]) -> Vec<Summary> {
    let mut rows = Vec::new();
    for o in outcomes {
        for (class, lo, hi) in CLASSES {
            let mut waits: Vec<u64> = o
                .started
                .iter()
                .filter(|s| s.gpus >= lo && s.gpus <= hi)
                .map(|s| s.wait)
                .collect();
            waits.sort_unstable();
            rows.push(Summary {
                policy: o.policy.name(),
                class,
                started: waits.len(),
                wait_min: [
                    percentile(&waits, 0.5),
                    percentile(&waits, 0.9),
                    percentile(&waits, 0.99),
                ],
            });
        }
    }
    rows
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// Per-policy totals: (name, mean utilization, mean fragmentation, cost units, mean
/// price per GPU-hour, decisions/s, started, waiting at end, failovers).
fn totals(o: &Outcome) -> (f64, f64, f64, f64, f64) {
    let util = mean(o.samples.iter().map(|s| s.utilization));
    let frag = mean(o.samples.iter().map(|s| s.fragmentation));
    let cost = o.cost as f64 / MICROS_PER_UNIT as f64;
    let gpu_hours = o.gpu_seconds as f64 / 3600.0;
    let price = if gpu_hours > 0.0 { cost / gpu_hours } else { 0.0 };
    let rate = o.decisions as f64 / o.policy_time.as_secs_f64().max(1e-9);
    (util, frag, cost, price, rate)
}

/// The human-readable comparison table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:>6} {:>6} {:>12} {:>8} {:>12} {:>8} {:>8} {:>9}",
        "policy", "util", "frag", "cost", "$/GPUh", "decisions/s", "started", "waiting", "failovers"
    );
    for o in outcomes {
        let (util, frag, cost, price, rate) = totals(o);
        let _ = writeln!(
            s,
            "{:<10} {:>5.1}% {:>5.1}% {:>12.0} {:>8.3} {:>12.0} {:>8} {:>8} {:>9}",
            o.policy.name(),
            util * 100.0,
            frag * 100.0,
            cost,
            price,
            rate,
            o.started.len(),
            o.waiting_at_end,
            o.failovers
        );
    }
    let _ = writeln!(s, "\nqueue wait (minutes) by job size (GPUs):");
    let _ = writeln!(
        s,
        "{:<10} {:>6} {:>8} {:>9} {:>9} {:>9}",
        "policy", "size", "started", "p50", "p90", "p99"
    );
    for r in summarize(outcomes) {
        let _ = writeln!(
            s,
            "{:<10} {:>6} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            r.policy, r.class, r.started, r.wait_min[0], r.wait_min[1], r.wait_min[2]
        );
    }
    s
}

const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];

/// An SVG with utilization over time (top) and p90 wait by size (bottom).
pub fn svg(params: &Params, outcomes: &[Outcome]) -> String {
    let (w, h, left, top, pw, ph) = (900.0, 640.0, 70.0, 40.0, 780.0, 240.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14">GPU utilization over time (seed {}, {} providers, {} nodes)</text>"#,
        params.seed, params.providers, params.nodes
    );
    let hours = params.hours.max(1) as f64;
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="gray"/>"#
    );
    for i in 0..=4 {
        let y = top + ph - ph * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}%</text>"#,
            left - 6.0,
            y + 4.0,
            i * 25
        );
        let _ = writeln!(
            s,
            r#"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="gainsboro"/>"#,
            left + pw
        );
    }
    for i in 0..=6 {
        let x = left + pw * f64::from(i) / 6.0;
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{:.0} h</text>"#,
            top + ph + 16.0,
            hours * f64::from(i) / 6.0
        );
    }
    for (i, o) in outcomes.iter().enumerate() {
        let pts: Vec<String> = o
            .samples
            .iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    left + pw * p.hours / hours,
                    top + ph - ph * p.utilization
                )
            })
            .collect();
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = top + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            left + 10.0,
            ly - 4.0,
            left + 28.0,
            ly,
            o.policy.name()
        );
    }
    // Bottom: grouped bars of p90 wait per size class.
    let rows = summarize(outcomes);
    let btop = top + ph + 70.0;
    let max = rows.iter().map(|r| r.wait_min[1]).fold(1.0, f64::max);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}" font-size="14">p90 queue wait (minutes) by job size (GPUs)</text>"#,
        btop - 12.0
    );
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{btop}" width="{pw}" height="{ph}" fill="none" stroke="gray"/>"#
    );
    let group_w = pw / CLASSES.len() as f64;
    let bar_w = group_w / (outcomes.len() as f64 + 1.0);
    for (ci, (class, _, _)) in CLASSES.iter().enumerate() {
        let gx = left + group_w * ci as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{class}</text>"#,
            gx + group_w / 2.0,
            btop + ph + 16.0
        );
        for (pi, o) in outcomes.iter().enumerate() {
            let Some(r) = rows
                .iter()
                .find(|r| r.policy == o.policy.name() && r.class == *class)
            else {
                continue;
            };
            let bh = ph * r.wait_min[1] / max;
            let x = gx + bar_w * (pi as f64 + 0.5);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"/>"#,
                btop + ph - bh,
                bar_w * 0.9,
                COLORS[pi % COLORS.len()]
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{:.0}</text>"#,
                x + bar_w * 0.45,
                btop + ph - bh - 3.0,
                r.wait_min[1]
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `timeseries.csv`, `summary.csv` and `report.svg` into `dir`; returns the table.
pub fn write_outputs(dir: &Path, params: &Params, outcomes: &[Outcome]) -> io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let mut ts = String::from("policy,hours,utilization,fragmentation,queue\n");
    for o in outcomes {
        for p in &o.samples {
            let _ = writeln!(
                ts,
                "{},{:.3},{:.4},{:.4},{}",
                o.policy.name(),
                p.hours,
                p.utilization,
                p.fragmentation,
                p.queue
            );
        }
    }
    std::fs::write(dir.join("timeseries.csv"), ts)?;
    let mut sum = String::from(
        "policy,size,started,wait_p50_min,wait_p90_min,wait_p99_min,mean_utilization,mean_fragmentation,cost,price_per_gpu_hour,decisions_per_s,waiting_at_end,failovers\n",
    );
    let rows = summarize(outcomes);
    for o in outcomes {
        let (util, frag, cost, price, rate) = totals(o);
        for r in rows.iter().filter(|r| r.policy == o.policy.name()) {
            let _ = writeln!(
                sum,
                "{},{},{},{:.2},{:.2},{:.2},{util:.4},{frag:.4},{cost:.2},{price:.4},{rate:.0},{},{}",
                r.policy,
                r.class,
                r.started,
                r.wait_min[0],
                r.wait_min[1],
                r.wait_min[2],
                o.waiting_at_end,
                o.failovers
            );
        }
    }
    std::fs::write(dir.join("summary.csv"), sum)?;
    std::fs::write(dir.join("report.svg"), svg(params, outcomes))?;
    Ok(table(outcomes))
}
