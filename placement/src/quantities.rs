//! CPU, memory, local ephemeral storage and extended resources: what a node has and what
//! one worker asks for, in the units kube-scheduler's resource fit counts.

use std::fmt;

/// CPU, memory and local ephemeral storage: what a node has, or what one worker asks for
/// (a pod's requests), as kube-scheduler's resource fit counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Local ephemeral storage in MiB (`emptyDir` volumes, writable layers, logs).
    pub ephemeral_mib: u64,
    /// Extended resources (RDMA devices, hugepages, other device plugins' resources), by
    /// slot: slot `i` is [`crate::Snapshot::extended_resources`]`[i]`. Whole units as the
    /// scheduler counts them; hugepages in MiB.
    pub extended: [u64; EXTENDED_SLOTS],
}

/// Extended resources one round models: the caller names at most this many
/// ([`crate::Snapshot::extended_resources`]); fixed, so that [`Resources`] stays a small
/// `Copy` value on the engine's hot paths.
pub const EXTENDED_SLOTS: usize = 4;
// Pools and jobs keep the slots they have or ask for in a `u8`.
const _: () = assert!(EXTENDED_SLOTS <= 8);

impl Resources {
    /// Nothing asked for.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_mib: 0,
        ephemeral_mib: 0,
        extended: [0; EXTENDED_SLOTS],
    };

    /// CPU in millicores and memory in MiB, no ephemeral storage.
    pub const fn cpu_memory(cpu_millis: u64, memory_mib: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_mib,
            ephemeral_mib: 0,
            extended: [0; EXTENDED_SLOTS],
        }
    }

    /// Whether nothing is asked for.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    fn zip(&self, other: &Resources, f: impl Fn(u64, u64) -> u64) -> Resources {
        Resources {
            cpu_millis: f(self.cpu_millis, other.cpu_millis),
            memory_mib: f(self.memory_mib, other.memory_mib),
            ephemeral_mib: f(self.ephemeral_mib, other.ephemeral_mib),
            extended: std::array::from_fn(|i| f(self.extended[i], other.extended[i])),
        }
    }

    /// Whether each of `self` is at most the same of `other`.
    pub fn within(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.memory_mib <= other.memory_mib
            && self.ephemeral_mib <= other.ephemeral_mib
            && self.extended.iter().zip(&other.extended).all(|(a, b)| a <= b)
    }

    /// How many workers asking `per` each fit in `self` (`u32::MAX` when `per` asks for
    /// nothing).
    pub fn workers(&self, per: &Resources) -> u32 {
        let fit = |have: u64, ask: u64| {
            have.checked_div(ask)
                .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        fit(self.cpu_millis, per.cpu_millis)
            .min(fit(self.memory_mib, per.memory_mib))
            .min(fit(self.ephemeral_mib, per.ephemeral_mib))
            .min(
                self.extended
                    .iter()
                    .zip(&per.extended)
                    .map(|(&have, &ask)| fit(have, ask))
                    .min()
                    .unwrap_or(u32::MAX),
            )
    }

    /// Bit `i` set where extended slot `i` is not zero.
    pub fn extended_mask(&self) -> u8 {
        self.extended
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .fold(0, |m, (i, _)| m | (1 << i))
    }

    /// `n` times `self`, saturating.
    pub fn times(&self, n: u32) -> Resources {
        self.zip(&Self::ZERO, |a, _| a.saturating_mul(u64::from(n)))
    }

    /// Each of `self` divided by `n` (rounded down; `self` when `n` is 0).
    pub fn per(&self, n: u64) -> Resources {
        self.zip(&Self::ZERO, |a, _| a.checked_div(n).unwrap_or(a))
    }

    /// `self + other`, saturating.
    pub fn plus(&self, other: &Resources) -> Resources {
        self.zip(other, u64::saturating_add)
    }

    /// `self − other`, floored at zero.
    pub fn minus(&self, other: &Resources) -> Resources {
        self.zip(other, u64::saturating_sub)
    }

    /// The smaller of each.
    pub fn min_each(&self, other: &Resources) -> Resources {
        self.zip(other, std::cmp::min)
    }

    /// The larger of each.
    pub fn max_each(&self, other: &Resources) -> Resources {
        self.zip(other, std::cmp::max)
    }
}

/// MiB as GiB when whole.
pub(crate) fn mib(n: u64) -> String {
    if n.is_multiple_of(1024) {
        format!("{} GiB", n / 1024)
    } else {
        format!("{n} MiB")
    }
}

impl Resources {
    /// `4 CPU, 16 GiB memory and 2 rdma/ib`, naming only what is asked for; extended
    /// slot `i` is called `names[i]` (hugepages in MiB).
    pub fn describe(&self, names: &[String]) -> String {
        let mut parts = Vec::with_capacity(3);
        if self.cpu_millis > 0 {
            parts.push(if self.cpu_millis.is_multiple_of(1000) {
                format!("{} CPU", self.cpu_millis / 1000)
            } else {
                format!("{}m CPU", self.cpu_millis)
            });
        }
        if self.memory_mib > 0 {
            parts.push(format!("{} memory", mib(self.memory_mib)));
        }
        if self.ephemeral_mib > 0 {
            parts.push(format!("{} ephemeral storage", mib(self.ephemeral_mib)));
        }
        for (i, &n) in self.extended.iter().enumerate().filter(|(_, n)| **n > 0) {
            let unnamed = format!("extended resource {i}");
            let name = names.get(i).unwrap_or(&unnamed);
            parts.push(if is_hugepages(name) {
                format!("{} {name}", mib(n))
            } else {
                format!("{n} {name}")
            });
        }
        match parts.split_last() {
            None => "no CPU or memory".to_owned(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }
}

/// Whether an extended resource is hugepages (counted in MiB, not in units).
pub fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

impl fmt::Display for Resources {
    /// [`Resources::describe`] with unnamed extended resources.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&[]))
    }
}

/// A node's CPU, memory and ephemeral storage as its cluster reports them (one it does
/// not report is unlimited: `u64::MAX`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeResources {
    /// Allocatable: what the node holds when nothing runs there.
    pub allocatable: Resources,
    /// Free for new workers now: allocatable less the requests of the pods bound there
    /// and of the running work placed there ([`crate::RunningAllocation::resources`]).
    pub free: Resources,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_count_workers_and_read_well() {
        let node = Resources::cpu_memory(64_000, 256 * 1024);
        let worker = Resources::cpu_memory(20_000, 0);
        assert_eq!(node.workers(&worker), 3);
        assert_eq!(node.workers(&Resources::ZERO), u32::MAX);
        let mem = Resources::cpu_memory(0, 100 * 1024);
        assert_eq!(node.workers(&mem), 2);
        assert_eq!(node.minus(&worker.times(4)).cpu_millis, 0);
        assert_eq!(worker.to_string(), "20 CPU");
        assert_eq!(worker.plus(&mem).to_string(), "20 CPU and 100 GiB memory");
        let odd = Resources::cpu_memory(1500, 1000);
        assert_eq!(odd.to_string(), "1500m CPU and 1000 MiB memory");
        let disk = Resources {
            ephemeral_mib: 200 * 1024,
            ..odd
        };
        assert_eq!(
            disk.to_string(),
            "1500m CPU, 1000 MiB memory and 200 GiB ephemeral storage"
        );
        assert_eq!(disk.workers(&disk), 1);
        assert!(odd.within(&disk) && !disk.within(&odd));
    }
}
