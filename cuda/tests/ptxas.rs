//! The challenge module's PTX assembled by NVIDIA's own `ptxas` for the GPU generations we
//! expect on providers (Maxwell as the floor, Ampere, Hopper): a syntax or typing mistake in
//! the hand-written PTX fails here, on machines without a GPU. `make test` installs ptxas
//! (scripts/install-ptxas.sh); `GPUFED_PTXAS` points at another one.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn ptxas() -> PathBuf {
    if let Some(p) = std::env::var_os("GPUFED_PTXAS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("GPUFED_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/gpufed"));
    cache.join("bin/ptxas")
}

#[test]
fn ptxas_assembles_every_kernel_for_every_target_without_warnings() {
    let ptxas = ptxas();
    assert!(
        ptxas.is_file(),
        "{} not found: run `make ptxas` (scripts/install-ptxas.sh) or set GPUFED_PTXAS",
        ptxas.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("challenge.ptx");
    std::fs::write(&src, gpufed_cuda::ptx::source()).unwrap();
    for arch in ["sm_50", "sm_80", "sm_90"] {
        let out = Command::new(&ptxas)
            .arg(format!("-arch={arch}"))
            .arg("-v")
            .arg("--warning-as-error")
            .arg(&src)
            .arg("-o")
            .arg(dir.path().join(format!("challenge-{arch}.cubin")))
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "ptxas -arch={arch} failed:\n{log}");
        use gpufed_cuda::ptx::{GEN, GEN_F64, MATMUL, MATMUL_F64};
        for kernel in [GEN, MATMUL, GEN_F64, MATMUL_F64] {
            assert!(
                log.contains(&format!("Compiling entry function '{kernel}'")),
                "{arch}: {kernel} not compiled:\n{log}"
            );
        }
        assert!(
            log.contains("0 bytes spill stores"),
            "{arch}: register spills:\n{log}"
        );
        assert!(dir.path().join(format!("challenge-{arch}.cubin")).is_file());
    }
}

#[test]
fn ptxas_rejects_a_broken_module_so_the_check_above_can_fail() {
    let ptxas = ptxas();
    assert!(ptxas.is_file(), "{} not found: run `make ptxas`", ptxas.display());
    // A 64-bit register in a u32 mad; a 32-bit one in an f64 fma.
    for broken in [
        gpufed_cuda::ptx::source().replace("mad.lo.u32 %r9", "mad.lo.u32 %rd9"),
        gpufed_cuda::ptx::source().replace("fma.rn.f64 %fd1, %fd2", "fma.rn.f64 %fd1, %r2"),
    ] {
        assert_ne!(broken, gpufed_cuda::ptx::source());
        assert_broken(&ptxas, &broken);
    }
}

fn assert_broken(ptxas: &std::path::Path, broken: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("broken.ptx");
    std::fs::write(&src, broken).unwrap();
    let out = Command::new(ptxas)
        .args(["-arch=sm_90", "-o"])
        .arg(dir.path().join("broken.cubin"))
        .arg(&src)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a mistyped register must not assemble");
}
