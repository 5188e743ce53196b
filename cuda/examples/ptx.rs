//! Prints the challenge module's PTX, e.g. to assemble it offline with NVIDIA's `ptxas`
//! (`cargo run -p gpufed-cuda --example ptx > challenge.ptx && ptxas -arch=sm_90
//! challenge.ptx`), which checks it without a GPU.

fn main() {
    print!("{}", gpufed_cuda::ptx::source());
}
