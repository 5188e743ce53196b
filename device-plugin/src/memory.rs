//! How much memory the plugin's container may still take, and which GPUs answer a
//! challenge within it.
//!
//! Why: all of a node's GPUs answer at once, each holding its row tree and two blocks of C
//! ([`crate::executor::host_bytes`]). A node with more GPUs, or a taller challenge, than
//! the container's memory limit allows would be OOM-killed in the middle of its answer —
//! and with it the kubelet side (registration, ListAndWatch, Allocate) — again at every
//! round. Instead the plugin answers for as many GPUs as fit, rotating which ones by
//! nonce, and says what limit all of them need.

use std::path::Path;

/// Kept free beside a challenge: the plugin's own runtime, gRPC and kube clients.
pub const RESERVE_BYTES: u64 = 32 << 20;
/// cgroup v1 reports "no limit" as a huge page-aligned number; anything above this is none.
const UNLIMITED_ABOVE: u64 = 1 << 60;

/// The container's memory limit and what it uses now (its cgroup's figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cgroup {
    /// Bytes the container may use.
    pub limit: u64,
    /// Bytes it uses now.
    pub usage: u64,
}

impl Cgroup {
    /// This process's cgroup (v2 at `/sys/fs/cgroup`, else v1's memory controller);
    /// `None` when it has no memory limit or none can be read.
    pub fn current() -> Option<Self> {
        Self::read(Path::new("/sys/fs/cgroup"))
    }

    /// The figures under a cgroup mount `root` (v2 files first, then v1's).
    pub fn read(root: &Path) -> Option<Self> {
        let number = |file: &str| -> Option<u64> {
            std::fs::read_to_string(root.join(file)).ok()?.trim().parse().ok()
        };
        let (limit, usage) = match number("memory.max") {
            Some(limit) => (limit, number("memory.current")?),
            // v2 says "max" for no limit: not a number, and no v1 files either.
            None => (
                number("memory/memory.limit_in_bytes")?,
                number("memory/memory.usage_in_bytes")?,
            ),
        };
        (limit < UNLIMITED_ABOVE).then_some(Self { limit, usage })
    }

    /// What a challenge may take: the limit less the usage and [`RESERVE_BYTES`].
    pub fn headroom(&self) -> u64 {
        self.limit
            .saturating_sub(self.usage)
            .saturating_sub(RESERVE_BYTES)
    }
}

/// Which of `gpus` GPUs answer (indices, in order), when each takes `per_gpu` bytes and
/// `headroom` is what the container may still take (`None`: no limit). When not all fit,
/// the ones that do are a window starting at an offset drawn from `nonce`, so that over
/// rounds every GPU answers some.
pub fn answering(gpus: usize, per_gpu: u64, headroom: Option<u64>, nonce: &str) -> Vec<usize> {
    let fit = match headroom {
        Some(room) if per_gpu > 0 => usize::try_from(room / per_gpu).unwrap_or(usize::MAX),
        _ => usize::MAX,
    };
    if fit >= gpus {
        return (0..gpus).collect();
    }
    let offset = nonce
        .bytes()
        .fold(0u64, |h, b| gpufed_trust::workload::splitmix64(h ^ u64::from(b)));
    let start = usize::try_from(offset % gpus as u64).unwrap_or(0);
    let mut chosen: Vec<usize> = (0..fit).map(|k| (start + k) % gpus).collect();
    chosen.sort_unstable();
    chosen
}

/// Bytes as MiB, rounded up, for messages and Helm values.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v2_and_v1_limits_are_read_and_no_limit_is_none() {
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "memory.max", "268435456\n");
        write(v2.path(), "memory.current", "52428800\n");
        let cg = Cgroup::read(v2.path()).unwrap();
        assert_eq!(
            cg,
            Cgroup {
                limit: 256 << 20,
                usage: 50 << 20
            }
        );
        assert_eq!(cg.headroom(), (256 - 50 - 32) << 20);

        let unlimited = tempfile::tempdir().unwrap();
        write(unlimited.path(), "memory.max", "max\n");
        write(unlimited.path(), "memory.current", "1\n");
        assert_eq!(Cgroup::read(unlimited.path()), None);

        let v1 = tempfile::tempdir().unwrap();
        write(v1.path(), "memory/memory.limit_in_bytes", "1073741824\n");
        write(v1.path(), "memory/memory.usage_in_bytes", "1048576\n");
        assert_eq!(Cgroup::read(v1.path()).unwrap().limit, 1 << 30);
        write(v1.path(), "memory/memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(Cgroup::read(v1.path()), None, "v1's 'no limit'");

        assert_eq!(Cgroup::read(&v2.path().join("missing")), None);
        // Usage above the limit (page cache counted): no headroom, no underflow.
        assert_eq!(Cgroup { limit: 10, usage: 20 }.headroom(), 0);
    }

    #[test]
    fn gpus_that_do_not_fit_wait_and_the_window_rotates_with_the_nonce() {
        let mib = 1u64 << 20;
        assert_eq!(answering(8, 66 * mib, None, "n"), (0..8).collect::<Vec<_>>());
        assert_eq!(answering(8, 66 * mib, Some(600 * mib), "n").len(), 8);
        // 200 MiB of room, 66 MiB a GPU: three answer.
        let mut seen = std::collections::BTreeSet::new();
        for round in 0..64 {
            let chosen = answering(8, 66 * mib, Some(200 * mib), &format!("nonce-{round}"));
            assert_eq!(chosen.len(), 3, "{chosen:?}");
            assert!(chosen.windows(2).all(|w| w[0] < w[1]) && chosen.iter().all(|&g| g < 8));
            seen.extend(chosen);
        }
        assert_eq!(seen.len(), 8, "every GPU answers in some round");
        assert!(answering(8, 66 * mib, Some(10 * mib), "n").is_empty());
        assert!(answering(0, 66 * mib, Some(0), "n").is_empty());
        assert_eq!(super::mib(66 * mib + 1), 67);
    }
}
