//! The challenge kernels, as PTX text the driver compiles for whatever GPU it runs on
//! (`.target sm_50`: every CUDA GPU since Maxwell; the driver JIT-compiles upward).
//!
//! Written by hand rather than compiled from CUDA C so that a node needs only the driver,
//! not NVRTC or a toolkit. The kernels are deliberately simple; the timing bands are
//! measured with exactly these kernels (docs/trust.md), so simple is also stable.
//!
//! - `gpufed_gen(out, seed, n)`: `out[k] = hi32(splitmix64(seed + k·GOLDEN))` for `k < n`
//!   (grid-stride loop) — the matrices A and B of a `u32` challenge.
//! - `gpufed_matmul(a, b, c, rows, depth, cols)`: one thread per element of C,
//!   `C[i][c] = Σ_j A[i][j]·B[j][c]` with wrapping u32 arithmetic (`mad.lo.u32`).
//! - `gpufed_gen_f64`, `gpufed_matmul_f64`: the same for an `f64` challenge: elements are
//!   the binary64 numbers `F64_ONE | splitmix64(…) >> 12` (in [1, 2)), and each thread
//!   runs `acc = fma.rn.f64(A[i][j], B[j][c], acc)` for j in order from +0.0 — one IEEE
//!   rounding per step, as the CPU reference's `f64::mul_add` does.
//!
//! Both pairs come from one template ([`Elem`]) so that they differ only where the
//! arithmetic does.

/// Weyl increment of the element stream (`gpufed_trust::workload`).
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// SplitMix64's first multiplier.
pub const MIX1: u64 = 0xBF58_476D_1CE4_E5B9;
/// SplitMix64's second multiplier.
pub const MIX2: u64 = 0x94D0_49BB_1331_11EB;
/// Bits of binary64 1.0, or-ed onto the 52 mantissa bits of an `f64` element.
pub const F64_ONE: u64 = 0x3FF0_0000_0000_0000;

/// Name of the `u32` generator kernel.
pub const GEN: &str = "gpufed_gen";
/// Name of the `u32` matrix-product kernel.
pub const MATMUL: &str = "gpufed_matmul";
/// Name of the `f64` generator kernel.
pub const GEN_F64: &str = "gpufed_gen_f64";
/// Name of the `f64` matrix-product kernel.
pub const MATMUL_F64: &str = "gpufed_matmul_f64";

/// What differs between the two arithmetics' kernels.
struct Elem {
    generator: &'static str,
    matmul: &'static str,
    /// log2 of the element size.
    shift: u32,
    /// The generator's last steps: from the mixed word in `%rd7` to the stored element.
    gen_store: String,
    /// Extra register declarations of the product kernel.
    regs: &'static str,
    /// Accumulator: initial value, one step, store (operands at `[%rd4]` and `[%rd5]`,
    /// store address in `%rd7`).
    acc_init: &'static str,
    acc_step: &'static str,
    acc_store: &'static str,
}

fn elems() -> [Elem; 2] {
    let one = F64_ONE as i64;
    [
        Elem {
            generator: GEN,
            matmul: MATMUL,
            shift: 2,
            gen_store: "    shr.u64 %rd8, %rd7, 32;
    cvt.u32.u64 %r5, %rd8;
    st.global.u32 [%rd9], %r5;"
                .into(),
            regs: "",
            acc_init: "mov.u32 %r9, 0;",
            acc_step: "    ld.global.u32 %r11, [%rd4];
    ld.global.u32 %r12, [%rd5];
    mad.lo.u32 %r9, %r11, %r12, %r9;",
            acc_store: "st.global.u32 [%rd7], %r9;",
        },
        Elem {
            generator: GEN_F64,
            matmul: MATMUL_F64,
            shift: 3,
            gen_store: format!(
                "    shr.u64 %rd8, %rd7, 12;
    or.b64 %rd8, %rd8, {one};
    st.global.u64 [%rd9], %rd8;"
            ),
            regs: "\n    .reg .f64 %fd<4>;",
            acc_init: "mov.f64 %fd1, 0d0000000000000000;",
            acc_step: "    ld.global.f64 %fd2, [%rd4];
    ld.global.f64 %fd3, [%rd5];
    fma.rn.f64 %fd1, %fd2, %fd3, %fd1;",
            acc_store: "st.global.f64 [%rd7], %fd1;",
        },
    ]
}

/// The module's PTX: both arithmetics' kernels. 64-bit constants are written as signed
/// decimals, the form compilers emit, so no assembler has to guess the type of a large
/// hex literal.
pub fn source() -> String {
    let mut out = String::from(".version 7.0\n.target sm_50\n.address_size 64\n");
    for e in elems() {
        out.push_str(&kernels(&e));
    }
    out
}

fn kernels(e: &Elem) -> String {
    let (g, m1, m2) = (GOLDEN as i64, MIX1 as i64, MIX2 as i64);
    let Elem {
        generator,
        matmul,
        shift,
        gen_store,
        regs,
        acc_init,
        acc_step,
        acc_store,
    } = e;
    let size = 1u32 << shift;
    // Labels are per kernel name: PTX labels are scoped to their function, but unique
    // names keep the module readable and the label test simple.
    let l = matmul.to_ascii_uppercase();
    let gl = generator.to_ascii_uppercase();
    format!(
        r#"
.visible .entry {generator}(
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
{gl}_LOOP:
    setp.ge.u64 %p1, %rd4, %rd3;
    @%p1 bra {gl}_DONE;
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
    shl.b64 %rd9, %rd4, {shift};
    add.u64 %rd9, %rd1, %rd9;
{gen_store}
    add.u64 %rd4, %rd4, %rd6;
    bra.uni {gl}_LOOP;
{gl}_DONE:
    ret;
}}

.visible .entry {matmul}(
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
    .reg .b64 %rd<12>;{regs}

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
    @%p1 bra {l}_DONE;
    mul.wide.u32 %rd4, %r8, %r2;
    shl.b64 %rd4, %rd4, {shift};
    add.u64 %rd4, %rd1, %rd4;
    mul.wide.u32 %rd5, %r7, {size};
    add.u64 %rd5, %rd2, %rd5;
    mul.wide.u32 %rd6, %r3, {size};
    {acc_init}
    mov.u32 %r10, 0;
    setp.eq.u32 %p3, %r2, 0;
    @%p3 bra {l}_STORE;
{l}_LOOP:
{acc_step}
    add.u64 %rd4, %rd4, {size};
    add.u64 %rd5, %rd5, %rd6;
    add.u32 %r10, %r10, 1;
    setp.lt.u32 %p3, %r10, %r2;
    @%p3 bra {l}_LOOP;
{l}_STORE:
    mul.wide.u32 %rd7, %r8, %r3;
    cvt.u64.u32 %rd8, %r7;
    add.u64 %rd7, %rd7, %rd8;
    shl.b64 %rd7, %rd7, {shift};
    add.u64 %rd7, %rd3, %rd7;
    {acc_store}
{l}_DONE:
    ret;
}}
"#
    )
}

/// The mixed word both generators start from, in the kernels' instruction order.
fn gen_mix(seed: u64, k: u64) -> u64 {
    let mut z = k.wrapping_mul(GOLDEN).wrapping_add(seed);
    z ^= z >> 30;
    z = z.wrapping_mul(MIX1);
    z ^= z >> 27;
    z = z.wrapping_mul(MIX2);
    z ^ (z >> 31)
}

/// What `gpufed_gen` computes for element `k`, in Rust: the kernel's instruction sequence
/// step by step (checked against `gpufed_trust::workload::elem` in the tests).
pub fn gen_element(seed: u64, k: u64) -> u32 {
    (gen_mix(seed, k) >> 32) as u32
}

/// What `gpufed_gen_f64` computes for element `k`: the bit pattern of a binary64 number
/// in [1, 2) (checked against `gpufed_trust::workload::elem_f64`).
pub fn gen_element_f64(seed: u64, k: u64) -> u64 {
    (gen_mix(seed, k) >> 12) | F64_ONE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_sequence_is_the_workloads_element_stream() {
        for seed in [0, 1, u64::MAX, 0x0123_4567_89AB_CDEF] {
            for k in [0, 1, 2, 1000, u64::from(u32::MAX), u64::MAX / 3] {
                assert_eq!(gen_element(seed, k), gpufed_trust::workload::elem(seed, k));
                assert_eq!(
                    gen_element_f64(seed, k),
                    gpufed_trust::workload::elem_f64(seed, k).to_bits()
                );
            }
        }
    }

    #[test]
    fn the_ptx_names_every_kernel_and_carries_the_constants_as_signed_decimals() {
        let src = source();
        for name in [GEN, MATMUL, GEN_F64, MATMUL_F64] {
            assert_eq!(
                src.matches(&format!(".visible .entry {name}(")).count(),
                1,
                "{name}"
            );
        }
        assert_eq!(src.matches(".version").count(), 1, "one module header");
        for c in [GOLDEN, MIX1, MIX2, F64_ONE] {
            assert!(src.contains(&format!(", {};", c as i64)), "{c:#x}");
        }
        assert!(
            !src.contains("{{") && !src.contains("}}"),
            "format escapes leaked"
        );
        assert_eq!(src.matches('{').count(), src.matches('}').count());
    }

    /// The kernel named `name`, up to the next one.
    fn kernel(name: &str) -> String {
        let src = source();
        let start = src.find(&format!(".visible .entry {name}(")).unwrap_or(0);
        let rest = &src[start + 1..];
        let end = rest.find(".visible .entry").map_or(src.len(), |i| start + 1 + i);
        src[start..end].to_owned()
    }

    #[test]
    fn the_f64_kernels_use_fused_binary64_and_the_u32_ones_wrapping_integers() {
        let mm = kernel(MATMUL_F64);
        assert!(mm.contains("fma.rn.f64 %fd1, %fd2, %fd3, %fd1;"), "{mm}");
        assert!(mm.contains("mov.f64 %fd1, 0d0000000000000000;"));
        assert!(mm.contains("ld.global.f64") && mm.contains("st.global.f64"));
        assert!(mm.contains("mul.wide.u32 %rd6, %r3, 8;"), "8-byte row stride");
        assert!(!mm.contains(".u32 %r11"), "no integer operands");
        let mm32 = kernel(MATMUL);
        assert!(mm32.contains("mad.lo.u32 %r9, %r11, %r12, %r9;"));
        assert!(mm32.contains("mul.wide.u32 %rd6, %r3, 4;"));
        assert!(!mm32.contains("f64"), "{mm32}");
        let g = kernel(GEN_F64);
        assert!(g.contains("shr.u64 %rd8, %rd7, 12;") && g.contains("st.global.u64"));
        assert!(g.contains("shl.b64 %rd9, %rd4, 3;"));
        assert!(kernel(GEN).contains("shl.b64 %rd9, %rd4, 2;"));
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
            for (prefix, decl) in [
                ("%rd", ".b64 %rd<"),
                ("%r", ".b32 %r<"),
                ("%p", ".pred %p<"),
                ("%fd", ".f64 %fd<"),
            ] {
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
                    .max();
                if let Some(used) = used {
                    assert!(used < limit, "{prefix}{used} but {decl}{limit}>");
                }
            }
        }
    }
}
