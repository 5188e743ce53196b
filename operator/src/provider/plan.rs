//! Pure: from what was observed of a member cluster, the provider's next status.

use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions::{self, types};
use gpufed_api::provider::{GpuProviderStatus, Inventory, ModelInventory};
use gpufed_api::{Condition, GpuProvider, GpuProviderSpec, formats};

use crate::fleet::MemberView;
use crate::mapping::sanitize;

/// `Ready` reason: the member reports nodes placement cannot take (duplicate names, no
/// GPUs); the others serve.
pub const REASON_INVALID_NODES_IGNORED: &str = "InvalidNodesIgnored";

/// `Ready=False` reason: every GPU node the member reports is one placement cannot take.
pub const REASON_INVALID_INVENTORY: &str = "InvalidInventory";

/// `Ready=False` reason: every Ready GPU node carries a taint the provider's workers do
/// not tolerate (`spec.workerTolerations`).
pub const REASON_UNTOLERATED_TAINTS: &str = "UntoleratedTaints";

/// Nodes listed by name in a status message; the rest are counted.
const NAMED_NODES: usize = 3;

/// `view` as placement offers it: Ready nodes with a hard taint that `spec`'s workers do
/// not tolerate marked not ready (the member's scheduler would never bind a worker
/// there), and a sentence naming them with their taints (empty: none).
pub fn withhold_tainted<'a>(
    view: &'a MemberView,
    spec: &GpuProviderSpec,
) -> (std::borrow::Cow<'a, MemberView>, String) {
    let tolerations = spec.effective_tolerations();
    let tainted: Vec<(usize, String)> = view
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.ready)
        .filter_map(|(i, n)| {
            let left = n.untolerated(&tolerations);
            let taints: Vec<String> = left.iter().map(ToString::to_string).collect();
            (!left.is_empty()).then(|| (i, format!("{} ({})", n.name, taints.join(", "))))
        })
        .collect();
    if tainted.is_empty() {
        return (std::borrow::Cow::Borrowed(view), String::new());
    }
    let mut offered = view.clone();
    for (i, _) in &tainted {
        offered.nodes[*i].ready = false;
    }
    let mut named: Vec<&str> = tainted
        .iter()
        .take(NAMED_NODES)
        .map(|(_, s)| s.as_str())
        .collect();
    let more = tainted.len().saturating_sub(NAMED_NODES);
    let more_text = format!("{more} more");
    if more > 0 {
        named.push(&more_text);
    }
    let sentence = format!(
        "{} GPU node(s) with taints the workers do not tolerate (spec.workerTolerations): {}",
        tainted.len(),
        named.join("; ")
    );
    (std::borrow::Cow::Owned(offered), sentence)
}

pub mod fit;

/// Why a probe of the member failed: `Reachable=False` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// The condition's reason (`Unreachable`, or one of
    /// [`crate::federation::LinkError`]'s, e.g. `SecretForbidden`).
    pub reason: &'static str,
    /// What failed.
    pub message: String,
}

impl From<String> for Unreachable {
    fn from(message: String) -> Self {
        Self {
            reason: crate::federation::REASON_UNREACHABLE,
            message,
        }
    }
}

impl From<&str> for Unreachable {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Outcome of probing the member cluster.
pub type Probe = Result<MemberView, Unreachable>;

/// Seconds since the last heartbeat after which the provider counts as lost.
pub fn grace_seconds(provider: &GpuProvider) -> i64 {
    formats::parse_duration(&provider.spec.heartbeat_grace_period)
        .map_or(120, |s| i64::try_from(s).unwrap_or(i64::MAX))
}

/// Whether the provider's last heartbeat is older than its grace period at `now`.
pub fn heartbeat_lost(provider: &GpuProvider, now: i64) -> bool {
    let last = provider
        .status
        .as_ref()
        .and_then(|s| s.last_heartbeat_time.as_deref())
        .and_then(crate::time::parse);
    match last {
        Some(t) => now - t > grace_seconds(provider),
        None => true,
    }
}

/// Whether the provider counts as lost for the jobs on it at `now`: its last heartbeat is
/// older than its grace period, *and* this process, in its current leadership term, has
/// seen it fail for longer than that grace period (`failing`,
/// [`crate::fleet::Fleet::failing`]): from the first failed probe of the streak to `now`,
/// counted at most one probe cycle past the latest failed probe, and with at least two
/// failed probes ([`crate::fleet::Failing::observed`]). The second half matters after the
/// hub was down (or the operator restarted, or lost and took the Lease again) for longer
/// than the grace period: the stored heartbeat is old then, and neither one probe failing
/// now nor one that failed before the outage (no probe ran in between) may end every job
/// there at once. The cycle past the latest probe keeps failover from waiting on the
/// probes' cadence (or on a reconcile that failed after probing and waits for its retry).
pub fn provider_lost(provider: &GpuProvider, failing: Option<crate::fleet::Failing>, now: i64) -> bool {
    heartbeat_lost(provider, now) && failing.is_some_and(|f| f.observed(now) > grace_seconds(provider))
}

/// Inventory of a member from its GPU nodes and GPU pods. Every count comes from the
/// member (up to `u32::MAX` a node or pod), so sums saturate instead of overflowing.
pub fn inventory(view: &MemberView) -> Inventory {
    listed_inventory(view).0
}

/// [`inventory`], and what it leaves out of `models` so that the schema takes it
/// ([`fit`]): nodes whose model or compute capability it cannot hold (still counted in
/// the totals), and models past its bound.
pub fn listed_inventory(view: &MemberView) -> (Inventory, fit::Unlisted) {
    let mut inv = Inventory::default();
    let mut unlisted = fit::Unlisted::default();
    for node in view.nodes.iter().filter(|n| n.ready) {
        let used = view
            .pods
            .iter()
            .filter(|p| p.node == node.name)
            .fold(0u32, |sum, p| sum.saturating_add(p.gpus));
        let free = node.allocatable.saturating_sub(used);
        inv.nodes = inv.nodes.saturating_add(1);
        inv.gpus = inv.gpus.saturating_add(node.allocatable);
        inv.allocatable = inv.allocatable.saturating_add(free);
        if !fit::model_ok(&node.model) || !fit::compute_ok(node.compute) {
            unlisted.invalid_node(&node.name, &node.model, node.compute);
            continue;
        }
        let cc = format!("{}.{}", node.compute.0, node.compute.1);
        let same = |m: &ModelInventory| m.model == node.model && m.memory_mib == u64::from(node.memory_mib);
        let index = match inv.models.iter().position(same) {
            Some(i) => i,
            None => {
                inv.models.push(ModelInventory {
                    model: node.model.clone(),
                    memory_mib: u64::from(node.memory_mib),
                    compute_capability: cc,
                    ..Default::default()
                });
                inv.models.len() - 1
            }
        };
        let entry = &mut inv.models[index];
        entry.count = entry.count.saturating_add(node.allocatable);
        entry.allocatable = entry.allocatable.saturating_add(free);
        let domain = if node.nvlink_domain.is_some() {
            node.allocatable
        } else {
            1
        };
        entry.largest_nvlink_domain = entry.largest_nvlink_domain.max(domain);
    }
    unlisted.overflow = fit::cap_models(&mut inv.models);
    (inv, unlisted)
}

fn set(st: &mut GpuProviderStatus, c: Condition) {
    conditions::set(&mut st.conditions, c);
}

/// The next status of `provider` given a probe at `now` (RFC 3339 `now_text`).
pub fn status(provider: &GpuProvider, probe: &Probe, now: i64, now_text: &str) -> GpuProviderStatus {
    let gen_ = provider.metadata.generation;
    let mut st = provider.status.clone().unwrap_or_default();
    // The drain's clock: kept while it lasts, gone with it (a new drain starts afresh).
    st.drain_start_time = provider
        .spec
        .drain
        .then(|| st.drain_start_time.take().unwrap_or_else(|| now_text.to_owned()));
    let cond = |t: &str, s, r: &str, m: String| conditions::condition(t, s, r, m, gen_, now_text);
    let invalid = gpufed_api::check::provider_spec(&provider.spec);
    if let Some(first) = invalid.first() {
        set(
            &mut st,
            cond(types::STALLED, True, "InvalidSpec", first.to_string()),
        );
        set(
            &mut st,
            cond(types::READY, False, "InvalidSpec", first.to_string()),
        );
        st.observed_generation = gen_;
        fit::messages(&mut st);
        return st;
    }
    conditions::remove(&mut st.conditions, types::STALLED);
    match probe {
        Ok(view) => {
            st.last_heartbeat_time = Some(now_text.to_owned());
            // Counted as placement offers it: without the nodes it cannot take.
            let (clean, ignored) = sanitize::view(view);
            let (offered, tainted) = withhold_tainted(&clean, &provider.spec);
            let (inv, unlisted) = listed_inventory(&offered);
            set(
                &mut st,
                cond(
                    types::REACHABLE,
                    True,
                    "Connected",
                    format!("{} GPU nodes answer", inv.nodes),
                ),
            );
            let (status, reason, msg) = if provider.spec.paused {
                (False, "Paused", "spec.paused is true: no new jobs".to_owned())
            } else if inv.gpus == 0 && !ignored.is_empty() {
                (
                    False,
                    REASON_INVALID_INVENTORY,
                    format!("no usable GPU node reported: {}", sanitize::summary(&ignored)),
                )
            } else if inv.gpus == 0 && !tainted.is_empty() {
                (
                    False,
                    REASON_UNTOLERATED_TAINTS,
                    format!("no GPU node offered: {tainted}"),
                )
            } else if inv.gpus == 0 {
                (
                    False,
                    "NoGpus",
                    "no Ready node with GPUs matches the node selector".to_owned(),
                )
            } else if !ignored.is_empty() {
                (
                    True,
                    REASON_INVALID_NODES_IGNORED,
                    format!(
                        "{} of {} GPUs free; invalid nodes not offered: {}",
                        inv.allocatable,
                        inv.gpus,
                        sanitize::summary(&ignored)
                    ),
                )
            } else {
                (
                    True,
                    "Serving",
                    format!("{} of {} GPUs free", inv.allocatable, inv.gpus),
                )
            };
            let msg = if status == True && !tainted.is_empty() {
                format!("{msg}; not offered: {tainted}")
            } else {
                msg
            };
            let msg = if unlisted.is_empty() {
                msg
            } else {
                format!("{msg}; {}", unlisted.sentence())
            };
            set(&mut st, cond(types::READY, status, reason, msg));
            st.inventory = Some(inv);
        }
        Err(e) => {
            set(
                &mut st,
                cond(types::REACHABLE, False, e.reason, e.message.clone()),
            );
            let mut with_probe = provider.clone();
            with_probe.status = Some(st.clone());
            if heartbeat_lost(&with_probe, now) {
                let msg = format!(
                    "no heartbeat for longer than {}: {e}",
                    provider.spec.heartbeat_grace_period
                );
                set(&mut st, cond(types::READY, False, "HeartbeatLost", msg));
            }
        }
    }
    st.observed_generation = gen_;
    fit::messages(&mut st);
    st
}

/// `Ready=False` reason of a provider with `spec.drain` while attempts still run on it.
pub const REASON_DRAINING: &str = "Draining";
/// `Ready=False` reason of a provider with `spec.drain` that runs nothing any more.
pub const REASON_DRAINED: &str = "Drained";

/// `spec.drain`, said in `Ready` of a reachable provider (an unreachable one's work fails
/// over anyway): `Draining` with the attempts still running on it (`remaining`) and the
/// disruption budgets that keep some of them for now (`held`) — until when, with a
/// `spec.drainDeadline`, or that it has passed — then `Drained` once none runs.
pub fn drain(
    st: &mut GpuProviderStatus,
    provider: &GpuProvider,
    remaining: usize,
    held: &[String],
    now: i64,
    now_text: &str,
) {
    let reachable = conditions::is_true(&st.conditions, types::REACHABLE);
    if !provider.spec.drain || !reachable || conditions::is_true(&st.conditions, types::STALLED) {
        return;
    }
    let deadline = provider.spec.drain_deadline_at(st.drain_start_time.as_deref());
    let (reason, msg) = if remaining == 0 {
        (
            REASON_DRAINED,
            "spec.drain is true: no new jobs, and nothing runs here".to_owned(),
        )
    } else {
        let budgets = match deadline {
            Some(at) if at <= now => format!(
                "; spec.drainDeadline ({}) has passed: disruption budgets no longer hold them",
                provider.spec.drain_deadline.as_deref().unwrap_or_default()
            ),
            _ if held.is_empty() => String::new(),
            Some(at) => format!(
                "; held by the disruption budget of {} until replacements are ready elsewhere, at most until {} (spec.drainDeadline)",
                held.join(", "),
                crate::time::format(at)
            ),
            None => format!(
                "; held by the disruption budget of {} until replacements are ready elsewhere",
                held.join(", ")
            ),
        };
        (
            REASON_DRAINING,
            format!("spec.drain is true: no new jobs; evicting {remaining} running attempt(s){budgets}"),
        )
    };
    let c = conditions::condition(
        types::READY,
        False,
        reason,
        msg,
        provider.metadata.generation,
        now_text,
    );
    set(st, c);
}

#[cfg(test)]
mod tests;
