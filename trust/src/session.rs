//! The hub's side of one node's challenge: issue → commitment → open → verdicts.
//!
//! Pure: the caller supplies the nonce, the open seed and the time, and writes the
//! requests [`Step::Open`] asks for. A session that is lost (leader change) is simply
//! started again with a new nonce; nothing depends on it having finished.

use serde::{Deserialize, Serialize};

use crate::bands::Bands;
use crate::protocol::{ChallengeAnswer, ChallengeRequest, GpuCommit};
use crate::verify::{Failure, check_opening, check_timing};

/// A GPU a node claims (from its signed report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuClaim {
    /// UUID.
    pub uuid: String,
    /// Model.
    pub model: String,
    /// Board serial number, where the board reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// The outcome for one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuVerdict {
    /// UUID.
    pub uuid: String,
    /// Claimed model.
    pub model: String,
    /// Claimed board serial number, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// `None` when it passed; else why not.
    pub failure: Option<Failure>,
}

impl GpuVerdict {
    fn new(claim: &GpuClaim, failure: Option<Failure>) -> Self {
        Self {
            uuid: claim.uuid.clone(),
            model: claim.model.clone(),
            serial: claim.serial.clone(),
            failure,
        }
    }

    /// Passed the challenge (uniqueness is judged separately).
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// What the hub currently reads from a node: its claims and its latest answer, from a
/// report whose signature was checked.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// GPUs the node claims.
    pub claims: &'a [GpuClaim],
    /// The report says `--simulate`.
    pub simulated: bool,
    /// The challenge answer in the report, if any.
    pub answer: Option<&'a ChallengeAnswer>,
}

/// What the node committed to, and when the hub saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The commitments as first seen (later changes are ignored).
    pub commits: Vec<GpuCommit>,
    /// Issue → commitment, as the hub saw it, ms.
    pub round_trip_ms: u64,
    /// The report that carried the commitment said `--simulate`: its times are a CPU's,
    /// no evidence about the card it declares, even when no report can be read later.
    pub simulated: bool,
}

/// One node's challenge in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What the node was asked (with the open seed once sent).
    pub request: ChallengeRequest,
    /// When the challenge was issued, ms.
    pub issued_at_ms: u64,
    /// The commitment, once seen.
    pub committed: Option<Committed>,
    /// The GPUs the challenge was issued for: each is judged, whatever the node lists
    /// later (one it drops after committing, or after seeing the open seed, would escape
    /// its verdict — and a signed impossible time its evidence).
    pub claims: Vec<GpuClaim>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing new from the node yet.
    Wait,
    /// The node committed: write this request (it carries the open seed).
    Open(ChallengeRequest),
    /// Finished: one verdict per claimed GPU.
    Done(Vec<GpuVerdict>),
}

/// Starts a challenge for a node's GPUs, shaped by the band of its first GPU's model.
/// `Err` carries the verdicts when there is nothing to challenge (no GPU, or no band).
pub fn start(
    nonce: String,
    claims: &[GpuClaim],
    bands: &Bands,
    now_ms: u64,
) -> Result<Session, Vec<GpuVerdict>> {
    let first = claims.first().ok_or_else(Vec::new)?;
    let Some(band) = bands.get(&first.model) else {
        return Err(claims
            .iter()
            .map(|c| {
                GpuVerdict::new(
                    c,
                    Some(Failure::NoBand {
                        model: c.model.clone(),
                    }),
                )
            })
            .collect());
    };
    Ok(Session {
        request: ChallengeRequest {
            nonce,
            params: band.params,
            open_seed: None,
        },
        issued_at_ms: now_ms,
        committed: None,
        claims: claims.to_vec(),
    })
}

impl Session {
    /// Advances with the node's latest (authenticated) answer.
    pub fn advance(
        &mut self,
        node: NodeView<'_>,
        bands: &Bands,
        open_seed: &str,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Step {
        let NodeView {
            claims: listed,
            simulated,
            answer,
        } = node;
        // The GPUs challenged, then any the node lists besides.
        let mut all = self.claims.clone();
        all.extend(
            listed
                .iter()
                .filter(|c| !self.claims.iter().any(|k| k.uuid == c.uuid))
                .cloned(),
        );
        let claims = all.as_slice();
        let answer = answer.filter(|a| a.nonce == self.request.nonce);
        if let Some(a) = answer {
            // After a commitment in the asked arithmetic, an answer in another is no way
            // out of that commitment: it is ignored (the timeout judges the commitment).
            if a.arith != self.request.params.arith && !a.commits.is_empty() && self.committed.is_some() {
                return self.wait_or_time_out(claims, now_ms, timeout_ms, bands);
            }
            if a.arith != self.request.params.arith && !a.commits.is_empty() {
                // Not evidence: an honest node whose plugin predates this arithmetic
                // computes the other workload, and its digests would all be "wrong".
                let f = Failure::NotAnswered {
                    detail: format!(
                        "the node computed the {} workload, the challenge asked for {} (a device plugin older than the hub?)",
                        a.arith.as_str(),
                        self.request.params.arith.as_str()
                    ),
                };
                return Step::Done(
                    claims
                        .iter()
                        .map(|c| GpuVerdict::new(c, Some(f.clone())))
                        .collect(),
                );
            }
            match &self.committed {
                None if !a.commits.is_empty() => {
                    self.committed = Some(Committed {
                        commits: a.commits.clone(),
                        round_trip_ms: now_ms.saturating_sub(self.issued_at_ms),
                        simulated,
                    });
                    self.request.open_seed = Some(open_seed.to_owned());
                    return Step::Open(self.request.clone());
                }
                Some(c) if a.open_seed.is_some() && a.open_seed == self.request.open_seed => {
                    return Step::Done(self.judge(claims, simulated, c, a, bands));
                }
                _ => {}
            }
        }
        self.wait_or_time_out(claims, now_ms, timeout_ms, bands)
    }

    /// `Wait`, or past the timeout the verdicts of a node that did not finish. Whether
    /// the node says `--simulate` now does not matter: what its commitment signed does
    /// ([`Committed::simulated`]), else a node that committed an impossible time turned
    /// `--simulate` on to escape the evidence.
    fn wait_or_time_out(&self, claims: &[GpuClaim], now_ms: u64, timeout_ms: u64, bands: &Bands) -> Step {
        if now_ms.saturating_sub(self.issued_at_ms) > timeout_ms {
            let detail = if self.committed.is_none() {
                "no commitment before the timeout"
            } else {
                "no opening before the timeout"
            };
            return Step::Done(self.unanswered(claims, bands, detail));
        }
        Step::Wait
    }

    /// Past the timeout, the verdicts of a node the hub could not read meanwhile (no
    /// report, an unusable one, one signed by another key, its member unreachable, the
    /// node gone from its member): every GPU the challenge was issued for is judged —
    /// not answered, or `ImpossiblyFast` where its signed commitment says so. `None`
    /// within the timeout. Without the commitment's evidence here, a node that signed an
    /// impossible time and then published an unreadable report escaped it.
    pub fn expire(&self, bands: &Bands, now_ms: u64, timeout_ms: u64) -> Option<Vec<GpuVerdict>> {
        (now_ms.saturating_sub(self.issued_at_ms) > timeout_ms)
            .then(|| self.unanswered(&self.claims, bands, "no usable report before the timeout"))
    }

    /// `claims` not answered (`detail`), but those whose signed commitment is too fast
    /// (a commitment made under `--simulate` is no evidence: [`Self::signed_too_fast`]).
    fn unanswered(&self, claims: &[GpuClaim], bands: &Bands, detail: &str) -> Vec<GpuVerdict> {
        let f = Failure::NotAnswered {
            detail: detail.into(),
        };
        claims
            .iter()
            .map(|c| {
                let fast = self.signed_too_fast(c, bands);
                GpuVerdict::new(c, Some(fast.unwrap_or_else(|| f.clone())))
            })
            .collect()
    }

    /// A GPU whose commitment signed a kernel time below its band's floor: `ImpossiblyFast`
    /// (evidence) even when no opening follows. The time is in the signed commitment
    /// already; without this a node that claimed it, saw the open seed and kept silent was
    /// merely not answering.
    fn signed_too_fast(&self, claim: &GpuClaim, bands: &Bands) -> Option<Failure> {
        let committed = self.committed.as_ref().filter(|c| !c.simulated)?;
        let commit = committed.commits.iter().find(|c| c.uuid == claim.uuid)?;
        let band = bands
            .get(&claim.model)
            .filter(|b| b.params == self.request.params)?;
        (commit.kernel_micros < band.min_kernel_micros).then_some(Failure::ImpossiblyFast {
            micros: commit.kernel_micros,
            min: band.min_kernel_micros,
        })
    }

    fn judge(
        &self,
        claims: &[GpuClaim],
        simulated: bool,
        committed: &Committed,
        answer: &ChallengeAnswer,
        bands: &Bands,
    ) -> Vec<GpuVerdict> {
        let seed = self.request.open_seed.as_deref().unwrap_or_default();
        let one = |claim: &GpuClaim| -> Result<(), Failure> {
            let commit = committed
                .commits
                .iter()
                .find(|c| c.uuid == claim.uuid)
                .ok_or_else(|| Failure::NotAnswered {
                    detail: "no commitment for this GPU".into(),
                })?;
            let opening = answer
                .openings
                .iter()
                .find(|o| o.uuid == claim.uuid)
                .ok_or_else(|| Failure::BadOpening {
                    detail: "no opening for this GPU".into(),
                })?;
            // Correctness first: a wrong result is evidence whatever the timing.
            check_opening(&self.request, seed, commit, opening)?;
            // A simulated node computes on a CPU, not on the card it declares: its timing
            // says nothing about that card (and is no evidence), it just never verifies.
            // Which times are a CPU's the commitment's report said; one committed without
            // `--simulate` is timed even when the opening's report says it (else a node
            // that signed an impossible time turned it on to escape the evidence).
            if !committed.simulated {
                let band = bands
                    .get(&claim.model)
                    .filter(|b| b.params == self.request.params)
                    .ok_or_else(|| Failure::NoBand {
                        model: claim.model.clone(),
                    })?;
                check_timing(commit, band, committed.round_trip_ms)?;
            }
            if simulated || committed.simulated {
                return Err(Failure::Simulated);
            }
            Ok(())
        };
        claims.iter().map(|c| GpuVerdict::new(c, one(c).err())).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "session_tests.rs"]
mod tests;
