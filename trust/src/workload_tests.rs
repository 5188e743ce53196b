use super::*;

const P: Params = Params::u32(8, 5, 3, 2);
const P64: Params = Params {
    arith: Arith::F64,
    ..P
};

fn cells_u32(c: Cells) -> Vec<u32> {
    match c {
        Cells::U32(v) => v,
        Cells::F64(_) => panic!("expected u32 cells"),
    }
}

fn cells_f64(c: Cells) -> Vec<f64> {
    match c {
        Cells::F64(v) => v.into_iter().map(f64::from_bits).collect(),
        Cells::U32(_) => panic!("expected f64 cells"),
    }
}

#[test]
fn rows_are_the_matrix_product() {
    let s = seeds("n1", "GPU-a");
    let b = matrix_b(&P, &s);
    let c = cells_u32(product(&P, &s));
    assert_eq!(c.len(), (P.rows * P.cols) as usize);
    for i in 0..P.rows {
        let r = cells_u32(row(&P, &s, &b, i));
        assert_eq!(r[..], c[(i * P.cols) as usize..((i + 1) * P.cols) as usize]);
        for (c, &v) in r.iter().enumerate() {
            let mut want = 0u32;
            for j in 0..P.depth {
                let a = elem(s.a, u64::from(i * P.depth + j));
                let bv = elem(s.b, u64::from(j * P.cols) + c as u64);
                want = want.wrapping_add(a.wrapping_mul(bv));
            }
            assert_eq!(v, want, "C[{i}][{c}]");
        }
    }
}

#[test]
fn f64_rows_are_in_order_fused_multiply_adds() {
    let p = Params {
        rows: 6,
        depth: 64,
        cols: 7,
        ..P64
    };
    let s = seeds("n1", "GPU-a");
    let b = matrix_b(&p, &s);
    let c = cells_f64(product(&p, &s));
    assert_eq!(c.len(), (p.rows * p.cols) as usize);
    let mut unfused_differs = false;
    for i in 0..p.rows {
        let r = cells_f64(row(&p, &s, &b, i));
        assert_eq!(r[..], c[(i * p.cols) as usize..((i + 1) * p.cols) as usize]);
        for (col, &v) in r.iter().enumerate() {
            let (mut fused, mut unfused) = (0.0f64, 0.0f64);
            for j in 0..p.depth {
                let a = elem_f64(s.a, u64::from(i * p.depth + j));
                let bv = elem_f64(s.b, u64::from(j * p.cols) + col as u64);
                fused = a.mul_add(bv, fused);
                unfused += a * bv;
            }
            assert_eq!(v.to_bits(), fused.to_bits(), "C[{i}][{col}]");
            unfused_differs |= unfused.to_bits() != v.to_bits();
            // Products in [1, 4): the sum of 64 lies in [64, 256).
            assert!((64.0..256.0).contains(&v), "C[{i}][{col}] = {v}");
        }
    }
    // One rounding per step, fused: a device that rounds the product separately (or sums
    // in another order) gets other low bits somewhere, and that is a wrong digest.
    assert!(unfused_differs, "fused and unfused sums agree everywhere");
}

#[test]
fn f64_elements_are_normal_numbers_in_one_to_two() {
    for seed in [0, 1, u64::MAX, 0x0123_4567_89AB_CDEF] {
        for k in [0, 1, 2, 1000, u64::MAX / 3] {
            let v = elem_f64(seed, k);
            assert!(v.is_normal() && (1.0..2.0).contains(&v), "{v}");
            // The mantissa is the stream's top 52 bits.
            assert_eq!(v.to_bits() & ((1 << 52) - 1), mix(seed, k) >> 12);
        }
    }
}

#[test]
fn the_arithmetic_separates_the_results() {
    let s = seeds("n", "g");
    assert_ne!(all_leaves(&P, &s), all_leaves(&P64, &s));
    assert_eq!(product(&P64, &s).arith(), Arith::F64);
    assert_eq!(product(&P, &s).arith(), Arith::U32);
    // Same numbers, other arithmetic: other leaf (its own domain).
    assert_ne!(leaf(0, RowRef::U32(&[1, 2])), leaf(0, RowRef::F64(&[1, 2])));
}

#[test]
fn cells_give_rows_by_index() {
    let c = Cells::F64(vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(c.row(3, 1), Some(RowRef::F64(&[4, 5, 6])));
    assert_eq!(c.row(3, 2), None);
    assert_eq!(c.row(usize::MAX, 2), None, "no overflow");
    assert_eq!(c.rows(3).count(), 2);
    assert_eq!(c.rows(4).count(), 1, "only complete rows");
    assert!(!c.is_empty() && Cells::U32(Vec::new()).is_empty());
}

#[test]
fn seeds_bind_nonce_and_gpu() {
    let base = seeds("n1", "GPU-a");
    assert_ne!(base, seeds("n2", "GPU-a"));
    assert_ne!(base, seeds("n1", "GPU-b"));
    // Length prefixes: moving a character between the parts changes the seed.
    assert_ne!(seeds("n1G", "PU-a"), base);
    assert_eq!(base, seeds("n1", "GPU-a"));
}

#[test]
fn splitmix_matches_the_reference_vector() {
    // First outputs of SplitMix64 seeded with 0 (state advanced by the golden gamma).
    assert_eq!(splitmix64(GOLDEN), 0xE220_A839_7B1D_CDAF);
    assert_eq!(splitmix64(GOLDEN.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
}

#[test]
fn leaves_differ_per_row_and_per_value() {
    for p in [P, P64] {
        let leaves = all_leaves(&p, &seeds("n", "g"));
        let unique: std::collections::BTreeSet<_> = leaves.iter().collect();
        assert_eq!(unique.len(), leaves.len());
    }
    assert_ne!(leaf(0, RowRef::U32(&[1, 2, 3])), leaf(0, RowRef::U32(&[1, 2, 4])));
    assert_ne!(leaf(0, RowRef::U32(&[1, 2, 3])), leaf(1, RowRef::U32(&[1, 2, 3])));
}

#[test]
fn params_are_bounded() {
    assert!(P.validate().is_ok());
    let bad = Params { rows: 0, ..P };
    assert!(bad.validate().unwrap_err().contains("rows"));
    let bad = Params { samples: 9, ..P };
    assert!(bad.validate().unwrap_err().contains("samples"));
    assert_eq!(P.node_ops(), 120);
    assert_eq!(P.hub_ops(), 30);
}

#[test]
fn u32_params_keep_their_old_bytes_and_f64_is_spelled_out() {
    let old = r#"{"rows":8,"depth":5,"cols":3,"samples":2}"#;
    assert_eq!(serde_json::from_str::<Params>(old).unwrap(), P);
    assert_eq!(serde_json::to_string(&P).unwrap(), old);
    let f = serde_json::to_string(&P64).unwrap();
    assert!(f.contains(r#""arith":"f64""#), "{f}");
    assert_eq!(serde_json::from_str::<Params>(&f).unwrap(), P64);
    let err = serde_json::from_str::<Params>(&old.replace('}', r#","arith":"f32"}"#))
        .unwrap_err()
        .to_string();
    assert!(err.contains("f32") && err.contains("f64"), "{err}");
}

#[test]
fn a_block_from_a_later_row_is_those_rows_of_the_product() {
    let s = seeds("n1", "GPU-a");
    for p in [P, P64] {
        let whole = product(&p, &s);
        let cols = p.cols as usize;
        for r0 in [0, 1, 3, 7] {
            let part = Params {
                rows: p.rows - r0,
                ..p
            };
            let block = product(&part, &s.from_row(r0, p.depth));
            for k in 0..part.rows {
                assert_eq!(
                    block.row(cols, k as usize),
                    whole.row(cols, (r0 + k) as usize),
                    "{} row {} from block {r0}",
                    p.arith.as_str(),
                    r0 + k
                );
            }
        }
        // B is the same; A is not started over.
        assert_eq!(s.from_row(3, p.depth).b, s.b);
        assert_ne!(s.from_row(1, p.depth), s);
    }
    // Wrapping: a row far down a deep challenge still lines up with the element stream.
    let far = s.from_row(MAX_ROWS - 1, MAX_DIM);
    let k = u64::from(MAX_ROWS - 1) * u64::from(MAX_DIM);
    assert_eq!(elem(far.a, 5), elem(s.a, k + 5));
}

#[test]
fn rows_may_exceed_the_other_dimensions_up_to_their_own_limit() {
    let tall = Params::u32(MAX_ROWS, 64, 64, 8);
    assert!(tall.validate().is_ok());
    let err = Params {
        rows: MAX_ROWS + 1,
        ..tall
    }
    .validate()
    .unwrap_err();
    assert!(
        err.contains("rows") && err.contains(&MAX_ROWS.to_string()),
        "{err}"
    );
    let err = Params {
        depth: MAX_DIM + 1,
        ..tall
    }
    .validate()
    .unwrap_err();
    assert!(err.contains("depth"), "{err}");
}

#[test]
fn streamed_rows_are_the_rows_of_the_whole_b_bit_for_bit() {
    // Both arithmetics, shapes with depth > cols and cols > depth, rows asked out of order
    // and twice: each must equal `row` over the materialized B.
    for (rows, depth, cols) in [(9, 5, 3), (4, 1, 17), (16, 300, 6), (3, 2, 1)] {
        for arith in [Arith::U32, Arith::F64] {
            let p = Params {
                rows,
                depth,
                cols,
                arith,
                ..P
            };
            let s = seeds("n-stream", "GPU-s");
            let b = matrix_b(&p, &s);
            let asked = [rows - 1, 0, rows / 2, 0];
            let got = rows_streamed(&p, &s, &asked);
            assert_eq!(got.len(), asked.len());
            for (&i, r) in asked.iter().zip(&got) {
                assert_eq!(*r, row(&p, &s, &b, i), "{arith:?} {rows}×{depth}×{cols} row {i}");
            }
        }
    }
    assert!(rows_streamed(&P, &seeds("n", "g"), &[]).is_empty());
}
