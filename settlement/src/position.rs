//! Metering positions: how far each attempt has been metered into the journal.
//!
//! Records are pruned once settled, but metering must continue an attempt's cumulative
//! sequence (the rounding rule of [`crate::amount`] works on cumulative GPU-seconds). So
//! the journal keeps, per (job uid, attempt, provider), the end of the newest record and the
//! cumulative GPU-seconds up to it. The operator resumes an [`AttemptMeter`] from it after
//! a restart, and forgets a job's positions when the job is deleted.

use serde::{Deserialize, Serialize};

use crate::amount::AttemptMeter;
use crate::hash::{Encoder, Hash32};
use crate::journal::Journal;
use crate::record::{JobRef, UsageRecord};

/// Where metering of one attempt stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    /// The job's uid (to forget positions of deleted jobs).
    pub job_uid: String,
    /// End of the newest metered interval, unix seconds.
    pub metered_until: u64,
    /// Cumulative GPU-seconds metered for the attempt.
    pub cumulative_gpu_seconds: u64,
    /// Records journaled for the attempt.
    #[serde(default)]
    pub records: u64,
    /// Their total amount, base units, capped at `u64::MAX` ([`AMOUNT_CAP`]): each record's
    /// amount fits u64, an attempt's total may not (a long attempt in a mint of many
    /// decimals). Only reported (`status.billing`), never used to meter or pay, and stored
    /// as u64 in the journal, so it saturates rather than changing the stored format.
    #[serde(default)]
    pub amount: u64,
}

/// The value at which the journal's per-attempt and per-job amount totals
/// ([`Position::amount`], [`SettledTotals::amount`], [`JobBilling::amount`]) stop: they
/// add with saturation, so a total shown as `u64::MAX` base units means *at least* that
/// ([`SettledTotals::capped`], [`JobBilling::capped`]). Records, batches and transfers are
/// exact: each fits u64 by construction (`AttemptMeter::record_spread`, `plan_batch`).
pub const AMOUNT_CAP: u64 = u64::MAX;

/// What has settled for one job (kept when records are pruned).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettledTotals {
    /// Records settled.
    pub records: u64,
    /// Amount settled, base units, capped at [`AMOUNT_CAP`] (stored as u64: a job may
    /// settle more over its attempts than a u64 holds; shown then as the cap).
    pub amount: u64,
    /// Signatures of the settling transactions, newest last (at most 16).
    #[serde(default)]
    pub signatures: Vec<String>,
}

/// A job's billing as the journal knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobBilling {
    /// Records journaled.
    pub records: u64,
    /// Amount journaled, base units, capped at [`AMOUNT_CAP`].
    pub amount: u64,
    /// GPU-seconds journaled (all attempts).
    pub gpu_seconds: u64,
    /// What has settled.
    pub settled: SettledTotals,
}

impl SettledTotals {
    /// Whether [`Self::amount`] reached [`AMOUNT_CAP`]: the job settled at least that much.
    pub const fn capped(&self) -> bool {
        self.amount == AMOUNT_CAP
    }
}

impl JobBilling {
    /// Whether the journaled or the settled amount reached [`AMOUNT_CAP`] (at least that).
    pub const fn capped(&self) -> bool {
        self.amount == AMOUNT_CAP || self.settled.capped()
    }
}

/// Signatures kept per job.
pub const MAX_JOB_SIGNATURES: usize = 16;

/// Key of an attempt.
pub fn attempt_key(job_uid: &str, attempt: u32, provider: &str) -> Hash32 {
    let mut e = Encoder::new("gpufed:attempt:v1");
    e.str(job_uid).u32(attempt).str(provider);
    e.digest()
}

impl Journal {
    pub(crate) fn advance_position(&mut self, key: Hash32, r: &UsageRecord) {
        let p = self.data.positions.entry(key).or_insert_with(|| Position {
            job_uid: r.job.uid.clone(),
            metered_until: 0,
            cumulative_gpu_seconds: 0,
            records: 0,
            amount: 0,
        });
        p.records += 1;
        // Saturates at AMOUNT_CAP: reported only, stored as u64 (see `Position::amount`).
        p.amount = p.amount.saturating_add(r.amount);
        p.metered_until = p.metered_until.max(r.end);
        p.cumulative_gpu_seconds = p.cumulative_gpu_seconds.max(r.cumulative_gpu_seconds);
    }

    /// Credits a batch that just settled to its jobs' totals.
    pub(crate) fn credit_settled(&mut self, batch: u64) {
        let Some(b) = self.data.batches.get(&batch) else {
            return;
        };
        let sig = b.tx.signature().map(str::to_string);
        for id in &b.records {
            let Some(e) = self.data.records.get(id) else {
                continue;
            };
            let t = self.data.settled.entry(e.record.job.uid.clone()).or_default();
            t.records += 1;
            // Saturates at AMOUNT_CAP (stored as u64; the transfers themselves are exact).
            t.amount = t.amount.saturating_add(e.record.amount);
            if let Some(sig) = &sig
                && t.signatures.last() != Some(sig)
                && !t.signatures.contains(sig)
            {
                t.signatures.push(sig.clone());
                if t.signatures.len() > MAX_JOB_SIGNATURES {
                    t.signatures.remove(0);
                }
            }
        }
    }

    /// A job's billing: journaled and settled; amounts capped at [`AMOUNT_CAP`].
    pub fn billing(&self, job_uid: &str) -> JobBilling {
        let mut out = JobBilling {
            settled: self.data.settled.get(job_uid).cloned().unwrap_or_default(),
            ..Default::default()
        };
        for p in self.data.positions.values().filter(|p| p.job_uid == job_uid) {
            out.records += p.records;
            out.amount = out.amount.saturating_add(p.amount);
            out.gpu_seconds = out.gpu_seconds.saturating_add(p.cumulative_gpu_seconds);
        }
        out
    }

    /// How far an attempt has been metered.
    pub fn position(&self, job_uid: &str, attempt: u32, provider: &str) -> Option<&Position> {
        self.data.positions.get(&attempt_key(job_uid, attempt, provider))
    }

    /// A meter for an attempt that continues where the journal stands.
    pub fn meter(&self, job: JobRef, attempt: u32, provider: &str, tenant: &str, price: u64) -> AttemptMeter {
        let pos = self.position(&job.uid, attempt, provider).cloned();
        let meter = AttemptMeter::new(job, attempt, provider.to_string(), tenant.to_string(), price);
        match pos {
            Some(p) => meter.at(p.cumulative_gpu_seconds, p.metered_until),
            None => meter,
        }
    }

    /// Forgets the positions and watermarks of a deleted job. Its unsettled records stay
    /// and settle normally; only re-metering of the job becomes impossible.
    pub fn forget_job(&mut self, job_uid: &str) -> usize {
        let keys: Vec<Hash32> = self
            .data
            .positions
            .iter()
            .filter(|(_, p)| p.job_uid == job_uid)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.data.positions.remove(k);
            self.data.watermarks.remove(k);
        }
        self.data.settled.remove(job_uid);
        keys.len()
    }

    /// Uids of jobs with metering positions.
    pub fn metered_jobs(&self) -> std::collections::BTreeSet<&str> {
        self.data.positions.values().map(|p| p.job_uid.as_str()).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn job() -> JobRef {
        JobRef {
            namespace: "ns".into(),
            name: "j".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn metering_resumes_after_pruning_with_exact_totals() {
        let mut j = Journal::new();
        let mut m = j.meter(job(), 1, "p", "ns", 1_000_000);
        for s in 0..3u64 {
            j.append(m.record(100 + s, 101 + s, 1).unwrap()).unwrap();
        }
        // Pretend the records settled and were pruned: a fresh meter must continue the
        // cumulative sequence, not restart at zero.
        j.data.records.clear();
        j.reindex();
        let mut m2 = j.meter(job(), 1, "p", "ns", 1_000_000);
        assert_eq!(m2.cumulative_gpu_seconds(), 3);
        assert_eq!(m2.metered_until(), Some(103));
        let r = m2.record(103, 104, 1).unwrap();
        // floor(4/3600 tokens) − floor(3/3600 tokens) in micro-units: 1111 − 833.
        assert_eq!(r.amount, 1111 - 833);
        assert!(
            m2.record(100, 101, 1).is_err(),
            "overlap with metered history is refused"
        );
    }

    #[test]
    fn forget_job_drops_only_that_jobs_positions() {
        let mut j = Journal::new();
        let mut a = j.meter(job(), 1, "p", "ns", 1);
        j.append(a.record(0, 10, 1).unwrap()).unwrap();
        let other = JobRef {
            uid: "u-2".into(),
            ..job()
        };
        let mut b = j.meter(other, 1, "p", "ns", 1);
        j.append(b.record(0, 10, 1).unwrap()).unwrap();
        assert_eq!(j.forget_job("u-1"), 1);
        assert!(j.position("u-1", 1, "p").is_none());
        assert!(j.position("u-2", 1, "p").is_some());
        assert_eq!(j.metered_jobs().len(), 1);
    }

    #[test]
    fn amount_totals_beyond_u64_saturate_and_say_so() {
        // 18 tokens per GPU-hour in a mint of 18 decimals: each hour's record fits u64,
        // two of them do not.
        let price = 18_000_000_000_000_000_000u64;
        let mut j = Journal::new();
        let mut m = j.meter(job(), 1, "p", "ns", price);
        j.append(m.record(0, 3600, 1).unwrap()).unwrap();
        let b = j.billing("u-1");
        assert_eq!(b.amount, price);
        assert!(!b.capped());
        j.append(m.record(3600, 7200, 1).unwrap()).unwrap();
        let b = j.billing("u-1");
        assert_eq!((b.records, b.amount), (2, AMOUNT_CAP));
        assert!(b.capped() && !b.settled.capped());
        let settled = SettledTotals {
            amount: AMOUNT_CAP,
            ..Default::default()
        };
        assert!(settled.capped());
    }
}
