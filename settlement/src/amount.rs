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

/// `floor(gpu_seconds × price_per_gpu_hour / 3600)` in u128: never overflows (the product
/// of two u64 is below 2^128).
pub fn amount_for_u128(gpu_seconds: u64, price_per_gpu_hour: u64) -> u128 {
    u128::from(gpu_seconds) * u128::from(price_per_gpu_hour) / u128::from(SECONDS_PER_HOUR)
}

/// `floor(gpu_seconds × price_per_gpu_hour / 3600)`; `None` on u64 overflow.
pub fn amount_for(gpu_seconds: u64, price_per_gpu_hour: u64) -> Option<u64> {
    u64::try_from(amount_for_u128(gpu_seconds, price_per_gpu_hour)).ok()
}

/// Amount of the slice between two cumulative GPU-second marks (`prev ≤ cum`); `None`
/// when `prev > cum` or the slice's own amount does not fit u64. Both marks are rounded
/// in u128: an attempt's running total may exceed u64 (a long attempt priced in a mint of
/// many decimals) while each of its records still fits, and the records must keep
/// metering it.
pub fn amount_for_delta(prev_cumulative: u64, cumulative: u64, price_per_gpu_hour: u64) -> Option<u64> {
    let hi = amount_for_u128(cumulative, price_per_gpu_hour);
    let lo = amount_for_u128(prev_cumulative, price_per_gpu_hour);
    u64::try_from(hi.checked_sub(lo)?).ok()
}

/// The most GPU-seconds one record may carry at `price_per_gpu_hour` wherever its attempt
/// stands: its amount `floor((c+g)·p/3600) − floor(c·p/3600)` is at most
/// `floor(g·p/3600) + 1`, which fits u64 while `g·p < 3600·u64::MAX`.
pub fn max_record_gpu_seconds(price_per_gpu_hour: u64) -> u64 {
    if price_per_gpu_hour == 0 {
        return u64::MAX;
    }
    let limit = (u128::from(SECONDS_PER_HOUR) * u128::from(u64::MAX) - 1) / u128::from(price_per_gpu_hour);
    u64::try_from(limit).unwrap_or(u64::MAX)
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

    /// Meters `[start, end)` like [`Self::record_with`], as up to [`MAX_SPREAD_RECORDS`]
    /// consecutive records when one record's amount would not fit u64 (a transfer moves at
    /// most u64 base units): each record but the last covers whole seconds of all `gpus`,
    /// so they tile the interval, and the last takes the rest. All or nothing: on an error
    /// the meter is unchanged.
    pub fn record_spread(
        &mut self,
        start: u64,
        end: u64,
        gpus: u32,
        gpu_seconds: u64,
    ) -> Result<Vec<UsageRecord>, MeterError> {
        let limit = max_record_gpu_seconds(self.price_per_gpu_hour);
        let fits_interval = gpu_seconds <= u64::from(gpus).saturating_mul(end.saturating_sub(start));
        // One record, or the invalid input it refuses with the precise reason.
        if gpu_seconds <= limit || gpus == 0 || !fits_interval {
            return self.record_with(start, end, gpus, gpu_seconds).map(|r| vec![r]);
        }
        let step_secs = limit / u64::from(gpus);
        let step = step_secs * u64::from(gpus);
        // Even one second of all GPUs, or the whole interval in the most records, is more
        // than u64 base units each: nothing could ever pay it.
        if step_secs == 0 || gpu_seconds.div_ceil(step) > MAX_SPREAD_RECORDS {
            return Err(RecordError::Overflow.into());
        }
        let mut next = self.clone();
        let mut out = Vec::new();
        let (mut at, mut left) = (start, gpu_seconds);
        while left > step {
            // `at + step_secs < end`: `left ≤ gpus × (end − at)` holds throughout.
            out.push(next.record_with(at, at + step_secs, gpus, step)?);
            at += step_secs;
            left -= step;
        }
        out.push(next.record_with(at, end, gpus, left)?);
        *self = next;
        Ok(out)
    }
}

/// Most records [`AttemptMeter::record_spread`] splits one interval into; an interval that
/// needs more is refused whole. Each record but the last carries `step` GPU-seconds: the
/// most one record may ([`max_record_gpu_seconds`]) rounded down to whole seconds of all
/// its GPUs, so more than half of it (`step = ⌊limit/gpus⌋·gpus > limit/2`; all of it for
/// one GPU). The refusal therefore comes past about 64 × u64::MAX base units for one GPU,
/// but may come from just over **32 × u64::MAX** when the GPU count is close to the
/// per-record limit (a price near u64::MAX base units per GPU-hour). That is more than one
/// escrow balance (a u64) holds, but not more than a tenant may owe: an escrow can be
/// refilled between batches. So a refusal must not be final — the operator's meter asks
/// for at most this many records' worth at a time and meters a longer interval in
/// pieces, one per round (`operator/src/settlement/meter.rs`, `record_piece`).
pub const MAX_SPREAD_RECORDS: u64 = 64;

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

    #[test]
    fn an_attempt_whose_running_total_exceeds_u64_keeps_metering_exact_deltas() {
        // 18.000000000000000000 tokens per GPU-hour in a mint of 18 decimals: each hour's
        // record fits u64, the attempt's running total does not after the first hour.
        let price = 18_000_000_000_000_000_000u64;
        let mut m = AttemptMeter::new(job(), 0, "p".into(), "t".into(), price);
        let mut sum = 0u128;
        let mut t = 0u64;
        for secs in [3600u64, 1, 3599, 1234, 3600, 7] {
            let r = m.record(t, t + secs, 1).unwrap();
            assert_eq!(r.validate(), Ok(()));
            sum += u128::from(r.amount);
            t += secs;
        }
        assert!(sum > u128::from(u64::MAX), "the running total left u64");
        assert_eq!(
            sum,
            amount_for_u128(m.cumulative_gpu_seconds(), price),
            "no drift"
        );
        assert_eq!(
            amount_for_delta(0, 7200, price),
            None,
            "one slice too big for u64"
        );
        assert_eq!(amount_for_delta(3600, 7200, price), Some(price));
        assert_eq!(amount_for_delta(2, 1, price), None);
    }

    #[test]
    fn a_record_too_big_for_u64_is_spread_over_several() {
        let price = 10_000_000_000_000_000_000u64; // 10 tokens per GPU-hour at 18 decimals
        let mut m = AttemptMeter::new(job(), 0, "p".into(), "t".into(), price);
        assert!(matches!(
            m.record_with(0, 36_000, 8, 288_000),
            Err(MeterError::Record(RecordError::Overflow))
        ));
        let rs = m.record_spread(0, 36_000, 8, 288_000).unwrap();
        assert!(rs.len() > 1);
        assert_eq!(rs.first().map(|r| r.start), Some(0));
        assert_eq!(rs.last().map(|r| r.end), Some(36_000));
        assert!(rs.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(rs.iter().map(|r| r.gpu_seconds).sum::<u64>(), 288_000);
        let sum: u128 = rs.iter().map(|r| u128::from(r.amount)).sum();
        assert_eq!(sum, amount_for_u128(288_000, price));
        assert_eq!(m.metered_until(), Some(36_000));
        // Nothing to split: one record, as `record_with` makes it.
        let mut small = AttemptMeter::new(job(), 1, "p".into(), "t".into(), 1_000_000);
        assert_eq!(small.record_spread(0, 10, 2, 15).unwrap().len(), 1);
        // Beyond MAX_SPREAD_RECORDS records, or one second of all GPUs too much: refused,
        // and the meter unchanged.
        let mut huge = AttemptMeter::new(job(), 2, "p".into(), "t".into(), u64::MAX);
        let before = huge.clone();
        assert!(huge.record_spread(0, 3600 * 65, 1, 3600 * 65).is_err());
        assert!(huge.record_spread(0, 1, 4000, 4000).is_err());
        assert_eq!(huge, before);
        assert_eq!(huge.record_spread(0, 3599 * 64, 1, 3599 * 64).unwrap().len(), 64);
    }

    #[test]
    fn the_record_cap_may_refuse_from_about_32_times_u64_max() {
        // At u64::MAX base units per GPU-hour one record holds 3599 GPU-seconds; with 1800
        // GPUs a record covers one second of all of them (1800, about half of that).
        let price = u64::MAX;
        assert_eq!(max_record_gpu_seconds(price), 3599);
        let gs = 1800 * 65; // worth 32.5 × u64::MAX base units
        assert!(amount_for_u128(gs, price) < 33 * u128::from(u64::MAX));
        let mut wide = AttemptMeter::new(job(), 4, "p".into(), "t".into(), price);
        assert!(wide.record_spread(0, 65, 1800, gs).is_err(), "65 records needed");
        // The same worth on one GPU: 33 records.
        let mut one = AttemptMeter::new(job(), 5, "p".into(), "t".into(), price);
        assert_eq!(one.record_spread(0, gs, 1, gs).unwrap().len(), 33);
    }

    proptest! {
        #[test]
        fn spread_records_tile_the_interval_and_sum_exactly(
            price in (u64::MAX / 4)..=u64::MAX,
            slices in proptest::collection::vec((1u64..20_000, 1u32..8, 1u64..=100), 1..8),
        ) {
            let mut m = AttemptMeter::new(job(), 3, "p".into(), "t".into(), price);
            let (mut t, mut sum, mut total_gs) = (1_700_000_000u64, 0u128, 0u64);
            for (dur, gpus, used_pct) in slices {
                let gs = (u64::from(gpus) * dur * used_pct / 100).max(1);
                let rs = m.record_spread(t, t + dur, gpus, gs).unwrap();
                prop_assert_eq!(rs[0].start, t);
                prop_assert_eq!(rs[rs.len() - 1].end, t + dur);
                for w in rs.windows(2) {
                    prop_assert_eq!(w[0].end, w[1].start);
                }
                for r in &rs {
                    prop_assert_eq!(r.validate(), Ok(()));
                    sum += u128::from(r.amount);
                }
                prop_assert_eq!(rs.iter().map(|r| r.gpu_seconds).sum::<u64>(), gs);
                total_gs += gs;
                t += dur;
            }
            prop_assert_eq!(sum, amount_for_u128(total_gs, price));
        }

        #[test]
        fn max_record_gpu_seconds_always_fits(price in 1u64..=u64::MAX, prev in 0u64..u64::MAX / 2) {
            let g = max_record_gpu_seconds(price);
            prop_assert!(amount_for_delta(prev, prev.saturating_add(g), price).is_some());
        }

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
