//! What the agent writes to its Assignments' status, apart from reading the member.
//!
//! The pods come from a list served by the member API server's watch cache
//! (`resourceVersion=0`, [`gpufed_operator::member::ops::attempt_pods_and_ready_nodes`]):
//! after an API server restart, or from one of several API servers lagging behind, that
//! list may be older than the one last reported. The hub meters by what it reads there (a
//! worker's `finishedAt` ends its usage), so what the status said of a finished pod is
//! never taken back ([`merge_pods`]).

use gpufed_api::Assignment;
use gpufed_api::assignment::AssignedPod;
use kube::ResourceExt;

fn terminal(p: &AssignedPod) -> bool {
    p.phase == "Succeeded" || p.phase == "Failed"
}

/// Pure: the pods to report, from those `previous`ly reported and those `observed` now. A
/// pod (by name: each rank of an attempt has its own) once reported `Succeeded` or
/// `Failed` stays so, as reported, even when a stale list shows it running again or not
/// at all (a finished pod removed since, e.g. by the member's pod garbage collector, still
/// finished then); a known start or finish time is never dropped. Sorted by rank.
pub fn merge_pods(previous: &[AssignedPod], observed: Vec<AssignedPod>) -> Vec<AssignedPod> {
    let mut out: Vec<AssignedPod> = observed
        .into_iter()
        .map(|mut p| match previous.iter().find(|q| q.name == p.name) {
            Some(q) if terminal(q) && !terminal(&p) => q.clone(),
            Some(q) => {
                p.started_at = p.started_at.or(q.started_at);
                p.finished_at = p.finished_at.or(q.finished_at);
                p
            }
            None => p,
        })
        .collect();
    for q in previous.iter().filter(|q| terminal(q)) {
        if !out.iter().any(|p| p.name == q.name) {
            out.push(q.clone());
        }
    }
    out.sort_by(|a, b| (a.rank, &a.name).cmp(&(b.rank, &b.name)));
    out
}

/// Awaits every status write of `writes` (lazy futures, one Assignment each, run in
/// turn), each whatever became of the others: one Assignment the hub will not take a
/// status for (its webhook, a quota of the hub, a transport error on that request) must
/// not keep the others' pods, nor the removal of withdrawn work that follows, from
/// happening. Each failure is logged; the first is returned for the round to report (and
/// the agent to see a rejected identity by it).
pub async fn write_all<F>(writes: Vec<(&Assignment, F)>) -> Option<anyhow::Error>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut first = None;
    for (a, write) in writes {
        if let Err(e) = write.await {
            tracing::warn!(assignment = %a.name_any(), error = %format!("{e:#}"), "status not written; retried next round");
            first.get_or_insert(e);
        }
    }
    first
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(rank: u32, phase: &str, started: Option<i64>, finished: Option<i64>) -> AssignedPod {
        AssignedPod {
            name: format!("w{rank}"),
            rank,
            phase: phase.into(),
            started_at: started,
            finished_at: finished,
            ..Default::default()
        }
    }

    #[test]
    fn a_finished_pod_is_never_reported_running_again() {
        let previous = vec![
            pod(0, "Succeeded", Some(10), Some(90)),
            pod(1, "Failed", Some(10), Some(50)),
            pod(2, "Running", Some(10), None),
        ];
        // A stale list: ranks 0 and 1 still running, rank 2's start not seen yet.
        let stale = vec![
            pod(1, "Running", Some(10), None),
            pod(0, "Running", Some(10), None),
            pod(2, "Pending", None, None),
        ];
        let got = merge_pods(&previous, stale);
        assert_eq!(got[..2], previous[..2], "finished as reported");
        assert_eq!(got[2].phase, "Pending", "no finish: what is seen now");
        assert_eq!(got[2].started_at, Some(10), "a known start stays");
    }

    #[test]
    fn a_known_finish_is_never_dropped() {
        // Finished, but a list without the finished pod (stale or collected since).
        let previous = vec![
            pod(0, "Running", Some(10), None),
            pod(1, "Succeeded", Some(10), Some(80)),
        ];
        let got = merge_pods(&previous, vec![pod(0, "Running", Some(10), None)]);
        assert_eq!(got, previous);
        // Seen finished now, its finish time not read this time.
        let previous = vec![pod(0, "Failed", Some(10), Some(70))];
        let got = merge_pods(&previous, vec![pod(0, "Failed", Some(10), None)]);
        assert_eq!(got[0].finished_at, Some(70));
    }

    #[test]
    fn news_is_taken_as_it_comes() {
        let previous = vec![pod(0, "Running", Some(10), None), pod(1, "Pending", None, None)];
        let now = vec![
            pod(0, "Succeeded", Some(10), Some(99)),
            pod(1, "Running", Some(20), None),
        ];
        assert_eq!(merge_pods(&previous, now.clone()), now);
        // A running pod gone is reported gone: the hub sees the gang's gap.
        assert_eq!(merge_pods(&previous, now[..1].to_vec()), now[..1]);
        assert_eq!(merge_pods(&[], now.clone()), now);
    }

    #[test]
    fn one_status_refused_does_not_keep_the_others_from_being_written() {
        let named = |n: &str| -> Assignment {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "Assignment",
                "metadata": {"name": n},
                "spec": {"tenantNamespace": "gf-x", "jobUid": "u", "attempt": 1,
                         "namespace": {}, "objects": [], "pods": []}
            }))
            .unwrap()
        };
        let (a, b, c) = (named("a"), named("b"), named("c"));
        let written = std::sync::Mutex::new(Vec::new());
        async fn write(log: &std::sync::Mutex<Vec<String>>, a: &Assignment) -> anyhow::Result<()> {
            log.lock().unwrap().push(a.name_any());
            match a.name_any().as_str() {
                "c" => Ok(()),
                n => Err(anyhow::anyhow!("{n} refused")),
            }
        }
        let writes = [&a, &b, &c]
            .into_iter()
            .map(|x| (x, write(&written, x)))
            .collect();
        let first = futures::executor::block_on(write_all(writes));
        assert_eq!(*written.lock().unwrap(), ["a", "b", "c"]);
        assert_eq!(first.unwrap().to_string(), "a refused", "the first failure");
    }
}
