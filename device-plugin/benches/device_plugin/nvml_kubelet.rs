//! The plugin on a GPU node's real inventory, end to end (a GPU machine only): NVML
//! discovery → node labels and a signed inventory report the hub's code verifies →
//! registration with the fake kubelet → ListAndWatch lists every NVML UUID `Healthy` →
//! GetPreferredAllocation + Allocate hand out a UUID (env and CDI name) → the same GPU is
//! refused to a second container → Allocate latency on this inventory → the NVML health
//! loop keeps every GPU healthy while it runs.
//!
//! Prints `NVML kubelet path: ok; …` when every check holds (scripts/gpu-run.sh looks for
//! it), `NVML kubelet path: FAILED: …` otherwise; without a driver, that it was not run,
//! and the result of the same path on the simulated inventory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gpufed_device_plugin::health::HealthPolicy;
use gpufed_device_plugin::inventory::Inventory;
use gpufed_device_plugin::kubelet::{self, KubeletConfig};
use gpufed_device_plugin::labels::node_labels;
use gpufed_device_plugin::nvml::NvmlSource;
use gpufed_device_plugin::report;
use gpufed_device_plugin::service::{AllocateConfig, PluginState};
use gpufed_device_plugin::source::{GpuSource, SimulatedSource};
use gpufed_device_plugin::testing::FakeKubelet;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::common::{HGX, PATIENCE, health_of, next, watch as list_and_watch};

/// Runs the checks where NVML loads; `allocs` Allocate calls are timed. Without a driver
/// the same path runs on the simulated HGX inventory (a dry run of this very code, so the
/// one run a GPU session gets is not its first), and a failure there panics.
pub fn run(rt: &Runtime, allocs: usize) {
    match NvmlSource::open(Duration::from_secs(10)) {
        Ok(s) => match rt.block_on(check(Box::new(s), allocs, true)) {
            Ok(summary) => println!("NVML kubelet path: ok; {summary}"),
            Err(e) => println!("NVML kubelet path: FAILED: {e}"),
        },
        Err(e) => {
            println!("NVML kubelet path: not run here ({e})");
            let sim = SimulatedSource::new(Inventory::from_simulate_str(HGX).expect("HGX fixture"));
            let summary = rt
                .block_on(check(Box::new(sim), allocs, false))
                .unwrap_or_else(|e| panic!("the NVML kubelet path on the simulated inventory: {e}"));
            println!("  the same path on the simulated HGX inventory: {summary}");
        }
    }
}

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `real`: the source is NVML (its inventory must be real, its report count as verified).
async fn check(source: Box<dyn GpuSource>, allocs: usize, real: bool) -> Result<String, String> {
    let inv = source.inventory().clone();
    if inv.simulated == real || inv.gpus.is_empty() {
        return Err(format!("unexpected inventory (real wanted: {real}): {inv:?}"));
    }
    let uuids: Vec<String> = inv.gpus.iter().map(|g| g.uuid.clone()).collect();
    let labels = node_labels(&inv);
    println!(
        "{} node labels: {labels:?}",
        if real { "NVML" } else { "  simulated" }
    );

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let key = report::load_or_create_key(&dir.path().join("node.key")).map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signed = report::sign(report::of_inventory("gpu-node", "hub-nonce-1", now, &inv), &key)
        .map_err(|e| e.to_string())?;
    let verified = report::verify(&signed, "hub-nonce-1", None).map_err(fail("report verify"))?;
    if verified.counts_as_verified() != real || verified.report.gpus.len() != uuids.len() {
        return Err(format!(
            "signed report does not carry the inventory's GPUs: {verified:?}"
        ));
    }
    if report::verify(&signed, "another-nonce", None).is_ok() {
        return Err("a report verified against another nonce".into());
    }

    let mut fake = FakeKubelet::start(dir.path()).await.map_err(|e| e.to_string())?;
    let state = PluginState::new(inv.clone(), HealthPolicy::default(), AllocateConfig::default());
    let (stop, stop_rx) = watch::channel(false);
    let health = state.spawn_health_loop(source, Duration::from_millis(500), stop_rx.clone());
    let mut cfg = KubeletConfig::new(dir.path(), "gpufed.io/gpu");
    cfg.pod_resources_socket = Some(fake.pod_resources_socket());
    let plugin = tokio::spawn(kubelet::run(cfg, state.clone(), stop_rx));
    let outcome = async {
        let reg = fake.next_registration(PATIENCE).await.map_err(|e| e.to_string())?;
        let mut client = fake.plugin_client(&reg).await.map_err(|e| e.to_string())?;
        let mut stream = list_and_watch(&mut client).await;
        let devices = next(&mut stream).await;
        for u in &uuids {
            if health_of(&devices, u) != "Healthy" {
                return Err(format!("ListAndWatch does not list {u} Healthy: {devices:?}"));
            }
        }
        let (ids, resp) = client
            .allocate_preferred("pod-a", "main", 1, &uuids)
            .await
            .map_err(|e| format!("Allocate: {e}"))?;
        let c = resp.container_responses.first().ok_or("Allocate: no container response")?;
        let env = c.envs.get("NVIDIA_VISIBLE_DEVICES").cloned().unwrap_or_default();
        let cdi: Vec<&str> = c.cdi_devices.iter().map(|d| d.name.as_str()).collect();
        if ids.len() != 1 || env != ids[0] || cdi != [format!("nvidia.com/gpu={}", ids[0])] {
            return Err(format!("Allocate gave {ids:?}, env {env:?}, CDI {cdi:?}"));
        }
        let refused = match client.allocate("pod-b", "main", &ids).await {
            Ok(r) => return Err(format!("{} handed to a second container: {r:?}", ids[0])),
            Err(status) => format!("{:?}", status.code()),
        };
        client.remove_pod("pod-a");
        state.release(&ids);
        let mut lat = Vec::with_capacity(allocs);
        for i in 0..allocs {
            let id = [uuids[i % uuids.len()].clone()];
            let t = std::time::Instant::now();
            client
                .client
                .allocate(allocate_request(&id))
                .await
                .map_err(|e| format!("Allocate {i}: {e}"))?;
            lat.push(t.elapsed());
            state.release(&id);
        }
        lat.sort();
        let p99 = lat.get((lat.len().saturating_sub(1)) * 99 / 100).copied().unwrap_or_default();
        // The NVML health loop on the idle GPU: no message means no change (healthy).
        let quiet = Duration::from_secs(if real { 5 } else { 1 });
        if let Ok(Ok(Some(msg))) = tokio::time::timeout(quiet, stream.message()).await {
            let sick: Vec<_> = msg.devices.iter().filter(|d| d.health != "Healthy").collect();
            if !sick.is_empty() {
                return Err(format!("GPU turned unhealthy on an idle node: {sick:?}"));
            }
        }
        Ok(format!(
            "{} GPU(s) registered as {}; Allocate gave {} (env + CDI); a second container was refused ({refused}); Allocate over gRPC p99 {p99:?} (n={allocs}); all healthy after {quiet:?} of health polling",
            uuids.len(),
            reg.resource_name,
            ids[0],
        ))
    }
    .await;
    let _ = stop.send(true);
    let _ = plugin.await;
    let _ = tokio::task::spawn_blocking(move || health.join()).await;
    fake.stop().await;
    outcome
}

fn allocate_request(ids: &[String]) -> gpufed_device_plugin::proto::AllocateRequest {
    use gpufed_device_plugin::proto::{AllocateRequest, ContainerAllocateRequest};
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.to_vec(),
        }],
    }
}
