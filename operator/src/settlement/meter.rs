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

use gpufed_api::ComputeJob;
use gpufed_api::formats::parse_decimal;
use gpufed_api::job_status::ComputeJobStatus;
use gpufed_settlement::{JobRef, Journal, UsageRecord};

use crate::time::parse;

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

/// The records `job` needs beyond what `journal` holds. `heartbeat(provider)` is the
/// provider's last heartbeat (unix seconds); `now` caps everything.
pub fn job_records(
    job: &ComputeJob,
    journal: &Journal,
    heartbeat: impl Fn(&str) -> Option<i64>,
    now: i64,
    cfg: &MeterConfig,
) -> Vec<UsageRecord> {
    let (Some(st), Some(uid)) = (job.status.as_ref(), job.metadata.uid.as_ref()) else {
        return Vec::new();
    };
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let job_ref = JobRef {
        namespace: ns.clone(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: uid.clone(),
    };
    let mut out = Vec::new();
    for a in &st.attempts {
        let (Some(price), Some(end)) = (
            to_base_units(&a.price_per_gpu_hour, cfg.decimals),
            parse(&a.end_time),
        ) else {
            continue;
        };
        let mut meter = journal.meter(job_ref.clone(), a.attempt, &a.provider, &ns, price);
        let delta = a.gpu_seconds.saturating_sub(meter.cumulative_gpu_seconds());
        if delta == 0 {
            continue;
        }
        let gpus = a.gpus.unwrap_or(1).max(1);
        let need = delta.div_ceil(u64::from(gpus));
        let start = meter
            .metered_until()
            .or_else(|| a.running_time.as_deref().and_then(parse).map(|t| t.max(0) as u64))
            .unwrap_or_else(|| (end.max(0) as u64).saturating_sub(need));
        // Consistent data gives end − start = delta / gpus exactly; never emit an interval
        // too short for its GPU-seconds.
        let end = (end.max(0) as u64).max(start + need);
        if let Ok(r) = meter.record_with(start, end, gpus, delta) {
            out.push(r);
        }
    }
    let live = st
        .placement
        .as_ref()
        .filter(|p| !st.attempts.iter().any(|a| a.attempt == p.attempt));
    if let Some(p) = live
        && let (Some(running), Some(price), Some(hb)) = (
            p.running_time.as_deref().and_then(parse),
            to_base_units(&p.price_per_gpu_hour, cfg.decimals),
            heartbeat(&p.provider),
        )
    {
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
        let written = written_live_gpu_seconds(st).unwrap_or(0) / u64::from(p.gpus.max(1));
        let counted = running.saturating_add(i64::try_from(written).unwrap_or(i64::MAX));
        let until = hb.min(now).min(unreachable.unwrap_or(i64::MAX)).min(counted) - cfg.lag as i64;
        let mut meter = journal.meter(job_ref, p.attempt, &p.provider, &ns, price);
        let start = meter.metered_until().unwrap_or(running.max(0) as u64);
        if until > 0 && until as u64 >= start + cfg.slice && p.gpus > 0 {
            let until = until as u64;
            let total = (until - running.max(0) as u64) * u64::from(p.gpus);
            let delta = total.saturating_sub(meter.cumulative_gpu_seconds());
            if delta > 0
                && let Ok(r) = meter.record_with(start, until, p.gpus, delta)
            {
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "meter_tests.rs"]
mod tests;
