//! Seeded synthetic fleets and workloads for the benchmark and the simulator.
//!
//! Shapes follow published GPU-cluster traces (Philly, Helios, Alibaba PAI): most jobs
//! want one GPU, a heavy tail wants 8–64 GPU gangs, and durations are log-normal with a
//! long tail. Everything comes from one seeded PRNG, so a seed is a trace.

use std::collections::BTreeMap;

use crate::snapshot::{ComputeCapability, Interconnect, Job, MICROS_PER_UNIT, Micros, Node, Provider};

/// A small, fast, seeded PRNG (xoshiro256**, seeded by splitmix64).
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Picks an index by weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut r = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if r < u64::from(w) {
                return i;
            }
            r -= u64::from(w);
        }
        weights.len().saturating_sub(1)
    }
}

/// A GPU model of the synthetic catalogue.
struct Model {
    name: &'static str,
    vram_mib: u32,
    compute: ComputeCapability,
    gpus: u8,
    nvlink: bool,
    ask: Micros,
    weight: u32,
}

const fn cc(major: u8, minor: u8) -> ComputeCapability {
    ComputeCapability::new(major, minor)
}

const CATALOGUE: [Model; 5] = [
    Model {
        name: "H100-SXM-80GB",
        vram_mib: 81_920,
        compute: cc(9, 0),
        gpus: 8,
        nvlink: true,
        ask: 2_500_000,
        weight: 3,
    },
    Model {
        name: "A100-SXM-80GB",
        vram_mib: 81_920,
        compute: cc(8, 0),
        gpus: 8,
        nvlink: true,
        ask: 1_600_000,
        weight: 3,
    },
    Model {
        name: "A100-PCIE-40GB",
        vram_mib: 40_960,
        compute: cc(8, 0),
        gpus: 4,
        nvlink: false,
        ask: 1_100_000,
        weight: 2,
    },
    Model {
        name: "L40S",
        vram_mib: 46_080,
        compute: cc(8, 9),
        gpus: 4,
        nvlink: false,
        ask: 900_000,
        weight: 2,
    },
    Model {
        name: "RTX-4090",
        vram_mib: 24_576,
        compute: cc(8, 9),
        gpus: 2,
        nvlink: false,
        ask: 350_000,
        weight: 2,
    },
];

/// Names of the synthetic GPU models.
pub fn model_names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|m| m.name).collect()
}

/// Regions of the synthetic fleet.
pub const REGIONS: [&str; 4] = ["eu-west", "eu-north", "us-east", "ap-south"];

/// A fleet of `providers` providers with about `nodes` nodes in all, all GPUs free.
pub fn fleet(rng: &mut Rng, providers: usize, nodes: usize) -> Vec<Provider> {
    let weights: Vec<u32> = CATALOGUE.iter().map(|m| m.weight).collect();
    let per = (nodes / providers.max(1)).max(1);
    (0..providers)
        .map(|i| {
            let count = per / 2 + usize::try_from(rng.below(per as u64 + 1)).unwrap_or(0);
            let kinds: Vec<usize> = (0..1 + rng.below(2)).map(|_| rng.weighted(&weights)).collect();
            let nvl72 = rng.below(5) == 0;
            let mut prices = BTreeMap::new();
            for &k in &kinds {
                let m = &CATALOGUE[k];
                prices.insert(m.name.to_string(), m.ask * (80 + rng.below(41)) / 100);
            }
            let nodes = (0..count)
                .map(|n| {
                    let m = &CATALOGUE[kinds[n % kinds.len()]];
                    let nn = u32::try_from(n).unwrap_or(u32::MAX);
                    let domain = m.nvlink.then_some(if nvl72 { nn / 9 } else { nn });
                    Node::new(
                        format!("node-{n:04}"),
                        m.name,
                        m.vram_mib,
                        m.compute,
                        domain,
                        m.gpus,
                    )
                })
                .collect();
            Provider {
                id: format!("prov-{i:03}"),
                region: REGIONS[i % REGIONS.len()].into(),
                healthy: true,
                verified: rng.below(10) < 8,
                reputation: 0.5 + rng.unit() * 0.5,
                prices,
                nodes,
                tenants: None,
            }
        })
        .collect()
}

/// A job and how long it runs, in seconds.
#[derive(Clone, Debug)]
pub struct TraceJob {
    /// The job.
    pub job: Job,
    /// Run time once placed, in seconds.
    pub duration: u64,
}

/// Draws one job submitted at `now` (seconds), with `namespaces` tenants.
pub fn job(rng: &mut Rng, id: usize, now: u64, namespaces: usize) -> TraceJob {
    // (gpus per worker, workers) with weights: mostly 1 GPU, a heavy tail of gangs.
    const SHAPES: [(u8, u16, u32); 8] = [
        (1, 1, 700),
        (2, 1, 80),
        (4, 1, 70),
        (8, 1, 80),
        (8, 2, 35),
        (8, 4, 20),
        (8, 8, 10),
        (1, 4, 5),
    ];
    let (g, w, _) = SHAPES[rng.weighted(&SHAPES.map(|s| s.2))];
    let total = u32::from(g) * u32::from(w);
    let ns = (rng.unit().powi(2) * namespaces as f64) as usize;
    let mut job = Job {
        id: format!("job-{id:07}"),
        namespace: format!("team-{ns:02}"),
        priority: if rng.below(10) == 0 { 1 } else { 0 },
        submit_time: now,
        gpus_per_worker: g,
        workers: w,
        ..Job::default()
    };
    if total >= 8 {
        job.min_vram_mib = 81_920;
        job.interconnect = if total >= 32 && rng.below(3) == 0 {
            Interconnect::NvlinkGang
        } else {
            Interconnect::NvlinkWorker
        };
    } else if rng.below(3) == 0 {
        job.min_vram_mib = 40_960;
    }
    if rng.below(4) == 0 {
        job.max_price = Some((1 + rng.below(3)) * MICROS_PER_UNIT);
    }
    if rng.below(5) == 0 {
        job.min_compute = ComputeCapability::new(8, 9);
    }
    if rng.below(10) == 0 {
        job.regions = vec![REGIONS[usize::try_from(rng.below(4)).unwrap_or(0)].into()];
    }
    // Log-normal run time, median 20 min for 1 GPU, longer for gangs; capped at a week.
    let median = 1200.0 * (1.0 + f64::from(total).log2());
    let duration = (median * (1.6 * rng.normal()).exp()).clamp(30.0, 7.0 * 86_400.0) as u64;
    TraceJob { job, duration }
}
