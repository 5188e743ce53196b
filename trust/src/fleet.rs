//! Fleet-wide uniqueness: a GPU UUID belongs to one node of one provider, and so does a
//! board serial number where boards report one (data-center boards do). A serial seen on
//! two nodes is one physical card listed twice — typically sliced into virtual GPUs,
//! each with a UUID of its own, which UUIDs alone cannot catch. One node may report a
//! serial for up to [`MAX_GPUS_PER_BOARD`] GPUs: boards with two or four GPUs carry one
//! serial.
//!
//! Every claimant of a duplicated UUID is flagged, and none of those GPUs counts as
//! verified until only one claim remains: the hub cannot tell the original from the
//! clone (both may even pass the challenge with a real card of the same model), so it
//! trusts neither. A duplicate is not slashed automatically (an administrator may, with
//! the Stake's slash-request annotation and kind `duplicate-gpu`): a cloner could use it
//! to grief an honest provider whose UUIDs it copied. Two exceptions: a proven lie keeps
//! its own reason (it is `failed-challenge` evidence, which slashes; sharing a serial must
//! not turn it into a duplicate, which does not), and a provider's node that never
//! answered and its other nodes make no duplicates of each other.

use std::collections::{BTreeMap, BTreeSet};

use crate::session::GpuVerdict;
use crate::verify::Failure;

/// One claim: `provider` says node `node` holds GPU `uuid`, on the board `serial`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Node name.
    pub node: &'a str,
    /// GPU UUID (compared case-insensitively).
    pub uuid: &'a str,
    /// Board serial number, if reported (compared case-insensitively; placeholders such
    /// as `N/A` or all zeros are no serial, [`board_serial`]).
    pub serial: Option<&'a str>,
}

/// A reported board serial as compared, or `None` for none: empty, all zeros, or a
/// placeholder (`N/A`, `Not Available`, `Unknown`) as some boards and drivers report —
/// honest nodes sharing a placeholder must not be flagged.
pub fn board_serial(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_uppercase();
    let placeholder = s.chars().all(|c| c == '0' || c == '-' || c == ' ')
        || ["N/A", "[N/A]", "NA", "NOT AVAILABLE", "UNKNOWN", "NONE"].contains(&s.as_str());
    (!placeholder).then_some(s)
}

/// Duplicated UUIDs (normalized to upper case) → every `provider/node` claiming them.
pub fn duplicates<'a>(claims: impl IntoIterator<Item = Claim<'a>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_uuid: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in claims {
        by_uuid
            .entry(c.uuid.trim().to_ascii_uppercase())
            .or_default()
            .insert(format!("{}/{}", c.provider, c.node));
    }
    by_uuid.retain(|_, who| who.len() > 1);
    by_uuid
}

/// Board serials (as [`board_serial`] compares them) reported by more than one node →
/// every `provider/node` reporting them.
pub fn duplicate_serials<'a>(
    claims: impl IntoIterator<Item = Claim<'a>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_serial: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in claims {
        if let Some(serial) = c.serial.and_then(board_serial) {
            by_serial
                .entry(serial)
                .or_default()
                .insert(format!("{}/{}", c.provider, c.node));
        }
    }
    by_serial.retain(|_, who| who.len() > 1);
    by_serial
}

/// The other claimants of `uuid`, seen from `me` (`provider/node`), comma separated;
/// `None` when the UUID is unique.
pub fn others(dups: &BTreeMap<String, BTreeSet<String>>, uuid: &str, me: &str) -> Option<String> {
    others_of(dups, &uuid.trim().to_ascii_uppercase(), me)
}

fn others_of(dups: &BTreeMap<String, BTreeSet<String>>, key: &str, me: &str) -> Option<String> {
    let who = dups.get(key)?;
    let rest: Vec<&str> = who.iter().map(String::as_str).filter(|w| *w != me).collect();
    Some(if rest.is_empty() {
        me.to_owned()
    } else {
        rest.join(",")
    })
}

/// One node's latest verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVerdicts {
    /// Provider name.
    pub provider: String,
    /// Node name.
    pub node: String,
    /// One verdict per GPU the node claims.
    pub verdicts: Vec<GpuVerdict>,
    /// GPUs the node sells (its kubelet's count): a node selling more GPUs than its report
    /// verified is no verified node, however many of those passed — one real card would
    /// otherwise stand for all of them.
    pub sold: u32,
    /// The model the node sells (its label; empty: not known): a node whose verified GPUs
    /// are of another model is no verified node — an RTX 4090 passing in its own band
    /// would otherwise vouch for "H100"s.
    pub sold_model: String,
    /// UUIDs of GPUs that passed only between rounds while the hub holds such passes on
    /// probation (docs/trust.md, "Probation"): they count neither as verified nor as
    /// failed, and their node serves no verified-only job yet.
    pub probation: BTreeSet<String>,
}

/// A provider's verification result across its nodes, uniqueness applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderVerdict {
    /// GPUs that passed and are unique.
    pub verified: u32,
    /// GPUs that did not (any reason).
    pub failed: u32,
    /// GPUs that passed and are unique, on probation until they pass a round.
    pub on_probation: u32,
    /// Verified GPUs by model.
    pub verified_by_model: BTreeMap<String, u32>,
    /// `(node, verdict)` of every GPU that did not verify.
    pub failures: Vec<(String, GpuVerdict)>,
    /// Nodes that claimed at least one GPU and whose every claimed GPU verified: the only
    /// nodes a job that wants verified GPUs may use.
    pub verified_nodes: BTreeSet<String>,
}

impl ProviderVerdict {
    /// Evidence kinds among the failures, each once.
    pub fn evidence_kinds(&self) -> BTreeSet<&'static str> {
        self.failures
            .iter()
            .filter_map(|(_, v)| v.failure.as_ref()?.evidence_kind())
            .collect()
    }
}

/// Whether a GPU of `model` (as its report names it) is what a node labelled `sold`
/// sells. Compared on letters and digits alone (a label value replaces other characters
/// with `-`); a label of 63 characters may have been cut, so it need only be a prefix. A
/// node of several models (`mixed`) or of none known (`unknown`, empty) sells no one
/// model: nothing to compare.
fn sold_as(sold: &str, model: &str) -> bool {
    let id = |m: &str| -> String {
        m.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let (label, sold, model) = (sold, id(sold), id(model));
    sold.is_empty()
        || sold == "mixed"
        || sold == "unknown"
        || model == sold
        || (label.len() >= 63 && model.starts_with(&sold))
}

/// Most GPUs of one node that may share a board serial: one board carries up to four GPUs
/// under one serial (dual-GPU boards, NVIDIA's four-GPU A16). More on one node is one card
/// listed as several, e.g. an H100 sliced into 7 MIG devices that report their parent's
/// serial, which the check across nodes never sees; every one of them is
/// `DuplicateSerial`.
pub const MAX_GPUS_PER_BOARD: usize = 4;

/// One claim of a UUID or a board serial, as uniqueness compares them.
struct Claimant<'a> {
    provider: &'a str,
    /// `provider/node`.
    who: String,
    /// Its verdict is `NotAnswered`.
    silent: bool,
}

/// Claimants by UUID or board serial (normalized).
type Index<'a> = BTreeMap<String, Vec<Claimant<'a>>>;

/// The claimants of `key` that make `me`'s claim (of `provider`) a duplicate, comma
/// separated; `None` when none does. A silent claim of another node of the same provider
/// does not: that is the provider's own stale node (renamed or re-registered, its old
/// Node object still listed and never answering), which verifies nothing, so it cannot
/// count a GPU twice; nor, when `me` is that silent node (`silent`), does the provider's
/// live one. A claim of another provider, silent or not, still does: a duplicate flags
/// every provider claiming it.
fn conflicts(index: &Index<'_>, key: &str, provider: &str, me: &str, silent: bool) -> Option<String> {
    let others: BTreeSet<&str> = index
        .get(key)?
        .iter()
        .filter(|c| c.who != me && (c.provider != provider || !(c.silent || silent)))
        .map(|c| c.who.as_str())
        .collect();
    (!others.is_empty()).then(|| others.into_iter().collect::<Vec<_>>().join(","))
}

/// Board serials more than [`MAX_GPUS_PER_BOARD`] of these GPUs (one node's) share →
/// how many do.
fn crowded_boards(verdicts: &[GpuVerdict]) -> BTreeMap<String, usize> {
    let mut on_board: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for v in verdicts {
        if let Some(serial) = v.serial.as_deref().and_then(board_serial) {
            on_board
                .entry(serial)
                .or_default()
                .insert(v.uuid.trim().to_ascii_uppercase());
        }
    }
    on_board
        .into_iter()
        .filter(|(_, gpus)| gpus.len() > MAX_GPUS_PER_BOARD)
        .map(|(serial, gpus)| (serial, gpus.len()))
        .collect()
}

/// Why `v`, claimed by `me` of `provider`, is a duplicate, if it is: its UUID claimed
/// elsewhere (named first), its board serial reported by another node, or by more GPUs of
/// its own node than one board carries.
fn duplicate(
    v: &GpuVerdict,
    provider: &str,
    me: &str,
    (uuids, serials): (&Index<'_>, &Index<'_>),
    crowded: &BTreeMap<String, usize>,
) -> Option<Failure> {
    let silent = matches!(v.failure, Some(Failure::NotAnswered { .. }));
    if let Some(others) = conflicts(uuids, &v.uuid.trim().to_ascii_uppercase(), provider, me, silent) {
        return Some(Failure::DuplicateUuid { others });
    }
    let serial = v.serial.as_deref().and_then(board_serial)?;
    let others = conflicts(serials, &serial, provider, me, silent)
        .or_else(|| Some(format!("{me} ({} GPUs on one board)", crowded.get(&serial)?)))?;
    Some(Failure::DuplicateSerial { serial, others })
}

/// Judges the whole fleet: per-node verdicts, then UUID and board-serial uniqueness over
/// every claim. A duplicate is a failure for every claimant, except that a proven lie
/// (`WrongDigest`, `BadOpening`, `ImpossiblyFast`) stays one, with its `failed-challenge`
/// evidence, rather than being laundered into a duplicate by a serial or UUID shared with
/// another node.
pub fn judge(nodes: &[NodeVerdicts]) -> BTreeMap<String, ProviderVerdict> {
    let (mut uuids, mut serials) = (Index::new(), Index::new());
    for n in nodes {
        let who = format!("{}/{}", n.provider, n.node);
        for v in &n.verdicts {
            let claimant = || Claimant {
                provider: &n.provider,
                who: who.clone(),
                silent: matches!(v.failure, Some(Failure::NotAnswered { .. })),
            };
            uuids
                .entry(v.uuid.trim().to_ascii_uppercase())
                .or_default()
                .push(claimant());
            if let Some(serial) = v.serial.as_deref().and_then(board_serial) {
                serials.entry(serial).or_default().push(claimant());
            }
        }
    }
    let mut out: BTreeMap<String, ProviderVerdict> = BTreeMap::new();
    for n in nodes {
        let me = format!("{}/{}", n.provider, n.node);
        let crowded = crowded_boards(&n.verdicts);
        let pv = out.entry(n.provider.clone()).or_default();
        let mut all_passed = !n.verdicts.is_empty();
        for v in &n.verdicts {
            let mut v = v.clone();
            // A proven lie keeps its reason (it stays `failed-challenge` evidence, which
            // slashes; a duplicate does not), while its claim above still flags the other
            // claimants. Every other claimant of a duplicate is flagged as one — a cloner
            // that merely fails (silent, slow, simulated) included, or the honest owner
            // alone would carry the flag and its evidence.
            let lie = v
                .failure
                .as_ref()
                .is_some_and(|f| f.evidence_kind() == Some(crate::verify::EVIDENCE_FAILED_CHALLENGE));
            if !lie && let Some(d) = duplicate(&v, &n.provider, &me, (&uuids, &serials), &crowded) {
                v.failure = Some(d);
            }
            if v.passed() && n.probation.contains(&v.uuid) {
                all_passed = false;
                pv.on_probation += 1;
            } else if v.passed() {
                pv.verified += 1;
                *pv.verified_by_model.entry(v.model.clone()).or_default() += 1;
            } else {
                all_passed = false;
                pv.failed += 1;
                pv.failures.push((n.node.clone(), v));
            }
        }
        let covered = u32::try_from(n.verdicts.len()).unwrap_or(u32::MAX) >= n.sold;
        let as_sold = n.verdicts.iter().all(|v| sold_as(&n.sold_model, &v.model));
        if all_passed && covered && as_sold {
            pv.verified_nodes.insert(n.node.clone());
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "fleet_tests.rs"]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "fleet_serial_tests.rs"]
mod serial_tests;
