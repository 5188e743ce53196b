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
pub async fn pod_phase(api: &Api<Pod>, name: &str, want: &str, timeout: Duration) -> Result<Pod> {
    until(&format!("pod {name} to be {want}"), timeout, || async {
        let pod = api.get(name).await?;
        Ok((phase(&pod) == want).then_some(pod))
    })
    .await
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
