//! The challenge kernels, as PTX text the driver compiles for whatever GPU it runs on
//! (`.target sm_50`: every CUDA GPU since Maxwell; the driver JIT-compiles upward).
//!
//! Written by hand rather than compiled from CUDA C so that a node needs only the driver,
//! not NVRTC or a toolkit. Both kernels are deliberately simple; the timing bands are
//! measured with exactly these kernels (docs/trust.md), so simple is also stable.
//!
//! - `gpufed_gen(out, seed, n)`: `out[k] = hi32(splitmix64(seed + k·GOLDEN))` for `k < n`
//!   (grid-stride loop) — the matrices A and B of `gpufed_trust::workload`.
//! - `gpufed_matmul(a, b, c, rows, depth, cols)`: one thread per element of C,
//!   `C[i][c] = Σ_j A[i][j]·B[j][c]` with wrapping u32 arithmetic (`mad.lo.u32`).

/// Weyl increment of the element stream (`gpufed_trust::workload`).
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// SplitMix64's first multiplier.
pub const MIX1: u64 = 0xBF58_476D_1CE4_E5B9;
/// SplitMix64's second multiplier.
pub const MIX2: u64 = 0x94D0_49BB_1331_11EB;

/// Name of the generator kernel.
pub const GEN: &str = "gpufed_gen";
/// Name of the matrix-product kernel.
pub const MATMUL: &str = "gpufed_matmul";

/// The module's PTX. 64-bit constants are written as signed decimals, the form compilers
/// emit, so no assembler has to guess the type of a large hex literal.
pub fn source() -> String {
    let (g, m1, m2) = (GOLDEN as i64, MIX1 as i64, MIX2 as i64);
    format!(
        r#".version 7.0
.target sm_50
.address_size 64

.visible .entry {GEN}(
    .param .u64 p_out,
    .param .u64 p_seed,
    .param .u64 p_n
)
{{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [p_out];
    ld.param.u64 %rd2, [p_seed];
    ld.param.u64 %rd3, [p_n];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r1, %ctaid.x;
    mov.u32 %r2, %ntid.x;
    mov.u32 %r3, %tid.x;
    mov.u32 %r4, %nctaid.x;
    mul.wide.u32 %rd4, %r1, %r2;
    cvt.u64.u32 %rd5, %r3;
    add.u64 %rd4, %rd4, %rd5;
    mul.wide.u32 %rd6, %r4, %r2;
GEN_LOOP:
    setp.ge.u64 %p1, %rd4, %rd3;
    @%p1 bra GEN_DONE;
    mul.lo.u64 %rd7, %rd4, {g};
    add.u64 %rd7, %rd7, %rd2;
    shr.u64 %rd8, %rd7, 30;
    xor.b64 %rd7, %rd7, %rd8;
    mul.lo.u64 %rd7, %rd7, {m1};
    shr.u64 %rd8, %rd7, 27;
    xor.b64 %rd7, %rd7, %rd8;
    mul.lo.u64 %rd7, %rd7, {m2};
    shr.u64 %rd8, %rd7, 31;
    xor.b64 %rd7, %rd7, %rd8;
    shr.u64 %rd8, %rd7, 32;
    cvt.u32.u64 %r5, %rd8;
    shl.b64 %rd9, %rd4, 2;
    add.u64 %rd9, %rd1, %rd9;
    st.global.u32 [%rd9], %r5;
    add.u64 %rd4, %rd4, %rd6;
    bra.uni GEN_LOOP;
GEN_DONE:
    ret;
}}

.visible .entry {MATMUL}(
    .param .u64 p_a,
    .param .u64 p_b,
    .param .u64 p_c,
    .param .u32 p_rows,
    .param .u32 p_depth,
    .param .u32 p_cols
)
{{
    .reg .pred %p<4>;
    .reg .b32 %r<14>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [p_a];
    ld.param.u64 %rd2, [p_b];
    ld.param.u64 %rd3, [p_c];
    ld.param.u32 %r1, [p_rows];
    ld.param.u32 %r2, [p_depth];
    ld.param.u32 %r3, [p_cols];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    cvta.to.global.u64 %rd3, %rd3;
    mov.u32 %r4, %ctaid.x;
    mov.u32 %r5, %ntid.x;
    mov.u32 %r6, %tid.x;
    mad.lo.u32 %r7, %r4, %r5, %r6;
    mov.u32 %r4, %ctaid.y;
    mov.u32 %r5, %ntid.y;
    mov.u32 %r6, %tid.y;
    mad.lo.u32 %r8, %r4, %r5, %r6;
    setp.ge.u32 %p1, %r7, %r3;
    setp.ge.u32 %p2, %r8, %r1;
    or.pred %p1, %p1, %p2;
    @%p1 bra MM_DONE;
    mul.wide.u32 %rd4, %r8, %r2;
    shl.b64 %rd4, %rd4, 2;
    add.u64 %rd4, %rd1, %rd4;
    mul.wide.u32 %rd5, %r7, 4;
    add.u64 %rd5, %rd2, %rd5;
    mul.wide.u32 %rd6, %r3, 4;
    mov.u32 %r9, 0;
    mov.u32 %r10, 0;
    setp.eq.u32 %p3, %r2, 0;
    @%p3 bra MM_STORE;
MM_LOOP:
    ld.global.u32 %r11, [%rd4];
    ld.global.u32 %r12, [%rd5];
    mad.lo.u32 %r9, %r11, %r12, %r9;
    add.u64 %rd4, %rd4, 4;
    add.u64 %rd5, %rd5, %rd6;
    add.u32 %r10, %r10, 1;
    setp.lt.u32 %p3, %r10, %r2;
    @%p3 bra MM_LOOP;
MM_STORE:
    mul.wide.u32 %rd7, %r8, %r3;
    cvt.u64.u32 %rd8, %r7;
    add.u64 %rd7, %rd7, %rd8;
    shl.b64 %rd7, %rd7, 2;
    add.u64 %rd7, %rd3, %rd7;
    st.global.u32 [%rd7], %r9;
MM_DONE:
    ret;
}}
"#
    )
}

/// What `gpufed_gen` computes for element `k`, in Rust: the kernel's instruction sequence
/// step by step (checked against `gpufed_trust::workload::elem` in the tests).
pub fn gen_element(seed: u64, k: u64) -> u32 {
    let mut z = k.wrapping_mul(GOLDEN).wrapping_add(seed);
    z ^= z >> 30;
    z = z.wrapping_mul(MIX1);
    z ^= z >> 27;
    z = z.wrapping_mul(MIX2);
    z ^= z >> 31;
    (z >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_sequence_is_the_workloads_element_stream() {
        for seed in [0, 1, u64::MAX, 0x0123_4567_89AB_CDEF] {
            for k in [0, 1, 2, 1000, u64::from(u32::MAX), u64::MAX / 3] {
                assert_eq!(gen_element(seed, k), gpufed_trust::workload::elem(seed, k));
            }
        }
    }

    #[test]
    fn the_ptx_names_both_kernels_and_carries_the_constants_as_signed_decimals() {
        let src = source();
        assert!(src.contains(".visible .entry gpufed_gen("));
        assert!(src.contains(".visible .entry gpufed_matmul("));
        for c in [GOLDEN, MIX1, MIX2] {
            assert!(src.contains(&format!(", {};", c as i64)), "{c:#x}");
        }
        assert!(
            !src.contains("{{") && !src.contains("}}"),
            "format escapes leaked"
        );
        assert_eq!(src.matches('{').count(), src.matches('}').count());
    }

    #[test]
    fn every_label_is_defined_once_and_every_branch_target_exists() {
        let src = source();
        let defined: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_suffix(':'))
            .filter(|l| !l.starts_with(' '))
            .collect();
        let mut unique = defined.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), defined.len(), "{defined:?}");
        for line in src.lines().filter(|l| l.contains(" bra")) {
            let target = line.trim().trim_end_matches(';').rsplit(' ').next().unwrap_or("");
            assert!(defined.contains(&target), "branch to {target:?}");
        }
    }

    #[test]
    fn registers_stay_within_their_declared_counts() {
        let src = source();
        for kernel in src.split(".visible .entry").skip(1) {
            for (prefix, decl) in [("%rd", ".b64 %rd<"), ("%r", ".b32 %r<"), ("%p", ".pred %p<")] {
                let limit: usize = kernel
                    .split(decl)
                    .nth(1)
                    .and_then(|t| t.split('>').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let used = kernel
                    .match_indices(prefix)
                    .filter_map(|(i, _)| {
                        let digits: String = kernel[i + prefix.len()..]
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        digits.parse::<usize>().ok()
                    })
                    .max()
                    .unwrap_or(0);
                assert!(used < limit, "{prefix}{used} but {decl}{limit}>");
            }
        }
    }
}
