//! Amounts and the rounding rule.
//!
//! `amount(gs) = floor(gs × price_per_gpu_hour / 3600)` in base units, computed in u128.
//! Rounding is applied to the **cumulative** GPU-seconds of an attempt, and each record
//! carries the delta `amount(cumulative) − amount(cumulative − gpu_seconds)`. So the sum of
//! an attempt's record amounts is exactly `amount(total GPU-seconds)`: rounding never
//! drifts, however the attempt is sliced, and the tenant is never charged more than the
//! exact price (the floor loses < 1 base unit per attempt).

use thiserror::Error;

use crate::record::{JobRef, RecordError, UsageRecord};

/// Seconds per hour (prices are per GPU-hour).
pub const SECONDS_PER_HOUR: u64 = 3600;

/// `floor(gpu_seconds × price_per_gpu_hour / 3600)`; `None` on u64 overflow.
pub fn amount_for(gpu_seconds: u64, price_per_gpu_hour: u64) -> Option<u64> {
    let v = u128::from(gpu_seconds) * u128::from(price_per_gpu_hour) / u128::from(SECONDS_PER_HOUR);
    u64::try_from(v).ok()
}

/// Amount of the slice between two cumulative GPU-second marks (`prev ≤ cum`).
pub fn amount_for_delta(prev_cumulative: u64, cumulative: u64, price_per_gpu_hour: u64) -> Option<u64> {
    let hi = amount_for(cumulative, price_per_gpu_hour)?;
    let lo = amount_for(prev_cumulative, price_per_gpu_hour)?;
    hi.checked_sub(lo)
}

/// Why metering refused an interval.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MeterError {
    /// The interval starts before the end of the last metered one.
    #[error("interval starting at {start} overlaps metered usage up to {metered_until}")]
    Overlap {
        /// Requested start.
        start: u64,
        /// End of the last record.
        metered_until: u64,
    },
    /// A record passed to [`AttemptMeter::resume`] belongs to another attempt.
    #[error("record {0} belongs to another job, attempt, provider or price")]
    ForeignRecord(String),
    /// The resulting record is invalid.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Meters one attempt of one job on one provider at one price, emitting records whose
/// amounts follow the cumulative delta rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptMeter {
    job: JobRef,
    attempt: u32,
    provider: String,
    tenant: String,
    price_per_gpu_hour: u64,
    cumulative_gpu_seconds: u64,
    metered_until: Option<u64>,
}

impl AttemptMeter {
    /// A fresh meter for an attempt with nothing metered yet.
    pub fn new(job: JobRef, attempt: u32, provider: String, tenant: String, price_per_gpu_hour: u64) -> Self {
        Self {
            job,
            attempt,
            provider,
            tenant,
            price_per_gpu_hour,
            cumulative_gpu_seconds: 0,
            metered_until: None,
        }
    }

    /// Rebuilds the meter after a restart from the attempt's records already in the
    /// journal (any order), so the next record continues the cumulative sequence.
    pub fn resume(mut self, records: &[UsageRecord]) -> Result<Self, MeterError> {
        for r in records {
            if r.job != self.job
                || r.attempt != self.attempt
                || r.provider != self.provider
                || r.price_per_gpu_hour != self.price_per_gpu_hour
            {
                return Err(MeterError::ForeignRecord(r.id.to_hex()));
            }
            self.cumulative_gpu_seconds = self.cumulative_gpu_seconds.max(r.cumulative_gpu_seconds);
            self.metered_until = Some(self.metered_until.map_or(r.end, |m| m.max(r.end)));
        }
        Ok(self)
    }

    /// Continues from a known position (see [`crate::position`]).
    pub fn at(mut self, cumulative_gpu_seconds: u64, metered_until: u64) -> Self {
        self.cumulative_gpu_seconds = cumulative_gpu_seconds;
        self.metered_until = Some(metered_until);
        self
    }

    /// GPU-seconds metered so far.
    pub fn cumulative_gpu_seconds(&self) -> u64 {
        self.cumulative_gpu_seconds
    }

    /// End of the last metered interval, if any.
    pub fn metered_until(&self) -> Option<u64> {
        self.metered_until
    }

    /// Meters `[start, end)` with `gpus` GPUs fully used (`gpu_seconds = gpus × duration`).
    pub fn record(&mut self, start: u64, end: u64, gpus: u32) -> Result<UsageRecord, MeterError> {
        let gs = u64::from(gpus).saturating_mul(end.saturating_sub(start));
        self.record_with(start, end, gpus, gs)
    }

    /// Meters `[start, end)` with an explicit GPU-second count (≤ gpus × duration).
    pub fn record_with(
        &mut self,
        start: u64,
        end: u64,
        gpus: u32,
        gpu_seconds: u64,
    ) -> Result<UsageRecord, MeterError> {
        if let Some(until) = self.metered_until
            && start < until
        {
            return Err(MeterError::Overlap {
                start,
                metered_until: until,
            });
        }
        let cumulative = self
            .cumulative_gpu_seconds
            .checked_add(gpu_seconds)
            .ok_or(RecordError::Overflow)?;
        let amount = amount_for_delta(self.cumulative_gpu_seconds, cumulative, self.price_per_gpu_hour)
            .ok_or(RecordError::Overflow)?;
        let record = UsageRecord {
            id: UsageRecord::derive_id(&self.job.uid, self.attempt, start, &self.provider),
            job: self.job.clone(),
            attempt: self.attempt,
            provider: self.provider.clone(),
            tenant: self.tenant.clone(),
            start,
            end,
            gpus,
            gpu_seconds,
            cumulative_gpu_seconds: cumulative,
            price_per_gpu_hour: self.price_per_gpu_hour,
            amount,
        };
        record.validate()?;
        self.cumulative_gpu_seconds = cumulative;
        self.metered_until = Some(end);
        Ok(record)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job() -> JobRef {
        JobRef {
            namespace: "t".into(),
            name: "j".into(),
            uid: "u".into(),
        }
    }

    #[test]
    fn examples() {
        assert_eq!(amount_for(3600, 1_000_000), Some(1_000_000));
        assert_eq!(amount_for(1, 1_000_000), Some(277)); // 277.77… floored
        assert_eq!(amount_for(u64::MAX, u64::MAX), None);
        // Three one-second slices at 1.0 token/h: 277 + 278 + 278 = floor(3 × 277.77…) = 833.
        let mut m = AttemptMeter::new(job(), 0, "p".into(), "t".into(), 1_000_000);
        let a: Vec<u64> = (0..3).map(|i| m.record(i, i + 1, 1).unwrap().amount).collect();
        assert_eq!(a, vec![277, 278, 278]);
        assert_eq!(a.iter().sum::<u64>(), 833);
    }

    #[test]
    fn overlap_is_refused_and_resume_continues() {
        let mut m = AttemptMeter::new(job(), 0, "p".into(), "t".into(), 1_234_567);
        let r1 = m.record(0, 60, 2).unwrap();
        assert!(matches!(m.record(59, 70, 1), Err(MeterError::Overlap { .. })));
        let r2 = m.record(60, 61, 1).unwrap();
        let mut fresh = AttemptMeter::new(job(), 0, "p".into(), "t".into(), 1_234_567)
            .resume(&[r2.clone(), r1.clone()])
            .unwrap();
        assert_eq!(fresh.cumulative_gpu_seconds(), 121);
        assert_eq!(fresh.metered_until(), Some(61));
        // Re-metering the same interval gives the same id.
        let again = AttemptMeter::new(job(), 0, "p".into(), "t".into(), 1_234_567)
            .record(0, 60, 2)
            .unwrap();
        assert_eq!(again, r1);
        assert_eq!(fresh.record(61, 62, 1).unwrap(), m.record(61, 62, 1).unwrap());
        let other = AttemptMeter::new(job(), 1, "p".into(), "t".into(), 1_234_567);
        assert!(matches!(other.resume(&[r1]), Err(MeterError::ForeignRecord(_))));
    }

    proptest! {
        #[test]
        fn deltas_sum_exactly_to_the_cumulative_amount(
            price in 0u64..10_000_000_000,
            slices in proptest::collection::vec((1u64..5000, 1u32..16, 0u64..100), 1..60),
        ) {
            let mut m = AttemptMeter::new(job(), 3, "p".into(), "t".into(), price);
            let mut t = 1_700_000_000u64;
            let mut total_amount = 0u64;
            let mut total_gs = 0u64;
            for (dur, gpus, used_pct) in slices {
                let gs = u64::from(gpus) * dur * used_pct / 100;
                let r = m.record_with(t, t + dur, gpus, gs).unwrap();
                prop_assert_eq!(r.validate(), Ok(()));
                // Each slice is within one base unit of its exact share.
                let exact = u128::from(gs) * u128::from(price);
                prop_assert!(u128::from(r.amount) * 3600 <= exact + 3600);
                prop_assert!(u128::from(r.amount) * 3600 + 3600 > exact);
                total_amount += r.amount;
                total_gs += gs;
                t += dur;
            }
            prop_assert_eq!(Some(total_amount), amount_for(total_gs, price));
        }
    }
}
