//! Compute-challenge calibration on real GPUs: how long this machine's GPUs take for a
//! challenge shape, checked against the CPU reference, and the band that follows
//! (docs/trust.md, "Setting a band").
//!
//! Run: `cargo bench -p gpufed-device-plugin --bench challenge_gpu`
//! (`GPUFED_CHALLENGE_SHAPE=ROWSxDEPTHxCOLS`, default `4096x1024x4096`;
//! `GPUFED_CHALLENGE_ARITH=u32|f64`, default `u32`; `GPUFED_CHALLENGE_RUNS`, default 50).
//! Each GPU is measured idle, then under load (`GPUFED_CHALLENGE_LOAD=0` skips that).
//! On a machine without the CUDA driver it says so and measures nothing; under
//! `cargo test --all-targets` it runs 2 runs of a small shape, idle only.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gpufed_device_plugin::cuda::CudaRunner;
use gpufed_device_plugin::executor::{DeviceRunner, Executor, block_rows, run_blocks};
use gpufed_trust::workload::{self, Arith, Params};

fn shape(bench: bool) -> Params {
    let text = std::env::var("GPUFED_CHALLENGE_SHAPE")
        .unwrap_or_else(|_| if bench { "4096x1024x4096" } else { "256x64x256" }.to_owned());
    let dims: Vec<u32> = text
        .split('x')
        .map(|d| d.trim().parse().expect("GPUFED_CHALLENGE_SHAPE: ROWSxDEPTHxCOLS"))
        .collect();
    assert_eq!(
        dims.len(),
        3,
        "GPUFED_CHALLENGE_SHAPE: ROWSxDEPTHxCOLS, got {text}"
    );
    let arith = match std::env::var("GPUFED_CHALLENGE_ARITH").as_deref() {
        Ok("f64") => Arith::F64,
        Ok("u32") | Err(_) => Arith::U32,
        Ok(other) => panic!("GPUFED_CHALLENGE_ARITH: u32 or f64, got {other}"),
    };
    // 24 samples, fewer where the proofs would outgrow a report (tall shapes).
    let levels = dims[0].max(1).next_power_of_two().trailing_zeros().max(1);
    let most = u32::try_from(gpufed_trust::bands::MAX_PROOF_HASHES / u64::from(levels)).unwrap_or(24);
    let p = Params {
        arith,
        ..Params::u32(dims[0], dims[1], dims[2], 24.min(dims[0]).min(most))
    };
    p.validate().expect("GPUFED_CHALLENGE_SHAPE");
    p
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !gpufed_cuda::driver_present() {
        println!(
            "challenge_gpu: no CUDA driver library (libcuda.so.1) on this machine: nothing to calibrate"
        );
        return;
    }
    let p = shape(bench);
    let runs: usize = if bench {
        std::env::var("GPUFED_CHALLENGE_RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(50)
    } else {
        2
    };
    let uuids = gpufed_cuda::Gpu::uuids().expect("listing CUDA devices");
    println!(
        "challenge_gpu: {} GPU(s); shape {}x{}x{} {} ({} multiply-adds), {runs} runs each",
        uuids.len(),
        p.rows,
        p.depth,
        p.cols,
        p.arith.as_str(),
        p.node_ops()
    );
    // Under load: the same runs while another context on the same GPU runs the product
    // kernel back to back (a stand-in for a training job sharing the card; without MPS the
    // driver time-slices the two contexts, as it would a job's). docs/trust.md, "Setting a
    // band", step 1: the band's maximum comes from the slowest loaded time.
    let load = bench && std::env::var("GPUFED_CHALLENGE_LOAD").as_deref() != Ok("0");
    for uuid in &uuids {
        let name = gpufed_cuda::Gpu::by_uuid(uuid)
            .map(|g| g.name().to_owned())
            .unwrap_or_default();
        let idle = measure(uuid, &p, runs, "calibrate");
        // The whole answer path as the plugin runs it (context, row blocks, copies, hashing).
        let executor = Executor::Device(Box::new(CudaRunner));
        let t = Instant::now();
        let computed = executor
            .compute("calibrate-answer", uuid, &p)
            .expect("the executor answers");
        let answer_time = t.elapsed();
        println!(
            "  {uuid} ({name}): idle device time {}; with copies and self-check median {:?}; whole answer (self-check, hashing) {answer_time:?}, root {}",
            idle.summary(),
            idle.whole[idle.whole.len() / 2],
            computed.commit().root
        );
        let loaded = load.then(|| {
            let (stop, handle) = start_load(uuid, p);
            let m = measure(uuid, &p, runs, "calibrate-loaded");
            stop.store(true, Ordering::SeqCst);
            let iterations = handle.join().expect("the load thread");
            println!(
                "  {uuid} ({name}): loaded device time {} (beside {iterations} load kernels of 2x the rows)",
                m.summary()
            );
            m
        });
        // The minimum is the physical floor of the card's fastest path, never our kernel's
        // time: a provider with a faster honest kernel must not look `ImpossiblyFast`.
        let peak = std::env::var("GPUFED_PEAK_MACS_PER_SEC")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| gpufed_trust::bands::h100_peak(p.arith));
        let floor = gpufed_trust::bands::physical_floor_micros(&p, peak);
        println!(
            "  our kernel vs the physical floor ({peak:.3e} {} MAC/s, GPUFED_PEAK_MACS_PER_SEC): {:.1}x",
            p.arith.as_str(),
            idle.fastest().as_micros() as f64 / floor.max(1) as f64
        );
        let slowest = loaded
            .as_ref()
            .map_or(idle.slowest(), |l| l.slowest().max(idle.slowest()));
        println!(
            "  suggested band ({}):\n  - model: {name}\n    params: {{rows: {}, depth: {}, cols: {}, samples: {}, arith: {}}}\n    minKernelMicros: {}\n    maxKernelMicros: {}",
            if loaded.is_some() {
                "max: 1.5 x the slowest time, idle or loaded"
            } else {
                "idle only: repeat under load before adopting"
            },
            p.rows,
            p.depth,
            p.cols,
            p.samples,
            p.arith.as_str(),
            floor.max(1),
            (slowest.as_micros() as f64 * 1.5) as u64
        );
        // docs/trust.md, "What the hub's clock proves": the slack must cover the whole
        // answer beyond the device time (copies, hashing) plus the hub's poll and API
        // latency; what a passing node then proves, at a 3 s slack.
        let band = gpufed_trust::Band {
            model: name.clone(),
            params: p,
            min_kernel_micros: floor.max(1),
            max_kernel_micros: (slowest.as_micros() as f64 * 1.5) as u64,
            round_trip_slack_ms: 3000,
        };
        println!(
            "  hub's clock at roundTripSlackMs 3000: at least {:.3e} {} MAC/s proven, {:.0}% of the band's rate (whole answer beyond device time: {:?})",
            band.proven_rate(),
            p.arith.as_str(),
            band.clock_share() * 100.0,
            answer_time.saturating_sub(idle.device[idle.device.len() / 2])
        );
    }
}

/// Device times (CUDA events) and whole-call times of the measured runs.
struct Measured {
    device: Vec<Duration>,
    whole: Vec<Duration>,
}

impl Measured {
    fn fastest(&self) -> Duration {
        self.device[0]
    }

    fn slowest(&self) -> Duration {
        self.device[self.device.len() - 1]
    }

    fn summary(&self) -> String {
        format!(
            "min {:?} median {:?} max {:?}",
            self.fastest(),
            self.device[self.device.len() / 2],
            self.slowest()
        )
    }
}

/// `runs` runs after a warm-up. The warm-up is checked in full against the CPU reference
/// (every row's leaf) when that is affordable here; every run passes the node's own
/// self-check.
fn measure(uuid: &str, p: &Params, runs: usize, nonce_prefix: &str) -> Measured {
    let full = p.node_ops() <= 1 << 36;
    let block = block_rows(p).expect("the shape fits the device executor");
    let runner = CudaRunner;
    let mut gpu = runner.open(uuid).expect("the GPU opens");
    let (mut device, mut whole) = (Vec::new(), Vec::new());
    for run in 0..=runs {
        let seeds = workload::seeds(&format!("{nonce_prefix}-{run}"), uuid);
        let t = Instant::now();
        let mut leaves = Vec::new();
        // Row blocks as the plugin runs them, each self-checked against the CPU reference.
        let micros = run_blocks(gpu.as_mut(), p, &seeds, block, |i, row| {
            if run == 0 && full {
                leaves.push(workload::leaf(i, row));
            }
        })
        .expect("the GPU runs the workload and passes the self-check");
        let product_time = t.elapsed();
        if run == 0 && full {
            let cpu = all_leaves_parallel(p, &seeds);
            assert_eq!(leaves, cpu, "every row equals the CPU reference");
            println!(
                "  {uuid}: all {} rows equal the CPU reference ({nonce_prefix})",
                p.rows
            );
        }
        if run == 0 {
            continue; // warm-up (module load, clocks)
        }
        device.push(Duration::from_micros(micros));
        whole.push(product_time);
    }
    device.sort();
    whole.sort();
    Measured { device, whole }
}

/// Runs the product kernel (twice the rows of `p`, at most one row block) back to back in a context of its own
/// on the GPU `uuid` until stopped; returns once the first one finished, so the
/// measurement starts under load. The thread answers how many it ran.
fn start_load(uuid: &str, p: Params) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (uuid, flag) = (uuid.to_owned(), stop.clone());
    let handle = std::thread::spawn(move || {
        let gpu = gpufed_cuda::Gpu::by_uuid(&uuid).expect("a context for the load");
        let block = block_rows(&p).expect("the shape fits the device executor");
        let shape = [p.rows.saturating_mul(2).min(block), p.depth, p.cols];
        let mut n = 0u64;
        while !flag.load(Ordering::SeqCst) {
            let seeds = [n, n ^ 0x5555];
            let ok = match p.arith {
                Arith::U32 => gpu.product(seeds, shape).is_ok(),
                Arith::F64 => gpu.product_f64(seeds, shape).is_ok(),
            };
            assert!(ok, "the load kernel runs");
            n += 1;
            if n == 1 {
                let _ = started_tx.send(());
            }
        }
        n
    });
    started_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the load started");
    (stop, handle)
}

/// Every row's leaf on the CPU, on all cores (the GPU machine has 16; a 4096x1024x4096
/// f64 check is about 1.7e10 fused multiply-adds).
fn all_leaves_parallel(p: &Params, seeds: &workload::Seeds) -> Vec<gpufed_trust::Hash32> {
    let b = workload::matrix_b(p, seeds);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let chunk = p.rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                let b = &b;
                scope.spawn(move || {
                    let rows = t * chunk..((t + 1) * chunk).min(p.rows);
                    rows.map(|i| workload::leaf(i, workload::row(p, seeds, b, i).as_row()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("a CPU reference thread"))
            .collect()
    })
}
