//! gpufed's GPU executor for the hub's compute challenge (docs/trust.md).
//!
//! The challenge workload is a matrix product (wrapping u32, or in-order binary64 fused
//! multiply-adds) whose inputs come from a nonce-seeded stream (`gpufed_trust::workload`). This crate runs it on an NVIDIA GPU
//! through the CUDA **driver** API, loaded at run time (`libcuda.so.1` comes with the
//! driver, so a node needs no toolkit and the binary still starts where there is none).
//! It returns C and the device time; hashing rows, committing and opening stay in the
//! pure `gpufed-trust` crate, and the device plugin checks sampled rows on the CPU before
//! it answers (`device-plugin/src/challenge.rs`).
//!
//! Device time is measured with CUDA events around the two kernels (generate A and B,
//! multiply), so it excludes allocation, copies and hashing — the part a band bounds.

pub mod ptx;

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

/// Why the GPU executor cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// `libcuda.so` could not be loaded: no NVIDIA driver on this machine.
    #[error("the CUDA driver library (libcuda.so.1) is not installed: no GPU executor")]
    NoDriver,
    /// A driver call failed.
    #[error("CUDA {what}: {source}")]
    Driver {
        /// The operation.
        what: &'static str,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
    /// No CUDA device has this UUID.
    #[error("no CUDA device has UUID {0}")]
    UnknownGpu(String),
    /// The shape does not fit the kernels' limits.
    #[error("challenge shape {0}")]
    Shape(String),
}

fn driver(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
    move |source| CudaError::Driver { what, source }
}

/// Whether the driver library can be loaded (cudarc panics on first use otherwise).
pub fn driver_present() -> bool {
    // SAFETY: loads libcuda through libloading and checks for it; no CUDA call is made.
    #[allow(unsafe_code)]
    unsafe {
        cudarc::driver::sys::is_culib_present()
    }
}

/// NVML's spelling of a CUDA device UUID: `GPU-` and the 16 bytes as 8-4-4-4-12 hex.
pub fn nvml_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The kernels' launch shapes for a `rows × depth × cols` product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Threads per block of the generator (1-D).
    pub gen_block: u32,
    /// Blocks of the generator for `n` elements (grid-stride, capped).
    pub gen_grid_cap: u32,
    /// Threads per block of the product: `(16, 16)`.
    pub mm_block: (u32, u32),
    /// Blocks of the product: `(⌈cols/16⌉, ⌈rows/16⌉)`.
    pub mm_grid: (u32, u32),
}

/// Largest grid y-dimension CUDA allows.
const MAX_GRID_Y: u32 = 65_535;

impl Geometry {
    /// The launch shapes, or why the product cannot run.
    pub fn for_shape(rows: u32, depth: u32, cols: u32) -> Result<Self, CudaError> {
        if rows == 0 || depth == 0 || cols == 0 {
            return Err(CudaError::Shape(format!(
                "{rows}×{depth}×{cols} has an empty dimension"
            )));
        }
        let mm_grid = (cols.div_ceil(16), rows.div_ceil(16));
        if mm_grid.1 > MAX_GRID_Y {
            return Err(CudaError::Shape(format!(
                "rows {rows} exceed {}",
                MAX_GRID_Y * 16
            )));
        }
        Ok(Self {
            gen_block: 256,
            gen_grid_cap: 1 << 16,
            mm_block: (16, 16),
            mm_grid,
        })
    }

    /// Generator blocks for `n` elements.
    pub fn gen_grid(&self, n: u64) -> u32 {
        let blocks = n.div_ceil(u64::from(self.gen_block));
        u32::try_from(blocks.min(u64::from(self.gen_grid_cap))).unwrap_or(self.gen_grid_cap)
    }
}

/// What one run produced: `Product<u32>` for a `u32` challenge, `Product<u64>` (binary64
/// bit patterns) for an `f64` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product<T = u32> {
    /// C, row-major (`rows × cols`).
    pub c: Vec<T>,
    /// Device time of both kernels.
    pub device_time: Duration,
}

/// One GPU, with the challenge module loaded.
pub struct Gpu {
    uuid: String,
    name: String,
    stream: Arc<CudaStream>,
    u32_kernels: Kernels,
    f64_kernels: Kernels,
}

/// One arithmetic's pair of kernels.
struct Kernels {
    generate: CudaFunction,
    matmul: CudaFunction,
    /// Bytes per element the pair reads and writes.
    element_bytes: usize,
}

impl Kernels {
    fn load(
        module: &Arc<cudarc::driver::CudaModule>,
        generator: &str,
        matmul: &str,
        element_bytes: usize,
    ) -> Result<Self, CudaError> {
        Ok(Self {
            element_bytes,
            generate: module
                .load_function(generator)
                .map_err(driver("finding a generator kernel"))?,
            matmul: module
                .load_function(matmul)
                .map_err(driver("finding a product kernel"))?,
        })
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("uuid", &self.uuid)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// The NVML-style UUID of every CUDA device, by ordinal. Creates no context (a context
    /// costs device memory that running jobs may need).
    pub fn uuids() -> Result<Vec<String>, CudaError> {
        use cudarc::driver::result;
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        result::init().map_err(driver("initialising the driver"))?;
        let n = result::device::get_count().map_err(driver("counting devices"))?;
        (0..n)
            .map(|ordinal| {
                let dev = result::device::get(ordinal).map_err(driver("opening a device"))?;
                let raw = result::device::get_uuid(dev).map_err(driver("reading a device UUID"))?;
                Ok(nvml_uuid(&raw.bytes.map(|b| b as u8)))
            })
            .collect()
    }

    /// Every CUDA device of this machine, each with a context and the module loaded.
    pub fn all() -> Result<Vec<Gpu>, CudaError> {
        let n = Self::uuids()?.len();
        (0..n).map(Self::open).collect()
    }

    /// The device whose UUID NVML reports as `uuid` (only its context is created).
    pub fn by_uuid(uuid: &str) -> Result<Gpu, CudaError> {
        let ordinal = Self::uuids()?
            .iter()
            .position(|u| u.eq_ignore_ascii_case(uuid))
            .ok_or_else(|| CudaError::UnknownGpu(uuid.to_owned()))?;
        Self::open(ordinal)
    }

    fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        let ctx = CudaContext::new(ordinal).map_err(driver("creating a context"))?;
        let raw = ctx.uuid().map_err(driver("reading the device UUID"))?;
        let bytes: [u8; 16] = raw.bytes.map(|b| b as u8);
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let module = ctx
            .load_module(Ptx::from_src(ptx::source()))
            .map_err(driver("loading the challenge PTX"))?;
        Ok(Gpu {
            uuid: nvml_uuid(&bytes),
            name,
            stream: ctx.default_stream(),
            u32_kernels: Kernels::load(&module, ptx::GEN, ptx::MATMUL, 4)?,
            f64_kernels: Kernels::load(&module, ptx::GEN_F64, ptx::MATMUL_F64, 8)?,
        })
    }

    /// NVML-style UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Device name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Generates A (`rows × depth`, seed `seed_a`) and B (`depth × cols`, seed `seed_b`)
    /// on the device and multiplies them, in wrapping u32 arithmetic. Blocks until the
    /// result is on the host.
    pub fn product(&self, [seed_a, seed_b]: [u64; 2], shape: [u32; 3]) -> Result<Product<u32>, CudaError> {
        self.run(&self.u32_kernels, [seed_a, seed_b], shape)
    }

    /// The same in binary64: in-order fused multiply-adds; C comes back as bit patterns
    /// (the f64 kernels read and write 8-byte words; u64 buffers hold them bit for bit).
    pub fn product_f64(&self, seeds: [u64; 2], shape: [u32; 3]) -> Result<Product<u64>, CudaError> {
        self.run(&self.f64_kernels, seeds, shape)
    }

    fn run<T>(
        &self,
        kernels: &Kernels,
        [seed_a, seed_b]: [u64; 2],
        [rows, depth, cols]: [u32; 3],
    ) -> Result<Product<T>, CudaError>
    where
        T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Default + Clone + Unpin,
    {
        // The launches below are sound only when T is the size the kernels write.
        if std::mem::size_of::<T>() != kernels.element_bytes {
            return Err(CudaError::Shape(format!(
                "{}-byte buffers for kernels of {}-byte elements",
                std::mem::size_of::<T>(),
                kernels.element_bytes
            )));
        }
        let geo = Geometry::for_shape(rows, depth, cols)?;
        let len = |x: u32, y: u32| u64::from(x) * u64::from(y);
        let (na, nb, nc) = (len(rows, depth), len(depth, cols), len(rows, cols));
        let size = |n: u64| usize::try_from(n).map_err(|_| CudaError::Shape(format!("{n} elements")));
        let s = &self.stream;
        let mut a = s.alloc_zeros::<T>(size(na)?).map_err(driver("allocating A"))?;
        let mut b = s.alloc_zeros::<T>(size(nb)?).map_err(driver("allocating B"))?;
        let mut c = s.alloc_zeros::<T>(size(nc)?).map_err(driver("allocating C"))?;
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = s.record_event(timing).map_err(driver("recording the start"))?;
        for (out, seed, n) in [(&mut a, seed_a, na), (&mut b, seed_b, nb)] {
            let cfg = LaunchConfig {
                grid_dim: (geo.gen_grid(n), 1, 1),
                block_dim: (geo.gen_block, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = s.launch_builder(&kernels.generate);
            launch.arg(out).arg(&seed).arg(&n);
            // SAFETY: gpufed_gen(T* out, u64 seed, u64 n) writes out[0..n) in elements of
            // T's size (the kernel pair is chosen with T), and `out` holds exactly n of
            // them (allocated above from the same n).
            #[allow(unsafe_code)]
            unsafe { launch.launch(cfg) }.map_err(driver("launching gpufed_gen"))?;
        }
        let cfg = LaunchConfig {
            grid_dim: (geo.mm_grid.0, geo.mm_grid.1, 1),
            block_dim: (geo.mm_block.0, geo.mm_block.1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(&kernels.matmul);
        launch
            .arg(&a)
            .arg(&b)
            .arg(&mut c)
            .arg(&rows)
            .arg(&depth)
            .arg(&cols);
        // SAFETY: gpufed_matmul(a, b, c, rows, depth, cols) reads a[0..rows·depth) and
        // b[0..depth·cols), writes c[0..rows·cols), in elements of T's size, and skips
        // threads outside rows × cols; the buffers were allocated with exactly those
        // lengths.
        #[allow(unsafe_code)]
        unsafe { launch.launch(cfg) }.map_err(driver("launching gpufed_matmul"))?;
        let end = s.record_event(timing).map_err(driver("recording the end"))?;
        let host = s.clone_dtoh(&c).map_err(driver("copying C to the host"))?;
        s.synchronize().map_err(driver("waiting for the device"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(driver("reading the device time"))?;
        Ok(Product {
            c: host,
            device_time: Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_spelled_like_nvml() {
        let bytes = [
            0x3b, 0x5f, 0x1a, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x02, 0x03, 0x04,
        ];
        assert_eq!(nvml_uuid(&bytes), "GPU-3b5f1a00-1234-5678-9abc-def001020304");
    }

    #[test]
    fn geometry_covers_every_element_and_refuses_what_cuda_cannot_launch() {
        let g = Geometry::for_shape(4096, 1024, 4000).expect("fits");
        assert_eq!(g.mm_grid, (250, 256));
        assert!(g.mm_grid.0 * g.mm_block.0 >= 4000 && g.mm_grid.1 * g.mm_block.1 >= 4096);
        assert_eq!(g.gen_grid(1), 1);
        assert_eq!(g.gen_grid(257), 2);
        assert_eq!(g.gen_grid(u64::MAX), 1 << 16, "grid-stride beyond the cap");
        assert!(Geometry::for_shape(65_536, 1, 1).is_ok());
        assert!(matches!(
            Geometry::for_shape(2_000_000, 1, 1),
            Err(CudaError::Shape(_))
        ));
        assert!(matches!(Geometry::for_shape(0, 1, 1), Err(CudaError::Shape(_))));
    }

    #[test]
    fn without_a_driver_the_executor_says_so_instead_of_panicking() {
        match Gpu::all() {
            Err(e) if !driver_present() => {
                assert!(matches!(e, CudaError::NoDriver));
                assert!(e.to_string().contains("libcuda.so.1"), "{e}");
            }
            // A machine with a driver: every device must come with an NVML-style UUID.
            Ok(gpus) => assert!(gpus.iter().all(|g| g.uuid().starts_with("GPU-"))),
            Err(e) => panic!("driver present but: {e}"),
        }
    }
}
