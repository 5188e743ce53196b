//! What the NVML source's periodic reads of a GPU mean for its health. Pure (no NVML
//! types), so the logic is tested without a GPU; [`crate::nvml`] feeds it.
//!
//! Two things only a read can show: a double-bit ECC error the events missed (the
//! volatile uncorrected counter grew), and a reset (that counter went *down*: only a
//! reset or a driver reload zeroes it; or a GPU that was lost answers again). The reset is
//! what clears a fault that needs one ([`crate::health::FaultKind::Reset`]; a GPU answering
//! again, [`crate::health::FaultKind::Answering`], clears only a GPU that fell off the
//! bus). A count still above zero after a reset counts errors since that reset: a new
//! double-bit ECC fault, recorded after the reset.

use std::collections::{BTreeMap, BTreeSet};

use crate::health::FaultKind;

/// What a change of the volatile uncorrected ECC count means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccChange {
    /// Uncorrectable errors the plugin has not reported yet: a fault that needs a reset.
    Fault,
    /// The count went down: the GPU was reset since the previous read.
    Reset,
    /// Nothing new.
    Nothing,
}

/// `prev` is the count at the previous read (`None`: this is the first read since the
/// plugin started), `total` the count now. A count above zero at the first read is a
/// fault: the volatile counter counts since the last reset or driver load, so errors there
/// are on a GPU not reset since — a GPU that had a DBE before a plugin restart (a
/// DaemonSet upgrade) must not be served healthy because this process did not see it.
pub fn ecc_fault(prev: Option<u64>, total: u64) -> EccChange {
    match prev {
        None if total > 0 => EccChange::Fault,
        Some(p) if total > p => EccChange::Fault,
        Some(p) if total < p => EccChange::Reset,
        _ => EccChange::Nothing,
    }
}

/// What one periodic read of a GPU gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// The GPU cannot be found or says it is lost.
    Lost(String),
    /// It answered; its volatile uncorrected ECC count.
    Ecc(u64),
    /// It answered, and has no ECC counter to read (ECC off or unsupported).
    Answered,
}

/// The previous reads of every GPU: its last ECC count, and whether it was lost.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    ecc: BTreeMap<String, u64>,
    lost: BTreeSet<String>,
}

impl Readings {
    /// Whether the last read of `uuid` found it lost.
    pub fn is_lost(&self, uuid: &str) -> bool {
        self.lost.contains(uuid)
    }

    /// Takes `count` as the previous read of `uuid`'s volatile uncorrected ECC count, when
    /// this process has not read it yet: the count saved with a wait for a reset before a
    /// plugin restart ([`crate::resetfile`]). A first read lower than it is the reset;
    /// the same count is nothing new (the fault is already held).
    pub fn resume(&mut self, uuid: &str, count: u64) {
        self.ecc.entry(uuid.to_owned()).or_insert(count);
    }

    /// What a new read of `uuid` means, in the order to record it: a reset comes before a
    /// fault seen in the same read (the fault then needs a reset of its own).
    pub fn observe(&mut self, uuid: &str, reading: Reading) -> Vec<FaultKind> {
        let mut out = Vec::new();
        let back = match &reading {
            Reading::Lost(_) => false,
            Reading::Ecc(_) | Reading::Answered => self.lost.remove(uuid),
        };
        let back_again = || FaultKind::Answering("the lost GPU answers NVML again".to_owned());
        match reading {
            Reading::Lost(why) => {
                self.lost.insert(uuid.to_owned());
                out.push(FaultKind::Lost(why));
            }
            Reading::Answered => {
                if back {
                    out.push(back_again());
                }
            }
            Reading::Ecc(total) => {
                let prev = self.ecc.insert(uuid.to_owned(), total);
                let change = ecc_fault(prev, total);
                // The count dropping is the stronger evidence (it ends any wait).
                let reset = if change == EccChange::Reset {
                    Some(FaultKind::Reset(format!(
                        "the volatile uncorrected ECC count went down from {} to {total}",
                        prev.unwrap_or_default()
                    )))
                } else {
                    back.then(back_again)
                };
                // After a reset the volatile count starts again from zero: anything above
                // it is an uncorrectable error since the reset (4 -> 1 is one new DBE),
                // which would otherwise go unreported, as the count may never move again.
                let fault = match reset {
                    Some(_) => total > 0,
                    None => change == EccChange::Fault,
                };
                out.extend(reset);
                if fault {
                    out.push(FaultKind::DoubleBitEcc { total });
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ecc_counts_say_fault_reset_or_nothing() {
        // First read: errors already counted are a fault (not a baseline).
        assert_eq!(ecc_fault(None, 0), EccChange::Nothing);
        assert_eq!(ecc_fault(None, 3), EccChange::Fault);
        assert_eq!(ecc_fault(Some(3), 3), EccChange::Nothing);
        assert_eq!(ecc_fault(Some(3), 4), EccChange::Fault);
        assert_eq!(ecc_fault(Some(4), 0), EccChange::Reset);
        assert_eq!(ecc_fault(Some(4), 1), EccChange::Reset);
        assert_eq!(ecc_fault(Some(0), 0), EccChange::Nothing);
    }

    #[test]
    fn a_plugin_started_after_a_dbe_reports_it_then_sees_the_reset() {
        let mut r = Readings::default();
        assert_eq!(
            r.observe("GPU-a", Reading::Ecc(2)),
            vec![FaultKind::DoubleBitEcc { total: 2 }]
        );
        assert!(r.observe("GPU-a", Reading::Ecc(2)).is_empty(), "reported once");
        let reset = r.observe("GPU-a", Reading::Ecc(0));
        assert!(
            matches!(&reset[..], [FaultKind::Reset(why)] if why.contains("from 2 to 0")),
            "{reset:?}"
        );
        assert!(r.observe("GPU-a", Reading::Ecc(0)).is_empty());
        assert!(r.observe("GPU-b", Reading::Ecc(0)).is_empty(), "a clean GPU");
    }

    #[test]
    fn a_lost_gpu_that_answers_again_was_reset() {
        let mut r = Readings::default();
        r.observe("GPU-a", Reading::Ecc(0));
        assert_eq!(
            r.observe("GPU-a", Reading::Lost("gone".into())),
            vec![FaultKind::Lost("gone".into())]
        );
        assert!(r.is_lost("GPU-a"));
        assert_eq!(r.observe("GPU-a", Reading::Lost("gone".into())).len(), 1);
        let back = r.observe("GPU-a", Reading::Ecc(0));
        assert!(matches!(&back[..], [FaultKind::Answering(why)] if why.contains("answers")));
        assert!(!r.is_lost("GPU-a"));
        assert!(r.observe("GPU-a", Reading::Answered).is_empty(), "once");
        // Without ECC counters: answering is the evidence.
        r.observe("GPU-b", Reading::Lost("gone".into()));
        assert!(matches!(
            &r.observe("GPU-b", Reading::Answered)[..],
            [FaultKind::Answering(_)]
        ));
        // Back with new uncorrectable errors: the reset first, then the new fault.
        r.observe("GPU-c", Reading::Ecc(0));
        r.observe("GPU-c", Reading::Lost("gone".into()));
        let both = r.observe("GPU-c", Reading::Ecc(5));
        assert!(
            matches!(
                &both[..],
                [FaultKind::Answering(_), FaultKind::DoubleBitEcc { total: 5 }]
            ),
            "{both:?}"
        );
    }

    /// The defect: a GPU reset while the plugin was down (as `nvidia-smi -r` wants) read 0
    /// at the first read, "nothing", and waited for a reset for ever. With the count saved
    /// before the restart, the lower count is the reset.
    #[test]
    fn a_count_saved_before_a_restart_makes_a_lower_first_read_a_reset() {
        let mut r = Readings::default();
        r.resume("GPU-a", 3);
        let reset = r.observe("GPU-a", Reading::Ecc(0));
        assert!(
            matches!(&reset[..], [FaultKind::Reset(why)] if why.contains("from 3 to 0")),
            "{reset:?}"
        );
        // Not reset: the same count is the fault already held; a higher one a new fault.
        r.resume("GPU-b", 3);
        assert!(r.observe("GPU-b", Reading::Ecc(3)).is_empty());
        r.resume("GPU-c", 3);
        assert_eq!(
            r.observe("GPU-c", Reading::Ecc(5)),
            vec![FaultKind::DoubleBitEcc { total: 5 }]
        );
        // Only before this process's own first read.
        r.resume("GPU-a", 9);
        assert!(r.observe("GPU-a", Reading::Ecc(0)).is_empty());
    }

    /// A count that drops but stays above zero was reset, then counted new uncorrectable
    /// errors: the reset, then a fault (the 1 would otherwise never be reported).
    #[test]
    fn a_count_above_zero_after_a_reset_is_a_new_fault() {
        let mut r = Readings::default();
        r.observe("GPU-a", Reading::Ecc(4));
        let both = r.observe("GPU-a", Reading::Ecc(1));
        assert!(
            matches!(
                &both[..],
                [FaultKind::Reset(why), FaultKind::DoubleBitEcc { total: 1 }] if why.contains("from 4 to 1")
            ),
            "{both:?}"
        );
        assert!(r.observe("GPU-a", Reading::Ecc(1)).is_empty(), "reported once");
        // A lost GPU back with the count it had: answering, then the errors still counted.
        r.observe("GPU-a", Reading::Lost("gone".into()));
        let back = r.observe("GPU-a", Reading::Ecc(1));
        assert!(
            matches!(
                &back[..],
                [FaultKind::Answering(_), FaultKind::DoubleBitEcc { total: 1 }]
            ),
            "{back:?}"
        );
        // Back with a lower count: the count is the evidence, then the fault.
        r.observe("GPU-a", Reading::Lost("gone".into()));
        let lower = r.observe("GPU-a", Reading::Ecc(0));
        assert!(matches!(&lower[..], [FaultKind::Reset(_)]), "{lower:?}");
    }
}
