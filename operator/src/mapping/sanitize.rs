//! Pure: each provider's part of a placement round, made fit for the engine.
//!
//! A member's report is untrusted: in pull mode an agent in the provider's own cluster
//! writes it, and the operator reads it as sent. The engine, though, rejects a whole
//! snapshot for one malformed node (two nodes of one name, a node without GPUs), which
//! would stop placement for the entire market. So each provider's nodes are cleaned here
//! first, then its part is checked by the engine on its own: a bad report costs its own
//! provider (some nodes, at worst its whole offer for the round), never the others.
//!
//! Reported numbers are bounded where they are mapped, as the engine takes them: GPUs per
//! node at `pl::MAX_GPUS_PER_NODE`, pods' GPU counts saturating, CPU and memory at
//! [`crate::fleet::MAX_CPU_MILLIS`] and [`crate::fleet::MAX_MEMORY_MIB`] with saturating
//! sums and a node's free never above its allocatable — so no CPU or memory figure, however
//! wrong, leaves a node out or makes the engine reject a part.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gpufed_placement as pl;

use crate::fleet::{GpuNode, MemberView};

/// Most characters of a node name repeated in a message: a hostile report may send
/// megabytes of name, and condition messages are bounded (32 KiB).
const NAME_CHARS: usize = 64;

/// Most problems a [`summary`] lists; the rest are counted.
const LISTED: usize = 3;

/// Why part of a provider's report sits out placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A node reports no allocatable GPUs. Push mode never lists such a node (see
    /// `provider::gpu_node`), and the engine cannot index an empty one.
    NoGpus {
        /// Node name.
        node: String,
    },
    /// Several nodes share a name. None of them is offered: which copy (if any) is the
    /// real node cannot be told, and pods and placements name nodes only by name.
    DuplicateNode {
        /// Node name.
        node: String,
        /// How many times the report lists it.
        copies: usize,
    },
    /// The engine rejected the provider's part of the snapshot: the whole provider sits
    /// out the round.
    Rejected(pl::SnapshotError),
}

impl Problem {
    /// Metric label of the problem.
    pub fn label(&self) -> &'static str {
        match self {
            Problem::NoGpus { .. } => "no_gpus",
            Problem::DuplicateNode { .. } => "duplicate_node",
            Problem::Rejected(_) => "rejected",
        }
    }

    /// Report entries (nodes) this problem leaves out; 0 for a rejected provider.
    pub fn nodes(&self) -> usize {
        match self {
            Problem::NoGpus { .. } => 1,
            Problem::DuplicateNode { copies, .. } => *copies,
            Problem::Rejected(_) => 0,
        }
    }
}

/// A name cut to [`NAME_CHARS`] characters, quoted.
fn short(name: &str) -> String {
    match name.char_indices().nth(NAME_CHARS) {
        Some((at, _)) => format!("{:?}…", &name[..at]),
        None => format!("{name:?}"),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoGpus { node } => write!(f, "node {} reports no allocatable GPUs", short(node)),
            Problem::DuplicateNode { node, copies } => {
                write!(f, "node {} is listed {copies} times", short(node))
            }
            Problem::Rejected(e) => write!(f, "placement engine rejected its inventory: {e}"),
        }
    }
}

/// A problem of one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Provider name.
    pub provider: String,
    /// What sits out, and why.
    pub problem: Problem,
}

/// One line of at most [`LISTED`] problems, the rest counted (for logs and conditions).
pub fn summary(problems: &[Problem]) -> String {
    let mut text = problems
        .iter()
        .take(LISTED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > LISTED {
        text.push_str(&format!(" (and {} more)", problems.len() - LISTED));
    }
    text
}

/// The nodes of a report the engine cannot take, and why: one entry per name, sorted.
pub fn problems(view: &MemberView) -> Vec<Problem> {
    let mut by_name: BTreeMap<&str, (usize, &GpuNode)> = BTreeMap::new();
    for n in &view.nodes {
        by_name.entry(&n.name).or_insert((0, n)).0 += 1;
    }
    by_name
        .into_iter()
        .filter_map(|(name, (copies, n))| {
            if copies > 1 {
                Some(Problem::DuplicateNode {
                    node: name.to_owned(),
                    copies,
                })
            } else {
                (n.allocatable == 0).then(|| Problem::NoGpus {
                    node: name.to_owned(),
                })
            }
        })
        .collect()
}

/// The report without the nodes the engine cannot take, and why each went. Borrowed
/// when nothing is wrong, so a valid report costs no copy and changes nothing.
pub fn view(view: &MemberView) -> (Cow<'_, MemberView>, Vec<Problem>) {
    let problems = problems(view);
    if problems.is_empty() {
        return (Cow::Borrowed(view), problems);
    }
    // A set, not a scan of `problems`: a hostile report may list many thousands of nodes.
    let dropped: BTreeSet<&str> = problems
        .iter()
        .filter_map(|p| match p {
            Problem::NoGpus { node } | Problem::DuplicateNode { node, .. } => Some(node.as_str()),
            Problem::Rejected(_) => None,
        })
        .collect();
    let mut clean = view.clone();
    clean.nodes.retain(|n| !dropped.contains(n.name.as_str()));
    (Cow::Owned(clean), problems)
}

/// One provider's part of the round: `build` maps its cleaned report; the part is then
/// checked by the engine alone. `None` when the engine rejects it (the provider sits
/// out). Every problem goes to `findings`.
pub fn part(
    provider: &str,
    report: &MemberView,
    build: impl FnOnce(&MemberView) -> (pl::Provider, Vec<pl::RunningAllocation>),
    findings: &mut Vec<Finding>,
) -> Option<pl::Snapshot> {
    let (clean, problems) = view(report);
    let finding = |problem| Finding {
        provider: provider.to_owned(),
        problem,
    };
    findings.extend(problems.into_iter().map(finding));
    let (p, running) = build(&clean);
    let part = pl::Snapshot {
        providers: vec![p],
        running,
        ..pl::Snapshot::default()
    };
    // The engine's own check, so this never drifts from what the engine accepts.
    if let Err(e) = pl::Engine::new(&part, &pl::Config::default()) {
        findings.push(finding(Problem::Rejected(e)));
        return None;
    }
    Some(part)
}

/// Removes from `snap` the provider `err` blames (for a running allocation, the provider
/// it runs on) with its running work; if that provider is not in the snapshot, the
/// allocation alone. Returns the provider's name, or `None` if nothing was removed.
fn leave_out(snap: &mut pl::Snapshot, err: &pl::SnapshotError) -> Option<String> {
    use pl::SnapshotError as E;
    let provider = match err {
        E::DuplicateProvider(p) | E::BadReputation(p) => p.clone(),
        E::DuplicateNode { provider, .. } | E::BadNode { provider, .. } => provider.clone(),
        E::BadAllocation(job) => {
            let on = snap.running.iter().find(|r| r.job == *job)?.provider.clone();
            if !snap.providers.iter().any(|p| p.id == on) {
                snap.running.retain(|r| r.job != *job);
                return Some(on);
            }
            on
        }
    };
    let before = (snap.providers.len(), snap.running.len());
    snap.providers.retain(|p| p.id != provider);
    snap.running.retain(|r| r.provider != provider);
    (before != (snap.providers.len(), snap.running.len())).then_some(provider)
}

/// Places `snap`. Should the engine still reject it (each part passed [`part`], so only
/// a fault across parts or a bug gets here), the provider the error names is left out
/// and the round tried again, rather than placing nothing anywhere. Returns the
/// decisions, or the error that blames no provider, and who was left out.
pub fn place_leaving_out(
    snap: &mut pl::Snapshot,
    cfg: &pl::Config,
) -> (Result<pl::Decisions, pl::SnapshotError>, Vec<Finding>) {
    let mut left_out = Vec::new();
    loop {
        match pl::place(snap, cfg) {
            Ok(d) => return (Ok(d), left_out),
            // Each retry removes something, so this ends.
            Err(e) => match leave_out(snap, &e) {
                Some(provider) => left_out.push(Finding {
                    provider,
                    problem: Problem::Rejected(e),
                }),
                None => return (Err(e), left_out),
            },
        }
    }
}

#[cfg(test)]
mod tests;
