//! Metering (pure): from a ComputeJob's status to the usage records the journal lacks.
//!
//! - A **finished** attempt is metered exactly: its final GPU-seconds (up to its end, or
//!   the provider's last heartbeat when the provider was lost) minus what the journal
//!   already holds for it.
//! - A **live** attempt is metered in slices of at least `slice` seconds, only up to the
//!   provider's last heartbeat, and no further than the job controller last counted it
//!   running (`status.usage`), minus `lag`: the attempt certainly ran until then, so the
//!   final record never has to take anything back.
//!
//! Record ids derive from (job uid, attempt, interval start, provider) and every start is
//! the journal's metering position, so re-running this after a crash yields the same ids.
//! An interval worth more than one round may carry is metered in pieces, one a round
//! ([`record_piece`]).
//!
//! Usage that cannot be journaled (a price the mint cannot express, a record the journal
//! refuses) is never skipped in silence: [`meter_job`] returns it as [`Unmetered`]. The
//! journal's position does not move, so every round tries it again; the job is neither
//! deleted nor its history folded until the journal holds it; and
//! [`super::unmetered`] tells it on the job.

use gpufed_api::ComputeJob;
use gpufed_api::formats::parse_decimal;
use gpufed_api::job_status::{AttemptRecord, ComputeJobStatus, Placement};
use gpufed_settlement::{
    AttemptMeter, JobRef, Journal, MAX_SPREAD_RECORDS, MeterError, UsageRecord, max_record_gpu_seconds,
};
use tracing::debug;

use crate::time::parse;

/// [`Unmetered::reason`]: the price has no value in the mint's base units (not a decimal,
/// or more base units per GPU-hour than a u64 holds).
pub const PRICE_NOT_BILLABLE: &str = "PriceNotBillable";
/// [`Unmetered::reason`]: an ended attempt's end time is unreadable.
pub const END_TIME_INVALID: &str = "EndTimeInvalid";
/// [`Unmetered::reason`]: the journal refuses the usage record (field limits, overflow).
pub const USAGE_RECORD_REFUSED: &str = "UsageRecordRefused";

/// Metering knobs.
#[derive(Debug, Clone, Copy)]
pub struct MeterConfig {
    /// Smallest live slice, seconds.
    pub slice: u64,
    /// Live metering stays this far behind the provider's last heartbeat, seconds.
    pub lag: u64,
    /// Decimals of the settlement token (prices in status are decimal tokens).
    pub decimals: u8,
}

/// A decimal token amount (at most 6 fractional digits) in the token's base units.
pub fn to_base_units(decimal: &str, decimals: u8) -> Option<u64> {
    let micros = u128::from(parse_decimal(decimal).ok()?);
    // Settlement runs only with mints of 6 decimals or more (`usable_decimals`); fewer
    // would cut the price, so they meter nothing rather than too little.
    let scale = 10u128.checked_pow(u32::from(decimals.checked_sub(6)?))?;
    u64::try_from(micros.checked_mul(scale)?).ok()
}

/// Base units as a decimal token amount (trailing zeros trimmed).
pub fn from_base_units(amount: u64, decimals: u8) -> String {
    let d = u32::from(decimals).min(38);
    let scale = 10u128.pow(d);
    let (whole, frac) = (u128::from(amount) / scale, u128::from(amount) % scale);
    if d == 0 || frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = d as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Usage of one attempt the meter could not journal, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmetered {
    /// The attempt.
    pub attempt: u32,
    /// Its provider.
    pub provider: String,
    /// GPU-seconds waiting (an ended attempt's; 0 for a live one, not known yet).
    pub gpu_seconds: u64,
    /// PascalCase reason ([`PRICE_NOT_BILLABLE`], ...).
    pub reason: &'static str,
    /// For humans.
    pub message: String,
}

/// What one round meters of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metering {
    /// Records the journal lacks.
    pub records: Vec<UsageRecord>,
    /// Usage that could not be metered (tried again next round).
    pub unmetered: Vec<Unmetered>,
}

/// `price` in base units per GPU-hour, if a record of one second of `gpus` GPUs at it
/// fits a u64 amount; else why not.
fn billable_price(price: &str, gpus: u32, decimals: u8) -> Result<u64, String> {
    if parse_decimal(price).is_err() {
        return Err(format!("price {price:?} per GPU-hour is not a decimal"));
    }
    let Some(base) = to_base_units(price, decimals) else {
        return Err(format!(
            "price {price} per GPU-hour has no value in base units of the settlement mint \
             ({decimals} decimals): at most {} per GPU-hour fits a u64 amount",
            from_base_units(u64::MAX, decimals)
        ));
    };
    if max_record_gpu_seconds(base) < u64::from(gpus.max(1)) {
        return Err(format!(
            "one second of {gpus} GPUs at {price} per GPU-hour costs more base units than a u64 holds"
        ));
    }
    Ok(base)
}

/// GPU-seconds of the live attempt as the job controller last wrote them: `status.usage`
/// less what it sums beside the live attempt (`job::plan::usage`: the archived and the
/// kept ended attempts). `None` before it wrote any.
fn written_live_gpu_seconds(st: &ComputeJobStatus) -> Option<u64> {
    let usage = st.usage.as_ref()?;
    let ended = st
        .attempts
        .iter()
        .fold(st.archived.as_ref().map_or(0, |a| a.gpu_seconds), |sum, a| {
            sum.saturating_add(a.gpu_seconds)
        });
    Some(usage.gpu_seconds.saturating_sub(ended))
}

/// A job as metering sees it.
struct Subject<'a> {
    st: &'a ComputeJobStatus,
    job_ref: JobRef,
    /// The tenant: the namespace whose escrow pays.
    ns: String,
}

/// The job's status, its reference and tenant, if it can be metered at all.
fn subject(job: &ComputeJob) -> Option<Subject<'_>> {
    let (st, uid) = (job.status.as_ref()?, job.metadata.uid.as_ref()?);
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let job_ref = JobRef {
        namespace: ns.clone(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: uid.clone(),
    };
    Some(Subject { st, job_ref, ns })
}

/// The records of an ended attempt's GPU-seconds the journal lacks (exactly, once).
fn meter_ended(
    a: &AttemptRecord,
    job: &Subject<'_>,
    journal: &Journal,
    decimals: u8,
) -> Result<Vec<UsageRecord>, Unmetered> {
    let metered = journal
        .position(&job.job_ref.uid, a.attempt, &a.provider)
        .map_or(0, |p| p.cumulative_gpu_seconds);
    let delta = a.gpu_seconds.saturating_sub(metered);
    if delta == 0 {
        return Ok(Vec::new());
    }
    let unmetered = |reason, message| Unmetered {
        attempt: a.attempt,
        provider: a.provider.clone(),
        gpu_seconds: delta,
        reason,
        message,
    };
    let gpus = a.gpus.unwrap_or(1).max(1);
    let price = billable_price(&a.price_per_gpu_hour, gpus, decimals)
        .map_err(|m| unmetered(PRICE_NOT_BILLABLE, m))?;
    let end = parse(&a.end_time).ok_or_else(|| {
        unmetered(
            END_TIME_INVALID,
            format!("end time {:?} is not an RFC 3339 time", a.end_time),
        )
    })?;
    let mut meter = journal.meter(job.job_ref.clone(), a.attempt, &a.provider, &job.ns, price);
    let need = delta.div_ceil(u64::from(gpus));
    let start = meter
        .metered_until()
        .or_else(|| a.running_time.as_deref().and_then(parse).map(|t| t.max(0) as u64))
        .unwrap_or_else(|| (end.max(0) as u64).saturating_sub(need));
    // Consistent data gives end − start = delta / gpus exactly; never emit an interval
    // too short for its GPU-seconds.
    let end = (end.max(0) as u64).max(start.saturating_add(need));
    record_piece(&mut meter, price, start, end, gpus, delta).map_err(|e| {
        unmetered(
            USAGE_RECORD_REFUSED,
            format!("the journal refuses its usage record: {e}"),
        )
    })
}

/// Meters `[start, end)` with `gpu_seconds` of `gpus` GPUs ([`AttemptMeter::record_spread`])
/// — or, when that needs more than [`MAX_SPREAD_RECORDS`] records, only its first piece:
/// that many records' worth of whole seconds of all `gpus` from `start`. The rest waits
/// for the next round, which meters on from the piece's end, so an interval worth more
/// than one round may carry (a long hub outage at a high price: an escrow can be refilled
/// in between) is metered over several rounds instead of being refused every round.
/// Within the `gpus × (end − start)` bound each piece takes all GPUs for its seconds, so
/// the rest still fits what is left of the interval.
fn record_piece(
    meter: &mut AttemptMeter,
    price: u64,
    start: u64,
    end: u64,
    gpus: u32,
    gpu_seconds: u64,
) -> Result<Vec<UsageRecord>, MeterError> {
    let step_secs = max_record_gpu_seconds(price) / u64::from(gpus.max(1));
    let piece_secs = step_secs.saturating_mul(MAX_SPREAD_RECORDS);
    let piece = piece_secs.saturating_mul(u64::from(gpus));
    let fits_interval = gpu_seconds <= u64::from(gpus).saturating_mul(end.saturating_sub(start));
    if gpus == 0 || step_secs == 0 || gpu_seconds <= piece || !fits_interval {
        // One call: it meters all of it, or refuses with the precise reason.
        return meter.record_spread(start, end, gpus, gpu_seconds);
    }
    // `piece < gpu_seconds ≤ gpus × (end − start)`, so `start + piece_secs < end`.
    meter.record_spread(start, start + piece_secs, gpus, piece)
}

/// The live attempt's next slice, if one is due.
fn meter_live(
    p: &Placement,
    job: &Subject<'_>,
    journal: &Journal,
    heartbeat: impl Fn(&str) -> Option<i64>,
    now: i64,
    cfg: &MeterConfig,
) -> Result<Vec<UsageRecord>, Unmetered> {
    let Some(running) = p.running_time.as_deref().and_then(parse) else {
        return Ok(Vec::new());
    };
    let unmetered = |reason, message| Unmetered {
        attempt: p.attempt,
        provider: p.provider.clone(),
        gpu_seconds: 0,
        reason,
        message,
    };
    let price = billable_price(&p.price_per_gpu_hour, p.gpus, cfg.decimals)
        .map_err(|m| unmetered(PRICE_NOT_BILLABLE, m))?;
    let Some(hb) = heartbeat(&p.provider) else {
        return Ok(Vec::new());
    };
    // A worker's node unreachable: if it never answers again, the attempt is billed
    // only up to the first sighting (docs/api.md#node-loss), though the member keeps
    // heartbeating through the grace period — a live slice must not run past it.
    let unreachable = p.node_unreachable_since.as_deref().and_then(parse);
    // Nor past what the job controller last counted (it saw the gang running, or the
    // provider within its heartbeat grace, until then): after a hub outage the
    // provider's heartbeat comes back before the job controller records that the pods
    // ended meanwhile, and the heartbeat alone would bill the attempt up to now — more
    // than its final record, which can never take the excess back. Nothing written
    // yet: nothing live is metered (the final record meters it all).
    let written = written_live_gpu_seconds(job.st).unwrap_or(0) / u64::from(p.gpus.max(1));
    let counted = running.saturating_add(i64::try_from(written).unwrap_or(i64::MAX));
    let lag = i64::try_from(cfg.lag).unwrap_or(i64::MAX);
    let until = hb
        .min(now)
        .min(unreachable.unwrap_or(i64::MAX))
        .min(counted)
        .saturating_sub(lag);
    let mut meter = journal.meter(job.job_ref.clone(), p.attempt, &p.provider, &job.ns, price);
    let running = running.max(0) as u64;
    let start = meter.metered_until().unwrap_or(running);
    let Some(until) = u64::try_from(until).ok().filter(|&u| u > 0) else {
        return Ok(Vec::new());
    };
    // Metered past its running time (the time rewritten since): nothing live to add, the
    // final record meters the rest.
    if p.gpus == 0 || until < start.saturating_add(cfg.slice) || until < running {
        return Ok(Vec::new());
    }
    let total = (until - running).saturating_mul(u64::from(p.gpus));
    let delta = total.saturating_sub(meter.cumulative_gpu_seconds());
    if delta == 0 {
        return Ok(Vec::new());
    }
    record_piece(&mut meter, price, start, until, p.gpus, delta).map_err(|e| {
        unmetered(
            USAGE_RECORD_REFUSED,
            format!("the journal refuses its usage record: {e}"),
        )
    })
}

/// The live attempt of `st`: placed, not among the ended ones.
fn live(st: &ComputeJobStatus) -> Option<&Placement> {
    st.placement
        .as_ref()
        .filter(|p| !st.attempts.iter().any(|a| a.attempt == p.attempt))
}

/// The records `job` needs beyond what `journal` holds, and what of its usage cannot be
/// metered. `heartbeat(provider)` is the provider's last heartbeat (unix seconds); `now`
/// caps everything.
pub fn meter_job(
    job: &ComputeJob,
    journal: &Journal,
    heartbeat: impl Fn(&str) -> Option<i64>,
    now: i64,
    cfg: &MeterConfig,
) -> Metering {
    let mut out = Metering::default();
    let Some(job) = subject(job) else {
        return out;
    };
    let results = job
        .st
        .attempts
        .iter()
        .map(|a| meter_ended(a, &job, journal, cfg.decimals))
        .chain(live(job.st).map(|p| meter_live(p, &job, journal, heartbeat, now, cfg)));
    for r in results {
        match r {
            Ok(records) => out.records.extend(records),
            Err(u) => out.unmetered.push(u),
        }
    }
    out
}

/// The records `job` needs beyond what `journal` holds (see [`meter_job`]); what cannot be
/// metered is logged at debug level here, every round, and told by [`super::unmetered`].
pub fn job_records(
    job: &ComputeJob,
    journal: &Journal,
    heartbeat: impl Fn(&str) -> Option<i64>,
    now: i64,
    cfg: &MeterConfig,
) -> Vec<UsageRecord> {
    let m = meter_job(job, journal, heartbeat, now, cfg);
    for u in &m.unmetered {
        debug!(job = ?job.metadata.name, attempt = u.attempt, provider = %u.provider, reason = u.reason,
               message = %u.message, "usage not metered; retried next round");
    }
    m.records
}

/// What of `job`'s usage the journal lacks and cannot be metered: [`meter_job`]'s
/// `unmetered`, from the same inputs, run after the round's records are journaled (so
/// only what is still missing is found). The live attempt's slice is checked too, not its
/// price alone: a slice the journal refuses (a record field it cannot hold) is found here
/// only with the round's heartbeats and clock.
pub fn unmeterable(
    job: &ComputeJob,
    journal: &Journal,
    heartbeat: impl Fn(&str) -> Option<i64>,
    now: i64,
    cfg: &MeterConfig,
) -> Vec<Unmetered> {
    meter_job(job, journal, heartbeat, now, cfg).unmetered
}

#[cfg(test)]
#[path = "meter_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "meter_overflow_tests.rs"]
mod overflow_tests;
