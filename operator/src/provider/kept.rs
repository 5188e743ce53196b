//! What the verifier keeps in the hub for a provider (`crate::verification::pins` and
//! `crate::verification::verdicts`): loaded before the provider's first challenge step,
//! saved after each step that changed them. Verification waits until both are loaded:
//! without the pins a node could be judged against a key it never had; without the
//! verdicts a new leader would treat every node as new. A map that cannot be read until
//! someone restores a ConfigMap is also told on the GpuProvider and counted
//! ([`crate::verification::unreadable`]).

use gpufed_api::GpuProvider;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::verification::store::Error;
use crate::verification::unreadable::{Kept, VERIFICATION_STATE_UNREADABLE};
use crate::verification::{pins, verdicts};

/// Binds what the verifier knows of `provider` to its UID — one deleted and created again
/// under the same name starts afresh ([`crate::verification::Verifier::adopt`]) — and once
/// a heartbeat forgets the providers gone.
pub(super) async fn adopt(ctx: &Context, provider: &GpuProvider, now_ms: u64) {
    let name = provider.name_any();
    if let Some(uid) = provider.uid()
        && ctx.verifier.adopt(&name, &uid)
    {
        tracing::info!("a provider of this name was deleted before: what was known of it is forgotten");
        ctx.members.forget(&name).await;
    }
    let every = u64::try_from(ctx.config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
    let gone = ctx.verifier.retain_providers(now_ms, every, |p, uid| {
        ctx.providers
            .get(&ObjectRef::new(p))
            .is_some_and(|o| o.uid().as_deref() == Some(uid))
    });
    for p in gone {
        tracing::info!(gone = %p, "provider deleted: what was known of it is forgotten");
        ctx.members.forget(&p).await;
    }
}

/// Loads what is not loaded yet; whether verification may step now.
pub(super) async fn load(ctx: &Context, provider: &GpuProvider, now_ms: u64) -> bool {
    let name = &provider.name_any();
    let ns = &ctx.verifier.config().namespace;
    if !ctx.verifier.pins_loaded(name) {
        match pins::load(&ctx.hub, ns, provider).await {
            Ok(keys) => {
                ctx.verifier.load_pins(name, keys);
                ctx.verifier.map_read(name, Kept::Pins);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pinned node keys; verification waits");
                unreadable(ctx, provider, Kept::Pins, &e, now_ms);
            }
        }
    }
    if !ctx.verifier.verdicts_loaded(name) {
        match verdicts::load(&ctx.hub, ns, provider).await {
            Ok(records) => {
                ctx.verifier.map_read(name, Kept::Verdicts);
                let outcomes = ctx.verifier.load_verdicts(name, records, now_ms);
                if !outcomes.is_empty() {
                    let count = |o| outcomes.iter().filter(|&&x| x == o).count();
                    tracing::info!(
                        restored = count(verdicts::Outcome::Restored),
                        due = count(verdicts::Outcome::Due),
                        dropped = outcomes.len()
                            - count(verdicts::Outcome::Restored)
                            - count(verdicts::Outcome::Due),
                        "resumed the verdicts kept in the hub"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kept verdicts; verification waits");
                unreadable(ctx, provider, Kept::Verdicts, &e, now_ms);
            }
        }
    }
    ctx.verifier.pins_loaded(name) && ctx.verifier.verdicts_loaded(name)
}

/// Tells a map that cannot be read until a ConfigMap is restored (`e` names it) as a
/// Warning Event on `provider`, when one is due (first found, then hourly: not every
/// heartbeat); the gauge counts it meanwhile.
fn unreadable(ctx: &Context, provider: &GpuProvider, map: Kept, e: &Error, now_ms: u64) {
    if let Some(message) = ctx.verifier.map_unreadable(&provider.name_any(), map, e, now_ms) {
        ctx.reporter.publish(
            kube::Resource::object_ref(provider, &()),
            vec![crate::job::events::note(
                true,
                VERIFICATION_STATE_UNREADABLE,
                "Verify",
                message,
            )],
        );
    }
}

/// Saves the pins and verdicts that changed, while `fence` holds (checked before each
/// write and delete of their ConfigMaps: a lapsed leader's save would undo a successor's);
/// a failure is retried at the next heartbeat.
pub(super) async fn save(ctx: &Context, provider: &GpuProvider, fence: &crate::lease::Fence) {
    if !fence.holds() {
        return;
    }
    let name = provider.name_any();
    let ns = &ctx.verifier.config().namespace;
    let holds = || fence.holds();
    if let Some(keys) = ctx.verifier.pins_to_save(&name) {
        match pins::save(&ctx.hub, ns, provider, &keys, &holds).await {
            Ok(()) => ctx.verifier.pins_saved(&name, &keys),
            Err(e) => failed(&e, "cannot save pinned node keys; next round retries"),
        }
    }
    if let Some(records) = ctx.verifier.verdicts_to_save(&name) {
        match verdicts::save(
            &ctx.hub,
            ns,
            provider,
            &records,
            crate::verification::shards::LIMIT,
            &holds,
        )
        .await
        {
            Ok(()) => ctx.verifier.verdicts_saved(&name, records),
            Err(e) => failed(&e, "cannot save the verdicts; the next heartbeat retries"),
        }
    }
}

/// Logs a save's failure: a lapsed term is no fault (the next leader saves).
fn failed(e: &Error, message: &'static str) {
    if matches!(e, Error::Lapsed { .. }) {
        tracing::info!(error = %e, "leadership lapsed during a save; the next leader saves");
    } else {
        tracing::warn!(error = %e, "{message}");
    }
}
