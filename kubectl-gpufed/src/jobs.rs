//! Pure: ComputeJobs → the `jobs` table and the `submit --wait` progress line.

use gpufed_api::ComputeJob;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::JobPhase;
use kube::ResourceExt;

use crate::output::{NONE, Table, age_of_meta, human_duration, thousands};

/// `namespace/name` of a job.
pub fn job_ref(job: &ComputeJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// The job's phase as text (`-` before the operator has written one).
pub fn phase(job: &ComputeJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or_else(|| NONE.to_owned(), |p| format!("{p:?}"))
}

/// Whether the job has ended (Succeeded or Failed).
pub fn is_terminal(job: &ComputeJob) -> bool {
    matches!(
        job.status.as_ref().and_then(|s| s.phase),
        Some(JobPhase::Succeeded | JobPhase::Failed)
    )
}

/// `8 (2x4)`: GPUs of the gang, workers × GPUs per worker.
pub fn gang(job: &ComputeJob) -> String {
    let (w, g) = (job.spec.workers, job.spec.gpus_per_worker);
    let total = u64::from(w) * u64::from(g);
    if w == 1 {
        total.to_string()
    } else {
        format!("{total} ({w}x{g})")
    }
}

/// The live attempt's provider and number, else the last finished attempt's.
fn provider_attempt(job: &ComputeJob) -> (String, String) {
    let st = job.status.as_ref();
    if let Some(p) = st.and_then(|s| s.placement.as_ref()) {
        return (p.provider.clone(), p.attempt.to_string());
    }
    match st.and_then(|s| s.attempts.last()) {
        Some(a) => (a.provider.clone(), a.attempt.to_string()),
        None => (NONE.to_owned(), NONE.to_owned()),
    }
}

fn usage(job: &ComputeJob) -> (u64, String) {
    job.status
        .as_ref()
        .and_then(|s| s.usage.as_ref())
        .map_or((0, "0".to_owned()), |u| (u.gpu_seconds, u.cost.clone()))
}

/// The `jobs` table; with `namespaces`, a NAMESPACE column first.
pub fn table(jobs: &[ComputeJob], namespaces: bool, now: i64) -> Table {
    let mut headers = vec![
        "NAME",
        "PHASE",
        "PROVIDER",
        "ATTEMPT",
        "GPUS",
        "GPU-SECONDS",
        "COST",
        "AGE",
    ];
    if namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(&headers);
    let mut sorted: Vec<&ComputeJob> = jobs.iter().collect();
    sorted.sort_by_key(|j| (j.namespace(), j.name_any()));
    for job in sorted {
        let (provider, attempt) = provider_attempt(job);
        let (seconds, cost) = usage(job);
        let mut row = vec![
            job.name_any(),
            phase(job),
            provider,
            attempt,
            gang(job),
            thousands(seconds),
            cost,
            age_of_meta(&job.metadata, now),
        ];
        if namespaces {
            row.insert(0, job.namespace().unwrap_or_default());
        }
        t.push(row);
    }
    t
}

/// One line of `submit --wait` progress, e.g.
/// `[2m5s] team/train  Running  on provider-a (attempt 1, 8 GPUs at 2.5/GPU-h)  960 GPU-s  cost 0.67`.
pub fn progress_line(job: &ComputeJob, elapsed_seconds: i64) -> String {
    let st = job.status.as_ref();
    let place = match st.and_then(|s| s.placement.as_ref()) {
        Some(p) => format!(
            "on {} (attempt {}, {} GPU{} at {}/GPU-h)",
            p.provider,
            p.attempt,
            p.gpus,
            if p.gpus == 1 { "" } else { "s" },
            p.price_per_gpu_hour
        ),
        None => {
            let cond = st.and_then(|s| conditions::find(&s.conditions, types::PLACED));
            match cond {
                Some(c) if !c.message.is_empty() => format!("waiting: {}", c.message),
                _ => "waiting for a placement".to_owned(),
            }
        }
    };
    let (seconds, cost) = usage(job);
    format!(
        "[{}] {}  {}  {}  {} GPU-s  cost {}",
        human_duration(elapsed_seconds),
        job_ref(job),
        phase(job),
        place,
        thousands(seconds),
        cost
    )
}

/// What the job's end says: the Complete, Failed or Ready condition's message.
pub fn outcome_message(job: &ComputeJob) -> String {
    let conds = job
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    [types::FAILED, types::COMPLETE, types::READY]
        .iter()
        .filter_map(|t| conditions::find(conds, t))
        .find(|c| !c.message.is_empty())
        .map_or_else(|| phase(job), |c| c.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, job};

    #[test]
    fn table_shows_live_and_finished_attempts() {
        let queued = job("queued", "team", None);
        let running = job(
            "train",
            "team",
            Some(serde_json::json!({
                "phase": "Running",
                "placement": {"attempt": 2, "provider": "provider-a", "gpus": 8, "pricePerGpuHour": "2.5",
                              "workers": [], "placedTime": "2026-01-01T00:00:00Z"},
                "usage": {"gpuSeconds": 86400, "cost": "60"},
            })),
        );
        let done = job(
            "done",
            "other",
            Some(serde_json::json!({
                "phase": "Succeeded",
                "attempts": [{"attempt": 1, "provider": "provider-b", "outcome": "Succeeded", "gpuSeconds": 10,
                              "pricePerGpuHour": "1", "endTime": "2026-01-01T00:00:00Z"}],
                "usage": {"gpuSeconds": 10, "cost": "0.002777"},
            })),
        );
        let out = table(&[running, queued, done], true, T0 + 3600).render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{out}");
        assert!(
            lines[1].starts_with("other") && lines[1].contains("Succeeded"),
            "{out}"
        );
        assert!(
            lines[1].contains("provider-b") && lines[1].contains("0.002777"),
            "{out}"
        );
        let train: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            train,
            [
                "team",
                "train",
                "Running",
                "provider-a",
                "2",
                "8",
                "(2x4)",
                "86,400",
                "60",
                "60m"
            ]
        );
        let queued: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            queued,
            ["team", "queued", "-", "-", "-", "8", "(2x4)", "0", "0", "60m"]
        );
        assert!(!table(&[], false, T0).render().contains("NAMESPACE"));
    }

    #[test]
    fn progress_names_phase_placement_and_usage() {
        let waiting = job(
            "train",
            "team",
            Some(serde_json::json!({
                "phase": "Queued",
                "conditions": [{"type": "Placed", "status": "False", "reason": "NoProviderFits",
                                "message": "0/1 providers fit: 1 not verified",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            })),
        );
        assert_eq!(
            progress_line(&waiting, 5),
            "[5s] team/train  Queued  waiting: 0/1 providers fit: 1 not verified  0 GPU-s  cost 0"
        );
        assert!(!is_terminal(&waiting));
        let running = job(
            "train",
            "team",
            Some(serde_json::json!({
                "phase": "Running",
                "placement": {"attempt": 1, "provider": "p", "gpus": 8, "pricePerGpuHour": "2.5",
                              "workers": [], "placedTime": "2026-01-01T00:00:00Z"},
                "usage": {"gpuSeconds": 960, "cost": "0.666666"},
            })),
        );
        assert_eq!(
            progress_line(&running, 125),
            "[2m5s] team/train  Running  on p (attempt 1, 8 GPUs at 2.5/GPU-h)  960 GPU-s  cost 0.666666"
        );
    }

    #[test]
    fn outcome_prefers_failure_details() {
        let failed = job(
            "x",
            "team",
            Some(serde_json::json!({
                "phase": "Failed",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Failed", "message": "ready msg",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "Failed", "status": "True", "reason": "AttemptsExhausted",
                     "message": "attempt 3 Failed: worker 0 failed", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            })),
        );
        assert!(is_terminal(&failed));
        assert_eq!(outcome_message(&failed), "attempt 3 Failed: worker 0 failed");
        assert_eq!(outcome_message(&job("y", "team", None)), "-");
    }
}
