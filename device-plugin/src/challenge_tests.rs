#![allow(clippy::unwrap_used)]

use super::*;
use gpufed_trust::Params;

fn req(nonce: &str, seed: Option<&str>) -> ChallengeRequest {
    ChallengeRequest {
        nonce: nonce.into(),
        params: Params::u32(8, 4, 4, 3),
        open_seed: seed.map(str::to_owned),
    }
}

#[test]
fn a_simulated_node_commits_then_opens_and_keeps_its_answer() {
    let mut c = Challenger::new(Executor::Cpu, vec!["GPU-a".into(), "GPU-b".into()]);
    assert_eq!(c.answer(None), None);
    let first = c.answer(Some(&req("n1", None))).unwrap();
    assert_eq!(first.commits.len(), 2);
    assert!(first.commits.iter().all(|g| g.kernel_micros > 0));
    let opened = c.answer(Some(&req("n1", Some("s")))).unwrap();
    assert_eq!(opened.commits, first.commits, "computed once per nonce");
    assert_eq!(opened.openings.len(), 2);
    assert_eq!(
        c.answer(None),
        Some(opened),
        "request gone: the last answer stays"
    );
    let next = c.answer(Some(&req("n2", None))).unwrap();
    assert_ne!(next.commits[0].root, first.commits[0].root);
}

/// Computes on the CPU, but gets GPU-bad's row 0 wrong.
struct OneBadGpu;
struct Opened(bool);

impl crate::executor::DeviceRunner for OneBadGpu {
    fn open(&self, uuid: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
        Ok(Box::new(Opened(uuid == "GPU-bad")))
    }
}

impl crate::executor::OpenDevice for Opened {
    fn product(
        &mut self,
        seeds: gpufed_trust::workload::Seeds,
        p: &Params,
    ) -> Result<crate::executor::DeviceProduct, String> {
        let mut c = gpufed_trust::workload::product(p, &seeds);
        if self.0 {
            crate::executor::flip_low_bit(&mut c, 0);
        }
        Ok(crate::executor::DeviceProduct { c, device_micros: 77 })
    }
}

/// Each opened GPU waits (up to 10 s) until all of the node's GPUs are open at once,
/// and says whether they were.
struct Rendezvous {
    gpus: usize,
    open: std::sync::Mutex<usize>,
    all_open: std::sync::Condvar,
    met: std::sync::Mutex<Vec<bool>>,
}

impl crate::executor::DeviceRunner for Rendezvous {
    fn open(&self, _: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
        let mut open = self.open.lock().unwrap();
        *open += 1;
        self.all_open.notify_all();
        let (open, _) = self
            .all_open
            .wait_timeout_while(open, std::time::Duration::from_secs(10), |n| *n < self.gpus)
            .unwrap();
        self.met.lock().unwrap().push(*open == self.gpus);
        Ok(Box::new(Opened(false)))
    }
}

#[test]
fn a_nodes_gpus_compute_at_the_same_time() {
    let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
    let runner = std::sync::Arc::new(Rendezvous {
        gpus: uuids.len(),
        open: Default::default(),
        all_open: Default::default(),
        met: Default::default(),
    });
    struct Shared(std::sync::Arc<Rendezvous>);
    impl crate::executor::DeviceRunner for Shared {
        fn open(&self, uuid: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
            self.0.open(uuid)
        }
    }
    let got = compute_all(
        &Arc::new(Executor::Device(Box::new(Shared(runner.clone())))),
        &uuids,
        &req("n1", None),
        CHALLENGE_TIMEOUT,
        &mut BTreeMap::new(),
    );
    assert_eq!(got.len(), 4, "every GPU answered");
    assert_eq!(
        *runner.met.lock().unwrap(),
        vec![true; 4],
        "all four GPUs were open at once, not one after another"
    );
}

#[test]
fn a_gpu_that_computes_wrongly_is_left_out_and_the_others_answer() {
    let uuids = vec!["GPU-a".into(), "GPU-bad".into(), "GPU-c".into()];
    let mut c = Challenger::with_headroom(Executor::Device(Box::new(OneBadGpu)), uuids, || None);
    let got = c.answer(Some(&req("n1", None))).unwrap();
    let answered: Vec<&str> = got.commits.iter().map(|g| g.uuid.as_str()).collect();
    assert_eq!(answered, ["GPU-a", "GPU-c"]);
    assert!(got.commits.iter().all(|g| g.kernel_micros == 77));
    let opened = c.answer(Some(&req("n1", Some("s")))).unwrap();
    assert_eq!(opened.openings.len(), 2);
}

#[test]
fn gpus_beyond_the_containers_memory_wait_for_a_later_round() {
    let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
    // Room for two GPUs' answers to this request, not three.
    let room = || Some(2 * host_bytes(&req("n", None).params).unwrap() + 1);
    let mut c = Challenger::with_headroom(Executor::Device(Box::new(OneBadGpu)), uuids, room);
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..32 {
        let nonce = format!("n{round}");
        let got = c.answer(Some(&req(&nonce, None))).unwrap();
        assert_eq!(got.commits.len(), 2, "round {round}");
        let opened = c.answer(Some(&req(&nonce, Some("s")))).unwrap();
        assert_eq!(opened.openings.len(), 2, "the same two open");
        seen.extend(got.commits.into_iter().map(|g| g.uuid));
    }
    assert_eq!(seen.len(), 4, "each GPU answers in some round: {seen:?}");
    // No limit: all four at once.
    let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
    let mut c = Challenger::with_headroom(Executor::Device(Box::new(OneBadGpu)), uuids, || None);
    assert_eq!(c.answer(Some(&req("n1", None))).unwrap().commits.len(), 4);
}

#[test]
fn a_gpu_node_without_an_executor_and_oversized_work_are_not_answered() {
    let mut gpu = Challenger::new(Executor::Unavailable("no driver".into()), vec!["GPU-a".into()]);
    assert_eq!(gpu.answer(Some(&req("n1", None))), None);
    assert_eq!(
        gpu.answer(Some(&req("n1", Some("s")))),
        None,
        "computed once, still nothing"
    );
    let mut sim = Challenger::new(Executor::Cpu, vec!["GPU-a".into()]);
    let mut big = req("n1", None);
    big.params = Params::u32(65536, 65536, 65536, 3);
    assert_eq!(sim.answer(Some(&big)), None);
}

/// Computes on the CPU; opening GPU-hung blocks for good (a CUDA call on a GPU that fell
/// off the bus). Counts the opens of each GPU.
#[derive(Default)]
struct HangsOnOne {
    opened: std::sync::Mutex<Vec<String>>,
}

impl crate::executor::DeviceRunner for HangsOnOne {
    fn open(&self, uuid: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
        self.opened.lock().unwrap().push(uuid.to_owned());
        if uuid == "GPU-hung" {
            // Parked for good (a spurious wakeup parks again).
            loop {
                std::thread::park();
            }
        }
        Ok(Box::new(Opened(false)))
    }
}

struct SharedHangs(std::sync::Arc<HangsOnOne>);

impl crate::executor::DeviceRunner for SharedHangs {
    fn open(&self, uuid: &str) -> Result<Box<dyn crate::executor::OpenDevice + '_>, String> {
        self.0.open(uuid)
    }
}

/// Runs `f` on a thread of its own: a hang fails the test instead of blocking it.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the challenge answer hung")
}

#[test]
fn a_gpu_whose_computation_hangs_is_left_out_and_not_asked_again_while_it_hangs() {
    let runner = std::sync::Arc::new(HangsOnOne::default());
    let uuids = vec!["GPU-a".into(), "GPU-hung".into(), "GPU-c".into()];
    let c = Challenger::with_headroom(
        Executor::Device(Box::new(SharedHangs(runner.clone()))),
        uuids,
        || None,
    )
    .with_timeout(std::time::Duration::from_millis(300));
    let (c, first) = within(move || {
        let mut c = c;
        let a = c.answer(Some(&req("n1", None)));
        (c, a)
    });
    let answered: Vec<String> = first.unwrap().commits.into_iter().map(|g| g.uuid).collect();
    assert_eq!(answered, ["GPU-a", "GPU-c"]);
    let (_, second) = within(move || {
        let mut c = c;
        let a = c.answer(Some(&req("n2", None)));
        (c, a)
    });
    assert_eq!(second.unwrap().commits.len(), 2);
    let opened = runner.opened.lock().unwrap().clone();
    assert_eq!(
        opened.iter().filter(|u| *u == "GPU-hung").count(),
        1,
        "a GPU stuck in a computation is not opened again: {opened:?}"
    );
}

#[test]
fn gpus_that_are_not_eligible_are_not_computed_for() {
    let runner = std::sync::Arc::new(HangsOnOne::default());
    let uuids = vec!["GPU-a".into(), "GPU-hung".into()];
    let mut c = Challenger::with_headroom(
        Executor::Device(Box::new(SharedHangs(runner.clone()))),
        uuids,
        || None,
    )
    .with_timeout(std::time::Duration::from_secs(2));
    // GPU-hung is unhealthy: never opened, so the answer does not wait on it at all.
    let got = within(move || c.answer_among(Some(&req("n1", None)), |u| u != "GPU-hung")).unwrap();
    assert_eq!(got.commits.len(), 1);
    assert_eq!(*runner.opened.lock().unwrap(), ["GPU-a"]);
}
