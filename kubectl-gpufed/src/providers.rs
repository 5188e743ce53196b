//! Pure: GpuProviders → the `providers` table.

use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions::{self, types};
use gpufed_api::{Condition, GpuProvider};
use kube::ResourceExt;

use crate::output::{NONE, Table, age_of, human_duration};

/// A provider's conditions (empty without status).
pub fn provider_conditions(p: &GpuProvider) -> &[Condition] {
    p.status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

/// `True`, or `False (Reason)` / `Unknown (Reason)`, or `-` when absent.
pub fn condition_cell(conds: &[Condition], type_: &str) -> String {
    match conditions::find(conds, type_) {
        None => NONE.to_owned(),
        Some(c) if c.status == ConditionStatus::True => "True".to_owned(),
        Some(c) => format!("{:?} ({})", c.status, c.reason),
    }
}

/// `MODEL free/total` per model, comma-separated.
pub fn gpus_cell(p: &GpuProvider) -> String {
    let Some(inv) = p.status.as_ref().and_then(|s| s.inventory.as_ref()) else {
        return NONE.to_owned();
    };
    if inv.models.is_empty() {
        return format!("{}/{}", inv.allocatable, inv.gpus);
    }
    inv.models
        .iter()
        .map(|m| format!("{} {}/{}", m.model, m.allocatable, m.count))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `MODEL=price` per priced model, comma-separated.
pub fn prices_cell(p: &GpuProvider) -> String {
    if p.spec.prices.is_empty() {
        return NONE.to_owned();
    }
    p.spec
        .prices
        .iter()
        .map(|pr| format!("{}={}", pr.model, pr.price_per_gpu_hour))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Verified GPUs, with failures and GPUs on probation when there are any
/// (`6 (2 failed, 8 on probation)`).
pub fn verified_cell(p: &GpuProvider) -> String {
    let Some(v) = p.status.as_ref().and_then(|s| s.verification.as_ref()) else {
        return NONE.to_owned();
    };
    let mut notes = Vec::new();
    if v.failed_gpus > 0 {
        notes.push(format!("{} failed", v.failed_gpus));
    }
    if let Some(n) = v.probation_gpus.filter(|n| *n > 0) {
        notes.push(format!("{n} on probation"));
    }
    if notes.is_empty() {
        v.verified_gpus.to_string()
    } else {
        format!("{} ({})", v.verified_gpus, notes.join(", "))
    }
}

/// For a drain with a `spec.drainDeadline`, how much longer disruption budgets may hold
/// it (` deadline in 3h12m`) or that they no longer do (` deadline passed`); empty
/// otherwise (no drain, no deadline, or its start not recorded yet).
pub fn drain_deadline_note(p: &GpuProvider, now: i64) -> String {
    let start = p.status.as_ref().and_then(|s| s.drain_start_time.as_deref());
    match p.spec.drain_deadline_at(start) {
        Some(at) if p.spec.drain && at > now => format!(" deadline in {}", human_duration(at - now)),
        Some(_) if p.spec.drain => " deadline passed".to_owned(),
        _ => String::new(),
    }
}

/// The `providers` table, sorted by name.
pub fn table(providers: &[GpuProvider], now: i64) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "REGION",
        "READY",
        "REACHABLE",
        "GPUS (FREE/TOTAL)",
        "PRICE/GPU-H",
        "REPUTATION",
        "VERIFIED",
        "TENANTS",
        "HEARTBEAT",
    ]);
    let mut sorted: Vec<&GpuProvider> = providers.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    for p in sorted {
        let conds = provider_conditions(p);
        let mut ready = condition_cell(conds, types::READY);
        if p.spec.paused && !ready.contains("Paused") {
            ready.push_str(" paused");
        }
        if p.spec.drain && !ready.contains("Drain") {
            ready.push_str(" draining");
        }
        ready.push_str(&drain_deadline_note(p, now));
        let status = p.status.as_ref();
        t.push(vec![
            p.name_any(),
            p.spec.region.clone(),
            ready,
            condition_cell(conds, types::REACHABLE),
            gpus_cell(p),
            prices_cell(p),
            status
                .and_then(|s| s.reputation.as_ref())
                .map_or_else(|| NONE.to_owned(), |r| r.score.clone()),
            verified_cell(p),
            p.spec
                .tenants
                .as_ref()
                .map_or_else(|| "any".to_owned(), |t| t.summary()),
            age_of(status.and_then(|s| s.last_heartbeat_time.as_deref()), now),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, provider, ready_h100_status};

    #[test]
    fn table_shows_inventory_prices_health_and_heartbeat() {
        let a = provider("provider-a", Some(ready_h100_status(6, 8)));
        let mut b = provider("provider-b", None);
        b.spec.paused = true;
        b.spec.drain = true;
        b.spec.tenants = Some(gpufed_api::tenants::Tenants {
            excluded_namespaces: vec!["sandbox".into()],
            ..Default::default()
        });
        let out = table(&[b, a], T0 + 42).render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("NAME"), "{out}");
        let a: Vec<&str> = lines[1]
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            a,
            [
                "provider-a",
                "eu-west",
                "True",
                "True",
                "NVIDIA-H100-80GB-HBM3 6/8",
                "NVIDIA-H100-80GB-HBM3=2.5, NVIDIA-A100-SXM4-40GB=1.2",
                "92.5",
                "6 (2 failed)",
                "any",
                "42s"
            ],
            "{out}"
        );
        assert!(
            lines[2].starts_with("provider-b")
                && lines[2].contains("- paused draining")
                && lines[2].contains("not sandbox"),
            "{out}"
        );
    }

    #[test]
    fn a_drain_with_a_deadline_says_how_long_budgets_may_still_hold_it() {
        let mut p = provider("p", Some(ready_h100_status(8, 8)));
        p.spec.drain = true;
        assert_eq!(drain_deadline_note(&p, T0), "", "no deadline");
        p.spec.drain_deadline = Some("4h".into());
        assert_eq!(drain_deadline_note(&p, T0), "", "its start not recorded yet");
        let start = T0 - 3600;
        if let Some(st) = p.status.as_mut() {
            st.drain_start_time = Some(
                k8s_openapi::jiff::Timestamp::from_second(start)
                    .expect("time")
                    .to_string(),
            );
        }
        assert_eq!(drain_deadline_note(&p, T0), " deadline in 3h");
        assert_eq!(drain_deadline_note(&p, start + 4 * 3600), " deadline passed");
        let line = table(std::slice::from_ref(&p), T0).render();
        assert!(line.contains("deadline in 3h"), "{line}");
        p.spec.drain = false;
        assert_eq!(drain_deadline_note(&p, T0), "", "undone");
    }

    #[test]
    fn gpus_on_probation_are_shown_beside_the_verified_ones() {
        let mut st = ready_h100_status(8, 8);
        if let Some(v) = st.verification.as_mut() {
            v.probation_gpus = Some(8);
        }
        let mut p = provider("p", Some(st));
        assert_eq!(verified_cell(&p), "6 (2 failed, 8 on probation)");
        if let Some(v) = p.status.as_mut().and_then(|s| s.verification.as_mut()) {
            v.failed_gpus = 0;
        }
        assert_eq!(verified_cell(&p), "6 (8 on probation)");
        p.status = None;
        assert_eq!(verified_cell(&p), NONE);
    }

    #[test]
    fn conditions_show_their_reason_when_not_true() {
        let mut st = ready_h100_status(0, 8);
        st.conditions[0].status = ConditionStatus::False;
        st.conditions[0].reason = "HeartbeatLost".into();
        let p = provider("p", Some(st));
        assert_eq!(
            condition_cell(provider_conditions(&p), types::READY),
            "False (HeartbeatLost)"
        );
        assert_eq!(condition_cell(&[], types::READY), "-");
    }
}
