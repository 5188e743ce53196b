//! Usage records: what metering appends to the journal, with deterministic ids and a
//! canonical byte encoding (used for Merkle leaves).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::amount::amount_for_delta;
use crate::hash::{Encoder, Hash32};

/// Deterministic record id: SHA-256 over (job uid, attempt, interval start, provider).
pub type RecordId = Hash32;

/// Longest namespace / tenant (a DNS label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest job or provider name (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest job uid (Kubernetes uids are 36 characters).
pub const MAX_UID_LEN: usize = 64;
/// Upper bound of one record's JSON encoding given the field limits above (tested).
pub const MAX_RECORD_JSON_BYTES: usize = 1280;

/// Domain tag of record ids.
const ID_DOMAIN: &str = "gpufed:record-id:v1";
/// Domain tag of the canonical record encoding.
const RECORD_DOMAIN: &str = "gpufed:record:v1";

/// The ComputeJob a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobRef {
    /// Namespace of the ComputeJob.
    pub namespace: String,
    /// Name of the ComputeJob.
    pub name: String,
    /// metadata.uid of the ComputeJob (distinguishes re-created jobs of the same name).
    pub uid: String,
}

/// One metered interval of one attempt of one job on one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// Deterministic id, see [`UsageRecord::derive_id`].
    pub id: RecordId,
    /// The job.
    pub job: JobRef,
    /// Attempt number of the job (fencing token).
    pub attempt: u32,
    /// GpuProvider name (cluster-scoped).
    pub provider: String,
    /// Tenant: the namespace whose escrow pays.
    pub tenant: String,
    /// Interval start, unix seconds (inclusive).
    pub start: u64,
    /// Interval end, unix seconds (exclusive).
    pub end: u64,
    /// GPUs allocated during the interval.
    pub gpus: u32,
    /// GPU-seconds in this interval (≤ gpus × (end − start)).
    pub gpu_seconds: u64,
    /// GPU-seconds of this attempt up to and including this record.
    pub cumulative_gpu_seconds: u64,
    /// Price per GPU-hour in base units (micro-units) of the token; fixed per attempt.
    pub price_per_gpu_hour: u64,
    /// Amount in base units: the delta rule of [`crate::amount`].
    pub amount: u64,
}

/// Why a record is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// A string field is empty or too long.
    #[error("field {field} must be 1..={max} bytes, got {len}")]
    FieldLength {
        /// Field name.
        field: &'static str,
        /// Maximum length.
        max: usize,
        /// Actual length.
        len: usize,
    },
    /// end ≤ start.
    #[error("empty or inverted interval [{start}, {end})")]
    EmptyInterval {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// Zero GPUs.
    #[error("gpus must be at least 1")]
    NoGpus,
    /// More GPU-seconds than the interval allows.
    #[error("gpu_seconds {gpu_seconds} exceeds gpus × duration {max}")]
    TooManyGpuSeconds {
        /// Claimed GPU-seconds.
        gpu_seconds: u64,
        /// Maximum for the interval.
        max: u64,
    },
    /// cumulative < gpu_seconds.
    #[error("cumulative GPU-seconds {cumulative} below this record's {gpu_seconds}")]
    BadCumulative {
        /// Cumulative.
        cumulative: u64,
        /// This record's GPU-seconds.
        gpu_seconds: u64,
    },
    /// The amount does not follow the rounding rule.
    #[error("amount {actual} does not match the rounding rule ({expected})")]
    BadAmount {
        /// Expected amount.
        expected: u64,
        /// Stored amount.
        actual: u64,
    },
    /// The id is not the derived one.
    #[error("record id {actual} is not the derived id {expected}")]
    BadId {
        /// Derived id.
        expected: RecordId,
        /// Stored id.
        actual: RecordId,
    },
    /// Arithmetic overflow (absurd inputs).
    #[error("amount overflows u64")]
    Overflow,
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), RecordError> {
    if s.is_empty() || s.len() > max {
        return Err(RecordError::FieldLength {
            field,
            max,
            len: s.len(),
        });
    }
    Ok(())
}

impl UsageRecord {
    /// The deterministic id: re-metering the same interval of the same attempt on the same
    /// provider yields the same id, so appending it twice is a no-op.
    pub fn derive_id(job_uid: &str, attempt: u32, start: u64, provider: &str) -> RecordId {
        let mut e = Encoder::new(ID_DOMAIN);
        e.str(job_uid).u32(attempt).u64(start).str(provider);
        e.digest()
    }

    /// Canonical byte encoding of every field (the Merkle leaf pre-image).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(RECORD_DOMAIN);
        e.bytes(&self.id.0)
            .str(&self.job.namespace)
            .str(&self.job.name)
            .str(&self.job.uid)
            .u32(self.attempt)
            .str(&self.provider)
            .str(&self.tenant)
            .u64(self.start)
            .u64(self.end)
            .u32(self.gpus)
            .u64(self.gpu_seconds)
            .u64(self.cumulative_gpu_seconds)
            .u64(self.price_per_gpu_hour)
            .u64(self.amount);
        e.finish()
    }

    /// Checks field limits, the interval, GPU-seconds, the amount rule and the id.
    pub fn validate(&self) -> Result<(), RecordError> {
        check_len("job.namespace", &self.job.namespace, MAX_NAMESPACE_LEN)?;
        check_len("job.name", &self.job.name, MAX_NAME_LEN)?;
        check_len("job.uid", &self.job.uid, MAX_UID_LEN)?;
        check_len("provider", &self.provider, MAX_NAME_LEN)?;
        check_len("tenant", &self.tenant, MAX_NAMESPACE_LEN)?;
        if self.end <= self.start {
            return Err(RecordError::EmptyInterval {
                start: self.start,
                end: self.end,
            });
        }
        if self.gpus == 0 {
            return Err(RecordError::NoGpus);
        }
        let max = u64::from(self.gpus).saturating_mul(self.end - self.start);
        if self.gpu_seconds > max {
            return Err(RecordError::TooManyGpuSeconds {
                gpu_seconds: self.gpu_seconds,
                max,
            });
        }
        if self.cumulative_gpu_seconds < self.gpu_seconds {
            return Err(RecordError::BadCumulative {
                cumulative: self.cumulative_gpu_seconds,
                gpu_seconds: self.gpu_seconds,
            });
        }
        let expected = amount_for_delta(
            self.cumulative_gpu_seconds - self.gpu_seconds,
            self.cumulative_gpu_seconds,
            self.price_per_gpu_hour,
        )
        .ok_or(RecordError::Overflow)?;
        if expected != self.amount {
            return Err(RecordError::BadAmount {
                expected,
                actual: self.amount,
            });
        }
        let id = Self::derive_id(&self.job.uid, self.attempt, self.start, &self.provider);
        if id != self.id {
            return Err(RecordError::BadId {
                expected: id,
                actual: self.id,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::amount::AttemptMeter;

    fn meter() -> AttemptMeter {
        let job = JobRef {
            namespace: "team-a".into(),
            name: "train".into(),
            uid: "uid-1".into(),
        };
        AttemptMeter::new(job, 1, "prov-x".into(), "team-a".into(), 2_000_000)
    }

    #[test]
    fn id_is_deterministic_and_field_sensitive() {
        let a = UsageRecord::derive_id("u", 1, 100, "p");
        assert_eq!(a, UsageRecord::derive_id("u", 1, 100, "p"));
        assert_ne!(a, UsageRecord::derive_id("u", 2, 100, "p"));
        assert_ne!(a, UsageRecord::derive_id("u", 1, 101, "p"));
        assert_ne!(a, UsageRecord::derive_id("u", 1, 100, "q"));
        assert_ne!(a, UsageRecord::derive_id("v", 1, 100, "p"));
    }

    #[test]
    fn validate_catches_each_defect() {
        let mut m = meter();
        let r = m.record(1000, 1060, 4).unwrap();
        assert_eq!(r.validate(), Ok(()));
        let mut bad = r.clone();
        bad.amount += 1;
        assert!(matches!(bad.validate(), Err(RecordError::BadAmount { .. })));
        let mut bad = r.clone();
        bad.gpu_seconds = 241;
        assert!(matches!(
            bad.validate(),
            Err(RecordError::TooManyGpuSeconds { .. })
        ));
        let mut bad = r.clone();
        bad.start = 1;
        assert!(matches!(bad.validate(), Err(RecordError::BadId { .. })));
        let mut bad = r.clone();
        bad.end = bad.start;
        assert!(matches!(bad.validate(), Err(RecordError::EmptyInterval { .. })));
        let mut bad = r.clone();
        bad.tenant = "x".repeat(64);
        assert!(matches!(
            bad.validate(),
            Err(RecordError::FieldLength { field: "tenant", .. })
        ));
        let mut bad = r;
        bad.gpus = 0;
        assert_eq!(bad.validate(), Err(RecordError::NoGpus));
    }

    #[test]
    fn worst_case_json_fits_the_documented_bound() {
        let job = JobRef {
            namespace: "n".repeat(MAX_NAMESPACE_LEN),
            name: "j".repeat(MAX_NAME_LEN),
            uid: "u".repeat(MAX_UID_LEN),
        };
        let r = UsageRecord {
            id: Hash32([0xff; 32]),
            job,
            attempt: u32::MAX,
            provider: "p".repeat(MAX_NAME_LEN),
            tenant: "t".repeat(MAX_NAMESPACE_LEN),
            start: u64::MAX,
            end: u64::MAX,
            gpus: u32::MAX,
            gpu_seconds: u64::MAX,
            cumulative_gpu_seconds: u64::MAX,
            price_per_gpu_hour: u64::MAX,
            amount: u64::MAX,
        };
        let len = serde_json::to_vec(&r).unwrap().len();
        assert!(len <= MAX_RECORD_JSON_BYTES, "{len}");
    }

    #[test]
    fn canonical_bytes_change_with_every_field() {
        let r = meter().record(0, 10, 1).unwrap();
        let base = r.canonical_bytes();
        let mut t = r.clone();
        t.job.name.push('x');
        assert_ne!(t.canonical_bytes(), base);
        let mut t = r.clone();
        t.amount ^= 1;
        assert_ne!(t.canonical_bytes(), base);
        let mut t = r;
        t.tenant.push('x');
        assert_ne!(t.canonical_bytes(), base);
    }
}
