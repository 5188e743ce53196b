//! The CUDA executor ([`gpufed_cuda`]) behind [`DeviceRunner`], and the choice of this
//! node's executor.

use gpufed_trust::workload::{Arith, Cells, Params, Seeds};

use crate::executor::{DeviceProduct, DeviceRunner, Executor, OpenDevice};

/// Runs the workload with the CUDA driver. A context is created per GPU and challenge
/// ([`DeviceRunner::open`]), serves all of the challenge's row blocks and is dropped after
/// it, so the plugin holds no GPU memory between challenges.
#[derive(Debug, Default)]
pub struct CudaRunner;

impl DeviceRunner for CudaRunner {
    fn open(&self, uuid: &str) -> Result<Box<dyn OpenDevice + '_>, String> {
        let gpu = gpufed_cuda::Gpu::by_uuid(uuid).map_err(|e| e.to_string())?;
        Ok(Box::new(CudaGpu(gpu)))
    }
}

/// One GPU's context and kernels, for one challenge.
struct CudaGpu(gpufed_cuda::Gpu);

impl OpenDevice for CudaGpu {
    fn product(&mut self, seeds: Seeds, p: &Params) -> Result<DeviceProduct, String> {
        let (gpu, seeds, shape) = (&self.0, [seeds.a, seeds.b], [p.rows, p.depth, p.cols]);
        let (c, time) = match p.arith {
            Arith::U32 => gpu
                .product(seeds, shape)
                .map(|out| (Cells::U32(out.c), out.device_time)),
            Arith::F64 => gpu
                .product_f64(seeds, shape)
                .map(|out| (Cells::F64(out.c), out.device_time)),
        }
        .map_err(|e| e.to_string())?;
        Ok(DeviceProduct {
            c,
            device_micros: u64::try_from(time.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

/// A `--simulate` node computes on the CPU; an NVML node on its GPUs when the CUDA driver
/// library loads, else it cannot answer (and says why once per challenge).
pub fn executor_for(simulated: bool) -> Executor {
    if simulated {
        Executor::Cpu
    } else if gpufed_cuda::driver_present() {
        Executor::Device(Box::new(CudaRunner))
    } else {
        Executor::Unavailable(
            "the CUDA driver library (libcuda.so.1) is not loadable: no GPU executor for the compute challenge"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_nodes_use_the_cpu_and_gpu_nodes_the_driver_when_present() {
        assert!(matches!(executor_for(true), Executor::Cpu));
        match executor_for(false) {
            Executor::Device(_) => assert!(gpufed_cuda::driver_present()),
            Executor::Unavailable(why) => {
                assert!(!gpufed_cuda::driver_present());
                assert!(why.contains("libcuda.so.1"), "{why}");
            }
            Executor::Cpu => panic!("an NVML node never computes on the CPU"),
        }
    }
}
