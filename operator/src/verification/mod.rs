//! GPU verification (docs/trust.md): the hub challenges every GPU node of every provider,
//! checks the answers, and judges UUID uniqueness across the whole fleet.
//!
//! Transport: the hub writes each node's [`gpufed_trust::ChallengeRequest`] into the
//! member's ConfigMap [`CHALLENGE_CONFIGMAP`] (key = node name), in the namespace of the
//! hub's member credentials; the node's device plugin answers inside its signed inventory
//! report (Node annotation). The hub never needs write access to Nodes.
//!
//! State (sessions, latest verdicts, uptime averages) lives in this process; the latest
//! verdicts are also kept in the hub ([`verdicts`]), so a new leader resumes the rounds
//! rather than starting every node anew. Nothing here blocks a job: verification only
//! decides whether a provider counts as verified, and what evidence it leaves.

pub mod abandoned;
pub mod evidence;
pub mod outcomes;
pub mod pins;
pub mod plan;
pub mod verdicts;

mod challenges;
pub mod fresh;
mod ledgers;
mod owners;
pub mod shards;
mod step;
pub mod store;
pub mod unreadable;

pub use challenges::{challenge_data, read_challenges, write_challenge_data, write_challenges};

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use gpufed_trust::evidence::{Evidence, GpuEvidence};
use gpufed_trust::fleet::{self, NodeVerdicts, ProviderVerdict};
use gpufed_trust::report::SignedReport;
use gpufed_trust::rounds::{Rounds, Why};
use gpufed_trust::session::{GpuClaim, GpuVerdict, Session};
use gpufed_trust::{Bands, Failure};

/// Name of the member ConfigMap that carries the hub's challenge requests.
pub const CHALLENGE_CONFIGMAP: &str = gpufed_api::pull::CHALLENGE_CONFIGMAP;

/// Verification settings (from flags).
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Per-model workload shapes and timing bands.
    pub bands: Bands,
    /// How often each node is challenged.
    pub interval: Duration,
    /// How long a node has to commit and to open.
    pub timeout: Duration,
    /// How late after its round's start a round challenge may be issued on its own clock
    /// (`gpufed_trust::rounds`).
    pub round_grace: Duration,
    /// Hub namespace of the evidence ConfigMaps (the operator's own).
    pub namespace: String,
    /// At most one new evidence of a kind per provider within this time.
    pub evidence_cooldown: Duration,
    /// Stake needed per verified GPU at factor 1 (stake-token units, decimal).
    pub stake_per_gpu: String,
    /// Factor per model key, basis points.
    pub stake_multipliers: BTreeMap<String, u32>,
    /// A `verifiedOnly` job uses only nodes that passed a challenge within this time
    /// ([`fresh`]); zero: any listed verdict will do.
    pub before_start: Duration,
    /// Probation (`--join-probation`): a GPU counts as verified only once it has passed a
    /// round (`gpufed_trust::rounds::proven_after`); passes between rounds wait for it.
    pub probation: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            bands: Bands::default(),
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(120),
            round_grace: Duration::from_secs(5),
            namespace: "gpufed-system".into(),
            evidence_cooldown: Duration::from_secs(24 * 3600),
            stake_per_gpu: "0".into(),
            stake_multipliers: BTreeMap::new(),
            before_start: Duration::from_secs(600),
            probation: false,
        }
    }
}

/// What a band's timing proves against a node that lies about its kernel time
/// (docs/trust.md, "What the hub's clock proves"), and whether that is weak: under half of
/// the rate the band claims for the model, or a slack shorter than the hub's own probe
/// period while a challenge is open (an honest node seen only by that probe, while the
/// watches that wake the hub are down, would then miss it).
pub fn clock_note(band: &gpufed_trust::Band, challenge_poll: Duration) -> (String, bool) {
    let share = band.clock_share();
    let poll_ms = u64::try_from(challenge_poll.as_millis()).unwrap_or(u64::MAX);
    let mut note = format!(
        "band: a node that passes computed {} multiply-adds within {} ms of the challenge: at least {:.3e}/s whatever time it reports, {:.0}% of the rate the band claims for the model",
        band.params.node_ops(),
        band.max_round_trip_ms(),
        band.proven_rate(),
        share * 100.0
    );
    if share < 0.5 {
        note.push_str("; raise params.rows (a longer workload) or lower roundTripSlackMs");
    }
    if band.round_trip_slack_ms < poll_ms {
        note.push_str(&format!(
            "; roundTripSlackMs is below --challenge-poll ({poll_ms} ms): honest nodes may be RoundTripTooSlow while the watches that wake the hub at once are down"
        ));
    }
    (note, share < 0.5 || band.round_trip_slack_ms < poll_ms)
}

#[derive(Debug, Default)]
struct NodeState {
    session: Option<Session>,
    /// Why the open session started.
    why: Option<Why>,
    verdicts: Vec<GpuVerdict>,
    verdict_at_ms: Option<u64>,
    /// When the challenge the verdicts answer was issued.
    issued_at_ms: u64,
    /// UUIDs of the GPUs proven in a round (`gpufed_trust::rounds::proven_after`).
    proven: std::collections::BTreeSet<String>,
    /// Until when the verdicts count ([`Rounds::valid_until`]).
    valid_until_ms: u64,
    /// The start of the node's next round.
    next_due_ms: u64,
    /// Restored from the previous leader's record with its next round begun already
    /// (`verdicts::Outcome::Due`), and not challenged since.
    resumed_due: bool,
    /// The start of a round the hub found this node due in but could not challenge it
    /// (no usable report, its member unreachable): its round challenge, when it comes,
    /// is late by the node's doing, not the hub's spread.
    missed_round_ms: Option<u64>,
    /// Nonce of the challenge the verdicts come from.
    nonce: Option<String>,
    /// Why the node's report could not be used, if it could not.
    problem: Option<Failure>,
    /// A `verifiedOnly` job waits for a fresher verdict ([`fresh`]): challenge it at the
    /// next heartbeat.
    wanted: bool,
    /// GPUs the node sells: its kubelet's allocatable count, as last seen.
    sold: u32,
    /// The model it sells them as (its label), as last seen.
    sold_model: String,
    /// Gone from its member's view at the last heartbeat: kept for its schedule (see
    /// `Verifier::step`); of its verdicts only evidence counts, and none of its passes,
    /// problems or requests.
    absent: bool,
}

impl NodeState {
    /// Notes that the hub looked at this node at `now_ms` and could not challenge it: if
    /// its round is due and not under way, that round's challenge will be late by the
    /// node's (or its member's) doing.
    fn note_missed(&mut self, rounds: &Rounds, now_ms: u64) {
        let due = self.next_due_ms > 0 && self.next_due_ms <= now_ms;
        if due && self.why != Some(Why::Round) {
            self.missed_round_ms = Some(rounds.start_of(now_ms));
        }
    }
}

/// Verification state of this process.
#[derive(Default)]
pub struct Verifier {
    cfg: VerifyConfig,
    metrics: Option<crate::metrics::Metrics>,
    nodes: Mutex<BTreeMap<(String, String), NodeState>>,
    uptime: Mutex<BTreeMap<String, f64>>,
    /// When this process last found evidence of a kind recorded for a provider (ms), so a
    /// caught provider does not cost a list of evidence ConfigMaps every heartbeat.
    evidence_checked: Mutex<BTreeMap<(String, String), u64>>,
    /// Node keys pinned per provider, loaded from the hub before its first step.
    pins: Mutex<BTreeMap<String, pins::Pins>>,
    /// Job outcomes per provider (loaded from the hub), and whether some are unsaved.
    outcomes: Mutex<BTreeMap<String, (outcomes::Ledger, bool)>>,
    /// Outcomes of jobs deleted before their provider's ledger was loaded, taken in when
    /// it is (locked after `outcomes`, never before).
    outcomes_pending: Mutex<BTreeMap<String, outcomes::Ledger>>,
    /// Per provider, the verdict records the hub holds as far as this process knows
    /// (loaded, or last saved); present once loaded.
    kept: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// The leadership term the state above belongs to ([`Verifier::enter_term`]).
    term: std::sync::atomic::AtomicU64,
    /// The UID each provider's state above was learned under ([`Verifier::adopt`]).
    owners: Mutex<BTreeMap<String, String>>,
    /// When [`Verifier::retain_providers`] last looked for providers gone (ms).
    swept_ms: std::sync::atomic::AtomicU64,
    /// When the fleet looked lost at large (abandoned jobs then are no provider's doing).
    pub losses: abandoned::LossWatch,
    /// Kept maps that cannot be read, and when each was told ([`unreadable`]).
    unreadable: unreadable::Unreadable,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A node's report, authenticated: its claims, whether simulated, its answer, and the
/// public key that signed it.
type ReadReport = (Vec<GpuClaim>, bool, Option<gpufed_trust::ChallengeAnswer>, String);

fn read_report(text: &str) -> Result<ReadReport, Failure> {
    let bad = |detail: String| Failure::BadReport { detail };
    let signed: SignedReport =
        serde_json::from_str(text).map_err(|e| bad(format!("not a signed report: {e}")))?;
    // Freshness comes from the challenge nonce inside the answer, not the report's own.
    let v =
        gpufed_trust::report::verify(&signed, &signed.report.nonce, None).map_err(|e| bad(e.to_string()))?;
    // One GPU listed many times would pass many times on one answer (counted verified as
    // often, the stake it needs not), and have the hub re-check the same rows for each.
    let mut seen = std::collections::BTreeSet::new();
    if let Some(g) = v
        .report
        .gpus
        .iter()
        .find(|g| !seen.insert(g.uuid.trim().to_ascii_uppercase()))
    {
        return Err(bad(format!("GPU {} is listed more than once", g.uuid)));
    }
    let claims = v
        .report
        .gpus
        .iter()
        .map(|g| GpuClaim {
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            serial: g.serial.clone(),
        })
        .collect();
    Ok((claims, v.report.simulated, v.report.challenge, signed.public_key))
}

impl Verifier {
    /// A verifier with these settings.
    pub fn new(cfg: VerifyConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Counts judged challenges in `metrics` (`gpufed_challenges_total{result}`).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The fleet's challenge rounds.
    pub fn rounds(&self) -> Rounds {
        Rounds::new(ms(self.cfg.interval), ms(self.cfg.round_grace))
    }

    /// The provider's verdict, judged over the whole fleet (a verdict counts until the
    /// next round's should have been judged: [`Rounds::valid_until`]), and its nodes'
    /// report problems.
    pub fn verdict(&self, provider: &str, now_ms: u64) -> (ProviderVerdict, Vec<(String, Failure)>) {
        let Ok(nodes) = self.nodes.lock() else {
            return Default::default();
        };
        let fresh: Vec<NodeVerdicts> = nodes
            .iter()
            .filter(|(_, st)| st.verdict_at_ms.is_some() && now_ms <= st.valid_until_ms)
            .filter_map(|((p, n), st)| {
                // A node gone from its member's view counts for nothing but the lies it
                // signed (evidence): hiding it after an impossible commitment hides none.
                let lie = |v: &&GpuVerdict| v.failure.as_ref().and_then(Failure::evidence_kind).is_some();
                let verdicts: Vec<GpuVerdict> = st
                    .verdicts
                    .iter()
                    .filter(|v| !st.absent || lie(v))
                    .cloned()
                    .collect();
                if st.absent && verdicts.is_empty() {
                    return None;
                }
                Some(NodeVerdicts {
                    provider: p.clone(),
                    node: n.clone(),
                    verdicts,
                    sold: st.sold,
                    sold_model: st.sold_model.clone(),
                    probation: if self.cfg.probation {
                        st.verdicts
                            .iter()
                            .filter(|v| v.passed() && !st.proven.contains(&v.uuid))
                            .map(|v| v.uuid.clone())
                            .collect()
                    } else {
                        Default::default()
                    },
                })
            })
            .collect();
        let problems = nodes
            .iter()
            .filter(|((p, _), st)| p == provider && !st.absent)
            .filter_map(|((_, n), st)| Some((n.clone(), st.problem.clone()?)))
            .collect();
        let verdict = fleet::judge(&fresh).remove(provider).unwrap_or_default();
        (verdict, problems)
    }

    /// Whether a node of `provider` has a challenge open (waiting for its commitment or
    /// its opening).
    pub fn challenging(&self, provider: &str) -> bool {
        self.nodes.lock().is_ok_and(|nodes| {
            nodes
                .iter()
                .any(|((p, _), st)| p == provider && st.session.is_some())
        })
    }

    /// Notes that `provider`'s member could not be probed at `now_ms`: a node whose round
    /// is due is challenged late by its member's doing (see `NodeState::note_missed`).
    pub fn member_missed(&self, provider: &str, now_ms: u64) {
        let rounds = self.rounds();
        if let Ok(mut nodes) = self.nodes.lock() {
            for ((_, node), st) in nodes.iter_mut().filter(|((p, _), _)| p == provider) {
                st.note_missed(&rounds, now_ms);
                self.expire_unread(provider, node, st, now_ms);
            }
        }
    }

    /// The settings.
    pub fn config(&self) -> &VerifyConfig {
        &self.cfg
    }

    /// Evidence of a failed challenge in `verdict`, as a document (`None` when there is
    /// none). Duplicates are not included: see `gpufed_trust::fleet`. It is observed when
    /// the failing nodes' verdicts were reached (`now` only if none is known), so the same
    /// standing verdict yields the same document, hash and ConfigMap name whenever it is
    /// looked at — one lie is one evidence, however long its verdict stands.
    pub fn failed_challenge_evidence(
        &self,
        provider: &str,
        verdict: &ProviderVerdict,
        now: &str,
    ) -> Option<Evidence> {
        let gpus: Vec<GpuEvidence> = verdict
            .failures
            .iter()
            .filter_map(|(node, g)| {
                let f = g.failure.as_ref()?;
                (f.evidence_kind() == Some(gpufed_trust::verify::EVIDENCE_FAILED_CHALLENGE)).then(|| {
                    GpuEvidence {
                        node: node.clone(),
                        uuid: g.uuid.clone(),
                        reason: f.reason().to_owned(),
                        message: f.to_string(),
                    }
                })
            })
            .collect();
        if gpus.is_empty() {
            return None;
        }
        let nodes = self.nodes.lock().ok()?;
        let failing = || {
            nodes
                .iter()
                .filter(|((p, n), _)| p == provider && gpus.iter().any(|g| &g.node == n))
                .map(|(_, st)| st)
        };
        let mut nonces: Vec<String> = failing().filter_map(|st| st.nonce.clone()).collect();
        nonces.dedup();
        let observed_at = failing()
            .filter_map(|st| st.verdict_at_ms)
            .max()
            .and_then(|ms| i64::try_from(ms / 1000).ok())
            .map_or_else(|| now.to_owned(), crate::time::format);
        Some(
            Evidence {
                kind: gpufed_trust::verify::EVIDENCE_FAILED_CHALLENGE.to_owned(),
                provider: provider.to_owned(),
                nonces,
                observed_at,
                gpus,
                ..Default::default()
            }
            .capped(),
        )
    }

    /// Whether evidence of `kind` against `provider` may need recording (this process has
    /// not seen one recorded within the cooldown).
    pub fn evidence_due(&self, provider: &str, kind: &str, now_ms: u64) -> bool {
        let Ok(map) = self.evidence_checked.lock() else {
            return true;
        };
        map.get(&(provider.to_owned(), kind.to_owned()))
            .is_none_or(|&t| now_ms.saturating_sub(t) >= ms(self.cfg.evidence_cooldown))
    }

    /// Notes that evidence of `kind` against `provider` is recorded as of `now_ms`.
    pub fn evidence_settled(&self, provider: &str, kind: &str, now_ms: u64) {
        if let Ok(mut map) = self.evidence_checked.lock() {
            map.insert((provider.to_owned(), kind.to_owned()), now_ms);
        }
    }

    /// The provider's uptime average after one probe (seeded from status after a restart).
    pub fn uptime(&self, provider: &str, seed: Option<f64>, answered: bool) -> f64 {
        let Ok(mut map) = self.uptime.lock() else {
            return 0.0;
        };
        let prev = map.get(provider).copied().or(seed);
        let next = gpufed_trust::reputation::uptime_after(prev, answered);
        map.insert(provider.to_owned(), next);
        next
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
