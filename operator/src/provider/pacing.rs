//! When a provider is probed next: every heartbeat, every `--challenge-poll` while one
//! of its nodes has a challenge open, at once when a new report wakes it, and at every
//! challenge round's start (`gpufed_trust::rounds`) — never more often than its interval
//! for its own status writes.

use std::time::{Duration, Instant};

use crate::context::Context;

/// The heartbeat, or the faster challenge poll while one of the provider's nodes has a
/// challenge open: the hub timestamps a commitment when a probe sees it.
pub(super) fn probe_interval(ctx: &Context, provider: &str) -> Duration {
    let beat = ctx.config.heartbeat_interval;
    if ctx.verifier.challenging(provider) {
        ctx.config.challenge_poll.min(beat)
    } else {
        beat
    }
}

/// The longest time from one probe of a provider to the end of the next (seconds): the
/// heartbeat interval, and the member timeout the next probe may take
/// ([`crate::fleet::Failing::cycle`]).
pub(super) fn probe_cycle(ctx: &Context) -> i64 {
    let cycle = ctx
        .config
        .heartbeat_interval
        .saturating_add(ctx.members.timeout());
    i64::try_from(cycle.as_secs()).unwrap_or(i64::MAX)
}

/// `wait`, or less when the next challenge round starts sooner: every provider is
/// reconciled at a round's start, so the whole fleet is challenged at once
/// (`gpufed_trust::rounds`).
pub(super) fn until_round(ctx: &Context, wait: Duration) -> Duration {
    let next = ctx.verifier.rounds().until_next(crate::time::now_millis());
    wait.min(Duration::from_millis(next.saturating_add(1)))
}

/// How long to wait before probing `name` again, if its last probe (at the same
/// generation) was less than `interval` ago, it was not `woken` by a new report and no
/// challenge round started since; records this probe (at `now`, and ms on the wall
/// clock) otherwise.
pub(super) fn too_soon(
    ctx: &Context,
    name: &str,
    generation: Option<i64>,
    (now, now_ms): (Instant, u64),
    interval: Duration,
    woken: bool,
) -> Option<Duration> {
    let mut probed = ctx.probed.lock().ok()?;
    if !woken
        && let Some((at, g, at_ms)) = probed.get(name)
        && *g == generation
        && now.duration_since(*at) < interval.mul_f64(0.9)
        && !ctx.verifier.rounds().crossed(*at_ms, now_ms)
    {
        return Some(interval.saturating_sub(now.duration_since(*at)));
    }
    probed.insert(name.to_owned(), (now, generation, now_ms));
    None
}
