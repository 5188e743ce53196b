//! `bill --verify` for humans: the report as a table, its summary and its transactions.

use std::collections::BTreeMap;

use super::{RecordRow, Verdict, VerifyReport};
use crate::output::{NONE, Table, human_duration, parse_time, thousands};

/// Hex digits of a record id shown in the table.
pub const ID_PREFIX: usize = 12;
/// Characters of a signature shown in the table (the summary lists them whole).
const SIGNATURE_PREFIX: usize = 12;
/// Columns of the table.
const HEADERS: [&str; 8] = [
    "RECORD",
    "ATTEMPT",
    "INTERVAL",
    "GPU-SECONDS",
    "AMOUNT",
    "BATCH",
    "SIGNATURE",
    "VERDICT",
];

pub(super) fn abbreviate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn interval(row: &RecordRow) -> String {
    match (parse_time(&row.start), parse_time(&row.end)) {
        (Some(start), Some(end)) => format!("{} +{}", row.start, human_duration(end - start)),
        _ => format!("{} - {}", row.start, row.end),
    }
}

/// The report for humans.
pub fn render(r: &VerifyReport) -> String {
    let s = &r.summary;
    let mut out = format!(
        "computejob {} (uid {}): {} usage records in the settlement journal\n\n",
        r.job, r.uid, s.records
    );
    if r.records.is_empty() {
        out.push_str("No usage records of this job in the journal yet.\n");
    } else {
        let mut t = Table::new(&HEADERS);
        for row in &r.records {
            let verdict = match (row.verdict, row.slot, &row.detail) {
                (Verdict::Verified, Some(slot), _) => format!("verified (slot {slot})"),
                (v, _, Some(d)) => format!("{}: {d}", v.text()),
                (v, _, None) => v.text().to_owned(),
            };
            t.push(vec![
                abbreviate(&row.id, ID_PREFIX),
                row.attempt.to_string(),
                interval(row),
                thousands(row.gpu_seconds),
                row.amount.clone(),
                row.batch.map_or_else(|| NONE.to_owned(), |b| b.to_string()),
                row.signature
                    .as_deref()
                    .map_or_else(|| NONE.to_owned(), |sig| abbreviate(sig, SIGNATURE_PREFIX)),
                verdict,
            ]);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    out.push_str(&format!(
        "Summary:       {} verified, {} pending, {} in flight, {} failed verification\n",
        s.verified, s.pending, s.in_flight, s.failed
    ));
    if s.pruned > 0 {
        out.push_str(&format!(
            "Not checked:   {} settled records pruned from the journal\n",
            s.pruned
        ));
    }
    let mut batches: BTreeMap<u64, (&str, &str)> = BTreeMap::new();
    for row in &r.records {
        if let (Some(b), Some(sig)) = (row.batch, row.signature.as_deref()) {
            let state = (row.verdict == Verdict::InFlight).then_some(" (in flight)");
            batches.insert(b, (sig, state.unwrap_or_default()));
        }
    }
    for (i, (b, (sig, state))) in batches.iter().enumerate() {
        let label = if i == 0 { "Transactions:" } else { "" };
        out.push_str(&format!("{label:<15}batch {b}: {sig}{state}\n"));
    }
    out
}
