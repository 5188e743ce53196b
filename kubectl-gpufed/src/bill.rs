//! Pure: a job's usage and settlement (`bill`), from its status.
//!
//! This report states what the operator recorded and claims no on-chain verification;
//! `bill --verify` checks each settled record's Merkle proof against its settlement
//! transaction instead (see [`crate::verify`]).

use gpufed_api::ComputeJob;
use gpufed_api::formats::{format_decimal, parse_decimal};
use serde::Serialize;

use crate::jobs::{job_ref, phase};
use crate::output::{NONE, Table, thousands};

/// Usage and settlement of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BillReport {
    /// `namespace/name`.
    pub job: String,
    /// Display phase.
    pub phase: String,
    /// GPU-seconds metered over all attempts (`status.usage`).
    pub gpu_seconds: u64,
    /// Their cost (decimal, settlement token).
    pub cost: String,
    /// Usage records written to the journal.
    pub records: u64,
    /// Records settled on chain.
    pub settled_records: u64,
    /// Amount settled (decimal).
    pub settled_amount: String,
    /// Cost not settled yet (decimal).
    pub unsettled_amount: String,
    /// Settlement transaction signatures (most recent 16).
    pub signatures: Vec<String>,
    /// Per attempt: provider, outcome, GPU-seconds, price, cost.
    pub attempts: Vec<AttemptBill>,
    /// The oldest attempts, summed up (`status.archived`): included in the usage above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived: Option<gpufed_api::job_status::ArchivedAttempts>,
}

/// One attempt's part of the bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptBill {
    /// Attempt number.
    pub attempt: u32,
    /// Provider that ran it.
    pub provider: String,
    /// How it ended, or `Live` for the current attempt.
    pub outcome: String,
    /// GPU-seconds billed (for the live attempt: metered so far).
    pub gpu_seconds: u64,
    /// Price per GPU-hour fixed at placement (decimal).
    pub price_per_gpu_hour: String,
    /// GPU-seconds × price (decimal).
    pub cost: String,
    /// When it ended (RFC 3339); absent while live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

/// Cost in base units of `gpu_seconds` at `price` per GPU-hour (the operator's formula).
pub fn cost_micros(gpu_seconds: u64, price: &str) -> u64 {
    let price = parse_decimal(price).unwrap_or(0);
    u64::try_from(u128::from(gpu_seconds) * u128::from(price) / 3600).unwrap_or(u64::MAX)
}

/// The bill of `job`.
pub fn bill(job: &ComputeJob) -> BillReport {
    let st = job.status.clone().unwrap_or_default();
    let usage = st.usage.clone().unwrap_or_default();
    let billing = st.billing.clone().unwrap_or_default();
    let mut attempts: Vec<AttemptBill> = st
        .attempts
        .iter()
        .map(|a| AttemptBill {
            attempt: a.attempt,
            provider: a.provider.clone(),
            outcome: format!("{:?}", a.outcome),
            gpu_seconds: a.gpu_seconds,
            price_per_gpu_hour: a.price_per_gpu_hour.clone(),
            cost: format_decimal(cost_micros(a.gpu_seconds, &a.price_per_gpu_hour)),
            end_time: Some(a.end_time.clone()),
        })
        .collect();
    // A finished job keeps its last placement, which is then also an attempt record.
    let live = st
        .placement
        .as_ref()
        .filter(|p| !st.attempts.iter().any(|a| a.attempt == p.attempt));
    if let Some(p) = live {
        // The live attempt's metered seconds are what usage holds beyond finished attempts.
        let archived = st.archived.as_ref().map_or(0, |a| a.gpu_seconds);
        // Saturating, as the operator's own sums: a corrupt or capped status is no panic.
        let finished = st
            .attempts
            .iter()
            .fold(archived, |sum, a| sum.saturating_add(a.gpu_seconds));
        let live = usage.gpu_seconds.saturating_sub(finished);
        attempts.push(AttemptBill {
            attempt: p.attempt,
            provider: p.provider.clone(),
            outcome: "Live".into(),
            gpu_seconds: live,
            price_per_gpu_hour: p.price_per_gpu_hour.clone(),
            cost: format_decimal(cost_micros(live, &p.price_per_gpu_hour)),
            end_time: None,
        });
    }
    let cost = if usage.cost.is_empty() {
        "0".to_owned()
    } else {
        usage.cost.clone()
    };
    let settled = parse_decimal(&billing.settled_amount).unwrap_or(0);
    let unsettled = parse_decimal(&cost).unwrap_or(0).saturating_sub(settled);
    BillReport {
        job: job_ref(job),
        phase: phase(job),
        gpu_seconds: usage.gpu_seconds,
        cost,
        records: billing.records,
        settled_records: billing.settled_records,
        settled_amount: format_decimal(settled),
        unsettled_amount: format_decimal(unsettled),
        signatures: billing.signatures,
        attempts,
        archived: st.archived.clone(),
    }
}

/// GPU-hours with two decimals, from GPU-seconds.
pub(crate) fn gpu_hours(seconds: u64) -> String {
    let centi = (u128::from(seconds) * 100 + 1800) / 3600;
    format!("{}.{:02}", centi / 100, centi % 100)
}

/// The report for humans.
pub fn render(b: &BillReport) -> String {
    let mut out = format!("computejob {} ({})\n", b.job, b.phase);
    out.push_str(&format!(
        "Usage:       {} GPU-seconds ({} GPU-hours), cost {}\n",
        thousands(b.gpu_seconds),
        gpu_hours(b.gpu_seconds),
        b.cost
    ));
    out.push_str(&format!(
        "Settlement:  {} of {} usage records settled on chain, {} settled, {} not yet settled\n",
        b.settled_records, b.records, b.settled_amount, b.unsettled_amount
    ));
    if b.signatures.is_empty() {
        out.push_str("Signatures:  none yet\n");
    } else {
        for (i, s) in b.signatures.iter().enumerate() {
            let label = if i == 0 { "Signatures:" } else { "" };
            out.push_str(&format!("{label:<13}{s}\n"));
        }
    }
    out.push('\n');
    if b.attempts.is_empty() {
        out.push_str("No attempts yet.\n");
        return out;
    }
    let mut t = Table::new(&[
        "ATTEMPT",
        "PROVIDER",
        "OUTCOME",
        "GPU-SECONDS",
        "PRICE/GPU-H",
        "COST",
        "ENDED",
    ]);
    for a in &b.attempts {
        t.push(vec![
            a.attempt.to_string(),
            a.provider.clone(),
            a.outcome.clone(),
            thousands(a.gpu_seconds),
            a.price_per_gpu_hour.clone(),
            a.cost.clone(),
            a.end_time.clone().unwrap_or_else(|| NONE.to_owned()),
        ]);
    }
    out.push_str(&t.render());
    if let Some(a) = &b.archived {
        out.push_str(&format!(
            "\nand {} older attempts (on {}): {} GPU-seconds, cost {}\n",
            a.attempts,
            a.providers.join(", "),
            thousands(a.gpu_seconds),
            a.cost
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{SIG, job};

    fn failed_over() -> ComputeJob {
        crate::fixtures::failed_over("train", "team")
    }

    #[test]
    fn attempts_add_up_to_the_usage() {
        let b = bill(&failed_over());
        assert_eq!((b.gpu_seconds, b.cost.as_str()), (10_800, "6.8"));
        assert_eq!(b.attempts.len(), 2);
        assert_eq!(b.attempts[0].cost, "5");
        assert_eq!(b.attempts[0].outcome, "ProviderLost");
        assert_eq!(
            (b.attempts[1].outcome.as_str(), b.attempts[1].gpu_seconds),
            ("Live", 3600)
        );
        assert_eq!(b.attempts[1].cost, "1.8");
        assert_eq!(b.unsettled_amount, "1.8");
        assert_eq!((b.records, b.settled_records), (4, 3));
        let text = render(&b);
        assert!(
            text.contains("Usage:       10,800 GPU-seconds (3.00 GPU-hours), cost 6.8"),
            "{text}"
        );
        assert!(
            text.contains("3 of 4 usage records settled on chain, 5 settled, 1.8 not yet settled"),
            "{text}"
        );
        assert!(text.contains(&format!("Signatures:  {SIG}")), "{text}");
        assert!(text.contains("2         provider-b   Live"), "{text}");
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["unsettledAmount"], "1.8");
        assert!(json["attempts"][1].get("endTime").is_none());
    }

    #[test]
    fn archived_attempts_are_not_counted_as_live_and_are_shown() {
        let mut j = failed_over();
        if let Some(st) = j.status.as_mut() {
            st.archived = Some(gpufed_api::job_status::ArchivedAttempts {
                attempts: 30,
                gpu_seconds: 1000,
                cost: "0.5".into(),
                providers: vec!["provider-c".into()],
            });
            st.usage = Some(gpufed_api::job_status::Usage {
                gpu_seconds: 11_800,
                cost: "7.3".into(),
            });
        }
        let b = bill(&j);
        assert_eq!(
            b.attempts[1].gpu_seconds, 3600,
            "the live attempt is usage minus all ended ones"
        );
        let text = render(&b);
        assert!(
            text.contains("and 30 older attempts (on provider-c): 1,000 GPU-seconds, cost 0.5"),
            "{text}"
        );
        assert_eq!(serde_json::to_value(&b).unwrap()["archived"]["attempts"], 30);
    }

    #[test]
    fn a_finished_job_bills_its_last_attempt_once() {
        // The operator leaves the placement of a succeeded job in status.
        let done = job(
            "done",
            "team",
            Some(serde_json::json!({
                "phase": "Succeeded",
                "attempts": [{"attempt": 1, "provider": "provider-a", "outcome": "Succeeded",
                              "gpuSeconds": 160, "pricePerGpuHour": "1.89", "endTime": "2026-01-01T01:00:00Z"}],
                "placement": {"attempt": 1, "provider": "provider-a", "gpus": 8, "pricePerGpuHour": "1.89",
                              "workers": [], "placedTime": "2026-01-01T00:55:00Z"},
                "usage": {"gpuSeconds": 160, "cost": "0.084"},
            })),
        );
        let b = bill(&done);
        assert_eq!(b.attempts.len(), 1, "{b:?}");
        assert_eq!(
            (b.attempts[0].outcome.as_str(), b.attempts[0].cost.as_str()),
            ("Succeeded", "0.084")
        );
    }

    #[test]
    fn a_fresh_job_has_an_empty_bill() {
        let b = bill(&job("new", "team", None));
        assert_eq!(
            (b.gpu_seconds, b.cost.as_str(), b.unsettled_amount.as_str()),
            (0, "0", "0")
        );
        let text = render(&b);
        assert!(
            text.contains("Signatures:  none yet") && text.contains("No attempts yet."),
            "{text}"
        );
        assert_eq!(gpu_hours(5400), "1.50");
        assert_eq!(cost_micros(3600, "bogus"), 0);
    }
}
