#![allow(clippy::unwrap_used)]

use super::*;

const P: Params = Params::u32(64, 16, 32, 4);

/// A device that computes on the CPU, optionally corrupting one element.
struct FakeDevice {
    corrupt: Option<(u32, usize)>,
    calls: Vec<String>,
}

impl DeviceRunner for FakeDevice {
    fn product(&mut self, uuid: &str, seeds: Seeds, p: &Params) -> Result<DeviceProduct, String> {
        self.calls.push(uuid.to_owned());
        let mut c = workload::product(p, &seeds);
        if let Some((row, col)) = self.corrupt {
            flip_low_bit(&mut c, row as usize * p.cols as usize + col);
        }
        Ok(DeviceProduct {
            c,
            device_micros: 1234,
        })
    }
}

fn device(corrupt: Option<(u32, usize)>) -> Executor {
    Executor::Device(Box::new(FakeDevice {
        corrupt,
        calls: vec![],
    }))
}

#[test]
fn a_correct_device_commits_the_same_root_as_the_cpu_reference_with_its_own_time() {
    let got = device(None).compute("n1", "GPU-a", &P).unwrap();
    let cpu = Computed::on_cpu("n1", "GPU-a", &P, 0).unwrap();
    assert_eq!(got.commit().root, cpu.commit().root);
    assert_eq!(got.kernel_micros, 1234);
}

#[test]
fn an_f64_device_commits_the_cpu_references_root() {
    let p = Params {
        arith: workload::Arith::F64,
        ..P
    };
    let got = device(None).compute("n1", "GPU-a", &p).unwrap();
    let cpu = Computed::on_cpu("n1", "GPU-a", &p, 0).unwrap();
    assert_eq!(got.commit().root, cpu.commit().root);
    assert_ne!(
        got.commit().root,
        device(None).compute("n1", "GPU-a", &P).unwrap().commit().root
    );
}

#[test]
fn a_device_that_computes_a_checked_row_wrongly_does_not_answer() {
    let seeds = workload::seeds("n1", "GPU-a");
    let f = Params {
        arith: workload::Arith::F64,
        ..P
    };
    for p in [P, f] {
        for row in self_check_rows(&p, &seeds) {
            let err = device(Some((row, 5))).compute("n1", "GPU-a", &p).unwrap_err();
            assert!(err.contains(&format!("row {row}")), "{err}");
        }
    }
}

#[test]
fn self_check_rows_cover_both_ends_and_change_with_the_challenge() {
    let a = self_check_rows(&P, &workload::seeds("n1", "GPU-a"));
    let b = self_check_rows(&P, &workload::seeds("n2", "GPU-a"));
    assert_eq!(a.len(), SELF_CHECK_ROWS as usize);
    assert!(a.contains(&0) && a.contains(&(P.rows - 1)));
    assert_ne!(a, b);
    let tiny = Params { rows: 3, ..P };
    assert_eq!(self_check_rows(&tiny, &workload::seeds("n", "g")), vec![0, 1, 2]);
    let one = Params {
        rows: 1,
        samples: 1,
        ..P
    };
    assert_eq!(self_check_rows(&one, &workload::seeds("n", "g")), vec![0]);
}

#[test]
fn a_short_result_is_refused() {
    let seeds = workload::seeds("n1", "GPU-a");
    let err = self_check(&P, &seeds, &Cells::U32(vec![0; 10])).unwrap_err();
    assert!(err.contains("10 elements"), "{err}");
    // Cells of the other arithmetic, even of the right count.
    let n = (P.rows * P.cols) as usize;
    let err = self_check(&P, &seeds, &Cells::F64(vec![0; n])).unwrap_err();
    assert!(err.contains("f64 cells for a u32 challenge"), "{err}");
}

#[test]
fn oversized_work_and_a_missing_executor_are_refused_with_a_reason() {
    let huge = Params::u32(65_536, 65_536, 8, 4);
    let err = device(None).compute("n1", "GPU-a", &huge).unwrap_err();
    assert!(err.contains("matrix A"), "{err}");
    // f64 elements take twice the bytes: a shape the u32 path takes, the f64 path refuses.
    let wide = Params::u32(8, 8192, 32_768, 4);
    assert!(fits_device(&wide).is_ok());
    let err = fits_device(&Params {
        arith: workload::Arith::F64,
        ..wide
    })
    .unwrap_err();
    assert!(
        err.contains("matrix B") && err.contains("2147483648 bytes"),
        "{err}"
    );
    let err = Executor::Cpu.compute("n1", "GPU-a", &huge).unwrap_err();
    assert!(err.contains("CPU reference"), "{err}");
    let err = Executor::Unavailable("no driver".into())
        .compute("n1", "GPU-a", &P)
        .unwrap_err();
    assert_eq!(err, "no driver");
}

#[test]
fn the_cpu_executor_measures_its_time() {
    let c = Executor::Cpu.compute("n1", "GPU-a", &P).unwrap();
    assert!(c.kernel_micros >= 1);
}
