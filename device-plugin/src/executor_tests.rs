#![allow(clippy::unwrap_used)]

use super::*;

const P: Params = Params::u32(64, 16, 32, 4);

/// A device that computes on the CPU, optionally corrupting one element of C, and records
/// the GPUs opened and the shape of every run.
#[derive(Default)]
struct FakeDevice {
    corrupt: Option<(u32, usize)>,
    opened: std::sync::Mutex<Vec<String>>,
    runs: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
}

struct FakeGpu {
    corrupt: Option<(u32, usize)>,
    runs: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    /// First row of the next block, to corrupt the right one.
    next_row: u32,
}

impl DeviceRunner for FakeDevice {
    fn open(&self, uuid: &str) -> Result<Box<dyn OpenDevice + '_>, String> {
        self.opened.lock().unwrap().push(uuid.to_owned());
        Ok(Box::new(FakeGpu {
            corrupt: self.corrupt,
            runs: self.runs.clone(),
            next_row: 0,
        }))
    }
}

impl OpenDevice for FakeGpu {
    fn product(&mut self, seeds: Seeds, p: &Params) -> Result<DeviceProduct, String> {
        self.runs.lock().unwrap().push(p.rows);
        let mut c = workload::product(p, &seeds);
        if let Some((row, col)) = self.corrupt
            && (self.next_row..self.next_row + p.rows).contains(&row)
        {
            flip_low_bit(&mut c, (row - self.next_row) as usize * p.cols as usize + col);
        }
        self.next_row += p.rows;
        Ok(DeviceProduct {
            c,
            device_micros: 1234,
        })
    }
}

fn device(corrupt: Option<(u32, usize)>) -> Executor {
    Executor::Device(Box::new(FakeDevice {
        corrupt,
        ..FakeDevice::default()
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
        for row in self_check_rows(&p, &seeds, p.rows) {
            let err = device(Some((row, 5))).compute("n1", "GPU-a", &p).unwrap_err();
            assert!(err.contains(&format!("row {row}")), "{err}");
        }
    }
}

#[test]
fn self_check_rows_cover_both_ends_and_change_with_the_challenge() {
    let a = self_check_rows(&P, &workload::seeds("n1", "GPU-a"), P.rows);
    let b = self_check_rows(&P, &workload::seeds("n2", "GPU-a"), P.rows);
    assert_eq!(a.len(), SELF_CHECK_ROWS as usize);
    assert!(a.contains(&0) && a.contains(&(P.rows - 1)));
    assert_ne!(a, b);
    let tiny = Params { rows: 3, ..P };
    assert_eq!(
        self_check_rows(&tiny, &workload::seeds("n", "g"), 3),
        vec![0, 1, 2]
    );
    let one = Params {
        rows: 1,
        samples: 1,
        ..P
    };
    assert_eq!(self_check_rows(&one, &workload::seeds("n", "g"), 1), vec![0]);
}

#[test]
fn every_block_of_a_challenge_run_in_blocks_has_a_checked_row_up_to_the_cap() {
    let seeds = workload::seeds("n1", "GPU-a");
    let blocks_hit = |rows: &[u32], block: u32| -> std::collections::BTreeSet<u32> {
        rows.iter().map(|r| r / block).collect()
    };
    // 64 rows in blocks of 5: 13 blocks, each checked.
    let rows = self_check_rows(&P, &seeds, 5);
    assert_eq!(blocks_hit(&rows, 5).len(), 13, "{rows:?}");
    assert!(rows.windows(2).all(|w| w[0] < w[1]) && *rows.last().unwrap() == P.rows - 1);
    // 4096 rows in blocks of 16: 256 blocks; the first and last, and 16 seeded ones.
    let tall = Params { rows: 4096, ..P };
    let a = self_check_rows(&tall, &seeds, 16);
    let hit = blocks_hit(&a, 16);
    assert!(
        hit.len() >= MAX_CHECKED_BLOCKS as usize && hit.len() <= MAX_CHECKED_BLOCKS as usize + 2,
        "{a:?}"
    );
    assert!(hit.contains(&0) && hit.contains(&255));
    let b = self_check_rows(&tall, &workload::seeds("n2", "GPU-a"), 16);
    assert_ne!(blocks_hit(&b, 16), hit, "other blocks for another challenge");
    // A wrong row in any block's checked row is caught by run_blocks.
    for &row in &rows {
        assert_caught_in_blocks_of(row, 5);
    }
}

/// A device that computes `row` of [`P`] wrongly is caught when P runs in blocks of `block`.
fn assert_caught_in_blocks_of(row: u32, block: u32) {
    let fake = FakeDevice {
        corrupt: Some((row, 1)),
        ..FakeDevice::default()
    };
    let mut gpu = fake.open("GPU-a").unwrap();
    let err = run_blocks(
        gpu.as_mut(),
        &P,
        &workload::seeds("n1", "GPU-a"),
        block,
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.contains(&format!("row {row}")), "{err}");
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
    // B must fit one device run whole; A and C only a block at a time.
    let deep = Params::u32(8, 65_536, 8_192, 4);
    let err = device(None).compute("n1", "GPU-a", &deep).unwrap_err();
    assert!(err.contains("matrix B"), "{err}");
    // f64 elements take twice the bytes: a shape the u32 path takes, the f64 path refuses.
    let wide = Params::u32(8, 8192, 32_768, 4);
    assert!(block_rows(&wide).is_ok());
    let err = block_rows(&Params {
        arith: workload::Arith::F64,
        ..wide
    })
    .unwrap_err();
    assert!(
        err.contains("matrix B") && err.contains("2147483648 bytes"),
        "{err}"
    );
    let huge = Params::u32(65_536, 65_536, 8, 4);
    let err = Executor::Cpu.compute("n1", "GPU-a", &huge).unwrap_err();
    assert!(err.contains("CPU reference"), "{err}");
    let err = Executor::Unavailable("no driver".into())
        .compute("n1", "GPU-a", &P)
        .unwrap_err();
    assert_eq!(err, "no driver");
}

#[test]
fn a_tall_challenge_runs_in_blocks_that_fit_and_commits_the_whole_product() {
    // A 65 536 × 65 536 × 8 u32 product: A alone is 16 GiB; a row of A and C is 256 KiB.
    let tall = Params::u32(65_536, 65_536, 8, 4);
    assert_eq!(block_rows(&tall).unwrap(), 4095);
    assert_eq!(block_rows(&P).unwrap(), P.rows, "a small one runs at once");
    let shallow = Params::u32(workload::MAX_ROWS, 1, 1, 4);
    assert_eq!(block_rows(&shallow).unwrap(), MAX_BLOCK_ROWS, "the kernel's grid");

    // Blocks of 5 rows over 64 (the last one short) give the same root as one run, with
    // every block's time added.
    let seeds = workload::seeds("n1", "GPU-a");
    for p in [
        P,
        Params {
            arith: workload::Arith::F64,
            ..P
        },
    ] {
        let fake = FakeDevice::default();
        let mut gpu = fake.open("GPU-a").unwrap();
        let mut leaves = Vec::new();
        let micros = run_blocks(gpu.as_mut(), &p, &seeds, 5, |i, row| {
            leaves.push(workload::leaf(i, row));
        })
        .unwrap();
        let runs = fake.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 13);
        assert_eq!(runs.iter().sum::<u32>(), p.rows);
        assert_eq!(*runs.last().unwrap(), 4);
        assert_eq!(micros, 13 * 1234);
        assert_eq!(leaves, workload::all_leaves(&p, &seeds));
    }
    // A wrong row in a later block is caught there.
    let row = *self_check_rows(&P, &seeds, 5).last().unwrap();
    assert!(row >= 5, "{row}");
    assert_caught_in_blocks_of(row, 5);
}

#[test]
fn the_cpu_executor_measures_its_time() {
    let c = Executor::Cpu.compute("n1", "GPU-a", &P).unwrap();
    assert!(c.kernel_micros >= 1);
}

/// A device that says when it starts each block after the first.
struct Announcing {
    next_started: std::sync::Arc<(std::sync::Mutex<u32>, std::sync::Condvar)>,
}

impl OpenDevice for Announcing {
    fn product(&mut self, seeds: Seeds, p: &Params) -> Result<DeviceProduct, String> {
        let (started, cv) = &*self.next_started;
        *started.lock().unwrap() += 1;
        cv.notify_all();
        Ok(DeviceProduct {
            c: workload::product(p, &seeds),
            device_micros: 1,
        })
    }
}

#[test]
fn the_node_hashes_a_block_while_the_device_computes_the_next() {
    let seeds = workload::seeds("n1", "GPU-a");
    let started = std::sync::Arc::new((std::sync::Mutex::new(0u32), std::sync::Condvar::new()));
    let mut gpu = Announcing {
        next_started: started.clone(),
    };
    // Hashing row 0 waits for the device to start the second block: it can only start
    // while the first block's rows are still being hashed if the two overlap (one after
    // the other, this would wait in vain).
    let mut overlapped = None;
    let mut leaves = Vec::new();
    run_blocks(&mut gpu, &P, &seeds, 16, |i, row| {
        if i == 0 {
            let (count, cv) = &*started;
            let (count, _) = cv
                .wait_timeout_while(count.lock().unwrap(), std::time::Duration::from_secs(5), |n| {
                    *n < 2
                })
                .unwrap();
            overlapped = Some(*count >= 2);
        }
        leaves.push(workload::leaf(i, row));
    })
    .unwrap();
    assert_eq!(
        overlapped,
        Some(true),
        "the second block started while row 0 was hashed"
    );
    assert_eq!(
        leaves,
        workload::all_leaves(&P, &seeds),
        "still every row, in order"
    );
}

#[test]
fn host_memory_per_gpu_is_bounded_by_the_block_not_the_shape() {
    // A whole 4096³ f64 C is 128 MiB; blocks of 256 rows bring back 8 MiB at a time.
    let square = Params {
        arith: workload::Arith::F64,
        ..Params::u32(4096, 4096, 4096, 16)
    };
    let block = block_rows(&square).unwrap();
    assert_eq!(block, 256);
    assert!(u64::from(block) * 4096 * 8 <= HOST_BLOCK_BYTES);
    let bytes = host_bytes(&square).unwrap();
    assert!((16 << 20..18 << 20).contains(&bytes), "{bytes}");
    // The tallest challenge: its row tree dominates (64 B a row), not C.
    let tall = Params {
        arith: workload::Arith::F64,
        ..Params::u32(workload::MAX_ROWS, 65_536, 64, 19)
    };
    let bytes = host_bytes(&tall).unwrap();
    assert!((64 << 20..67 << 20).contains(&bytes), "{bytes}");
    // A shape the device refuses has no estimate.
    assert_eq!(host_bytes(&Params::u32(8, 65_536, 8_192, 4)), None);
}
