//! Device-plugin benchmarks (std::time, no harness): Allocate latency over the gRPC
//! socket, health change → ListAndWatch latency, simulate-mode polling cost, and — where
//! NVML loads (a GPU machine) — what it discovers and the NVML health loop's CPU cost.
//!
//! Run: `cargo bench -p gpufed-device-plugin --bench device_plugin`. Under `cargo test
//! --all-targets` (no `--bench` argument) it runs a small smoke version instead.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "device_plugin/nvml_kubelet.rs"]
mod nvml_kubelet;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use gpufed_device_plugin::health::{Fault, FaultKind};
use gpufed_device_plugin::source::{GpuSource, SimulatedSource};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: n={} p50={:?} p99={:?} max={:?}",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        v[v.len() - 1]
    );
}

/// The plugin (and fake kubelet) run on `server` (2 worker threads, as in the binary); the
/// client, like kubelet, runs elsewhere: a current-thread runtime on the bench thread.
fn allocate_latency(server: &tokio::runtime::Runtime, n: usize) {
    use gpufed_device_plugin::proto::{AllocateRequest, ContainerAllocateRequest};
    let dir = tempfile::tempdir().unwrap();
    let r = server.block_on(start(dir.path(), Duration::from_secs(300)));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reg = r.kubelet.registrations()[0].clone();
    let mut client = client_rt.block_on(r.kubelet.plugin_client(&reg)).unwrap();
    let req = |i: usize| AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![gpu(i % 8)],
        }],
    };
    let mut lat = Vec::new();
    for i in 0..n + 200 {
        let t = Instant::now();
        client_rt.block_on(client.client.allocate(req(i))).unwrap();
        if i >= 200 {
            lat.push(t.elapsed()); // first 200 are warm-up
        }
        r.state.release(&[gpu(i % 8)]);
    }
    report("Allocate (1 GPU, gRPC over UDS, client-side)", lat);
    // The plugin's own share: the same decision without gRPC.
    let mut own = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        r.state.allocate(&req(i)).unwrap();
        own.push(t.elapsed());
        r.state.release(&[gpu(i % 8)]);
    }
    report("Allocate decision alone (PluginState::allocate, no gRPC)", own);
    // The client's connection lives on client_rt: drop both so the plugin's graceful
    // shutdown sees the connection close.
    drop(client);
    drop(client_rt);
    server.block_on(shutdown(r));
}

async fn health_latency(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_millis(100)).await;
    let mut s = watch(&mut r.client).await;
    next(&mut s).await;
    let mut lat = Vec::new();
    for round in 0..rounds {
        let id = gpu(round % 8);
        let t = Instant::now();
        // 74 (NVLink error) clears after the probation alone; 79 would wait for a reset
        // (and so, on real hardware, would 94 through the ECC count it raises).
        r.faults.inject(Fault {
            uuid: id.clone(),
            kind: FaultKind::Xid(74),
        });
        loop {
            let d = next(&mut s).await;
            if health_of(&d, &id) == "Unhealthy" {
                lat.push(t.elapsed());
                break;
            }
        }
        while health_of(&next(&mut s).await, &id) != "Healthy" {}
    }
    report(
        "fault injected → ListAndWatch Unhealthy (in-process injector)",
        lat,
    );
    shutdown(r).await;
}

async fn file_fault_latency(gpus: usize) {
    // The production path for simulate nodes: a fault appended to the file, picked up by
    // the health loop (500 ms poll, the binary's default) and streamed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inv.yaml");
    std::fs::write(
        &path,
        HGX.replace("faults: []", "faults:\n  - {uuid: GPU-none, xid: 13}"),
    )
    .unwrap();
    let kubelet = gpufed_device_plugin::testing::FakeKubelet::start(dir.path())
        .await
        .unwrap();
    let source = SimulatedSource::from_file(&path).unwrap();
    let state = gpufed_device_plugin::service::PluginState::new(
        source.inventory().clone(),
        gpufed_device_plugin::health::HealthPolicy::default(),
        Default::default(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let health = state.spawn_health_loop(Box::new(source), Duration::from_millis(500), stop_rx);
    let mut rx = state.subscribe();
    let mut lat = Vec::new();
    for i in 0..gpus {
        let id = gpu(i);
        // mtime granularity: make sure the file visibly changes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "  - {{uuid: {id}, xid: 79}}").unwrap();
        drop(f);
        loop {
            tokio::time::timeout(PATIENCE, rx.changed())
                .await
                .unwrap()
                .unwrap();
            if health_of(&rx.borrow(), &id) == "Unhealthy" {
                break;
            }
        }
        lat.push(t.elapsed());
    }
    report(
        "fault appended to --simulate file → ListAndWatch list (500 ms poll)",
        lat,
    );
    stop.send(true).unwrap();
    health.join().unwrap();
    kubelet.stop().await;
}

fn simulate_poll_cost(n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inv.yaml");
    std::fs::write(&path, HGX).unwrap();
    let mut s = SimulatedSource::from_file(&path).unwrap();
    s.poll(Duration::ZERO).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        s.poll(Duration::ZERO).unwrap();
    }
    let per = t.elapsed() / n;
    let share = per.as_secs_f64() * 2.0 * 100.0; // two polls per second at --poll-ms 500
    println!("simulate poll (unchanged file): {per:?} per poll ⇒ {share:.4}% of one core at 2 polls/s");
}

/// CPU time this thread has used (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        text.split_whitespace().next()?.parse().ok()?,
    ))
}

/// The binary's health loop on real GPUs: `poll(500 ms)` (NVML event wait) with the ECC
/// counters read every 10 s, for `secs`; its CPU time over wall time is the cost on a node.
fn nvml_poll_cost(secs: u64) {
    use gpufed_device_plugin::nvml::NvmlSource;
    let mut s = match NvmlSource::open(Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            println!("NVML poll cost: not measured here ({e})");
            return;
        }
    };
    let inv = s.inventory();
    println!(
        "NVML: {} GPU(s), driver {}, CUDA {}: {}",
        inv.gpus.len(),
        inv.driver_version,
        inv.cuda_version,
        inv.gpus
            .iter()
            .map(|g| format!(
                "{} {} {} MiB cc {} board serial {}",
                g.uuid,
                g.name,
                g.memory_mib,
                g.compute_capability,
                g.serial.as_deref().unwrap_or("none")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let (Some(cpu0), wall0) = (thread_cpu(), Instant::now()) else {
        println!("NVML poll cost: /proc/thread-self/schedstat unreadable");
        return;
    };
    let events_at_start = s.events_registered();
    let mut polls = 0u32;
    let mut faults = 0usize;
    while wall0.elapsed() < Duration::from_secs(secs) {
        match s.poll(Duration::from_millis(500)) {
            Ok(f) => faults += f.len(),
            Err(e) => println!("NVML poll failed: {e}"),
        }
        polls += 1;
    }
    let events = match (events_at_start, s.events_registered()) {
        (true, true) => "XID/ECC events registered",
        (true, false) => "events dropped after a failed wait: counters only",
        (false, _) => "no NVML events: counters only",
    };
    let cpu = thread_cpu().unwrap_or(cpu0) - cpu0;
    let wall = wall0.elapsed();
    println!(
        "NVML poll cost: {polls} polls (500 ms wait, ECC every 10 s) in {wall:?} used {cpu:?} CPU ⇒ {:.4}% of one core; {faults} faults seen; {events}",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let full = std::env::args().any(|a| a == "--bench");
    let (allocs, rounds, file_rounds, polls) = if full {
        (5000, 40, 8, 20_000)
    } else {
        (50, 2, 1, 100)
    };
    allocate_latency(&rt, allocs);
    rt.block_on(health_latency(rounds));
    rt.block_on(file_fault_latency(file_rounds));
    simulate_poll_cost(polls);
    nvml_poll_cost(if full { 60 } else { 2 });
    nvml_kubelet::run(&rt, if full { 2000 } else { 20 });
}
