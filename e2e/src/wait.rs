//! Polling helpers for tests: wait until something holds in the API, with a timeout.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use kube::Api;

use crate::{Error, Result};

/// Polls `probe` every 200 ms until it returns `Some`, or fails with [`Error::Timeout`]
/// (naming the last probe error, if any).
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e.to_string()),
        }
        if Instant::now() >= deadline {
            let what = match last_error {
                Some(e) => format!("{what} (last error: {e})"),
                None => what.to_owned(),
            };
            return Err(Error::Timeout {
                what,
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The pod's phase (`Pending` when unset).
pub fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into())
}

/// Waits until the pod reaches `want` (e.g. `Running`, `Succeeded`, `Failed`).
/// On a timeout the error tells where the pod was instead (phase, node, conditions).
pub async fn pod_phase(api: &Api<Pod>, name: &str, want: &str, timeout: Duration) -> Result<Pod> {
    let result = until(&format!("pod {name} to be {want}"), timeout, || async {
        let pod = api.get(name).await?;
        Ok((phase(&pod) == want).then_some(pod))
    })
    .await;
    match result {
        Err(Error::Timeout { what, seconds }) => {
            let seen = match api.get_opt(name).await {
                Ok(Some(pod)) => describe(&pod),
                Ok(None) => "gone".to_owned(),
                Err(e) => format!("unknown ({e})"),
            };
            Err(Error::Timeout {
                what: format!("{what}; it is {seen}"),
                seconds,
            })
        }
        other => other,
    }
}

/// One line on where a pod stands: phase, node, and each condition with its reason.
pub fn describe(pod: &Pod) -> String {
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("-");
    let conditions: Vec<String> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let mut line = format!("{}={}", c.type_, c.status);
                    if let Some(reason) = &c.reason {
                        line.push_str(&format!(" ({reason}"));
                        if let Some(message) = &c.message {
                            line.push_str(&format!(": {message}"));
                        }
                        line.push(')');
                    }
                    line
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{} on node {node} [{}]", phase(pod), conditions.join(", "))
}

/// Waits until the scheduler reports the pod unschedulable and returns the PodScheduled
/// condition's message (e.g. `0/3 nodes are available: 3 Insufficient gpufed.io/gpu.`).
pub async fn pod_unschedulable(api: &Api<Pod>, name: &str, timeout: Duration) -> Result<String> {
    until(
        &format!("pod {name} to be reported Unschedulable"),
        timeout,
        || async {
            let pod = api.get(name).await?;
            Ok(pod_condition(&pod, "PodScheduled")
                .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                .map(|c| c.message.clone().unwrap_or_default()))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_phase_node_and_each_condition_with_its_reason() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [], "nodeName": "h100-1" },
            "status": { "phase": "Pending", "conditions": [
                { "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                  "message": "0/2 nodes are available" },
                { "type": "Ready", "status": "False" },
            ] },
        }))
        .expect("pod");
        assert_eq!(
            describe(&pod),
            "Pending on node h100-1 [PodScheduled=False (Unschedulable: 0/2 nodes are available), Ready=False]"
        );
        let bare: Pod =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": "q" } })).expect("pod");
        assert_eq!(describe(&bare), "Pending on node - []");
    }
}
