//! One heartbeat of a provider's challenges: read each node's report, start, advance and
//! finish sessions, and say what the member's challenge ConfigMap should hold.
//!
//! Judging a finished session recomputes the sampled rows of every GPU (docs/trust.md: a
//! few milliseconds a GPU for `u32`, about 0.3 s for a 4096×1024×4096 `f64` band), so it
//! runs with the verifier's lock released: the other providers' heartbeats and status
//! reads must not wait behind an eight-GPU node's check. A provider's heartbeats do not
//! overlap (the controller runs one reconcile per object), so a session taken out of the
//! map here is put back by the same call.

use std::collections::BTreeMap;

use gpufed_trust::rounds::{NodeSchedule, Why};
use gpufed_trust::session::{self, GpuClaim, GpuVerdict, NodeView, Session, Step};
use gpufed_trust::{ChallengeAnswer, ChallengeRequest, Failure};

use super::{NodeState, Verifier, ms, pins, random_hex, read_report};
use crate::fleet::MemberView;

/// [`gpufed_trust::rounds::proven_after`] over verdicts.
fn proven_after(
    why: Why,
    verdicts: &[GpuVerdict],
    proven: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let passed = verdicts.iter().filter(|v| v.passed()).map(|v| v.uuid.as_str());
    gpufed_trust::rounds::proven_after(why, passed, proven)
}

/// A session to advance outside the lock, with what the node's report says.
struct Pending {
    node: String,
    session: Session,
    claims: Vec<GpuClaim>,
    simulated: bool,
    answer: Option<ChallengeAnswer>,
}

impl Verifier {
    /// Advances every node of `provider` with what the probe saw at `now_ms`. Returns the
    /// member's whole desired challenge ConfigMap content (node → request) when it differs
    /// from what the member holds (`view.challenges`), else `None`.
    pub fn step(
        &self,
        provider: &str,
        view: &MemberView,
        now_ms: u64,
    ) -> Option<BTreeMap<String, ChallengeRequest>> {
        let pending = self.start_sessions(provider, view, now_ms)?;
        let advanced: Vec<(String, Session, Step)> = pending
            .into_iter()
            .map(|mut p| {
                let node_view = NodeView {
                    claims: &p.claims,
                    simulated: p.simulated,
                    answer: p.answer.as_ref(),
                };
                let step = p.session.advance(
                    node_view,
                    &self.cfg.bands,
                    &random_hex(),
                    now_ms,
                    ms(self.cfg.timeout),
                );
                if let Step::Open(_) = step {
                    self.observe_round_trip(&p.session, &p.claims);
                }
                (p.node, p.session, step)
            })
            .collect();
        self.finish(provider, advanced, now_ms);
        let nodes = self.nodes.lock().ok()?;
        // Level-triggered: the member should hold exactly the requests of open sessions.
        let desired: BTreeMap<String, ChallengeRequest> = nodes
            .iter()
            .filter(|((p, _), st)| p == provider && !st.absent)
            .filter_map(|((_, n), st)| Some((n.clone(), st.session.as_ref()?.request.clone())))
            .collect();
        let seen: BTreeMap<String, ChallengeRequest> = view
            .challenges
            .iter()
            .filter_map(|(n, t)| Some((n.clone(), serde_json::from_str(t).ok()?)))
            .collect();
        (desired != seen).then_some(desired)
    }

    /// Under the lock: reads the reports, drops gone nodes, starts due sessions, and takes
    /// out the sessions in progress (with their node's report) to advance.
    fn start_sessions(&self, provider: &str, view: &MemberView, now_ms: u64) -> Option<Vec<Pending>> {
        let rounds = self.rounds();
        let mut nodes = self.nodes.lock().ok()?;
        let mut all_pins = self.pins.lock().ok()?;
        let pins = all_pins.entry(provider.to_owned()).or_default();
        let present: std::collections::BTreeSet<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
        // A node gone from its member's view (its member lists GPU nodes with allocatable
        // GPUs only, which the provider controls) keeps its schedule and verdicts, as
        // absent, while they matter: forgotten at once, it came back new to the hub — a
        // `Join` challenge at once, alone, off the round's clock, even for a node that had
        // just failed its round. Its challenge open ends at the timeout as if unanswered.
        // Kept until its verdict lapses (the next round's start + grace + timeout): a node
        // that comes back later skipped a round, and is as new as a node of a new name
        // (docs/trust.md, "What rounds do not close"). So the state held is bounded by the
        // nodes that left within about one interval.
        nodes.retain(|(p, n), st| {
            if p != provider || present.contains(n.as_str()) {
                return true;
            }
            st.absent = true;
            st.note_missed(&rounds, now_ms);
            self.expire_unread(provider, n, st, now_ms);
            st.session.is_some() || (st.verdict_at_ms.is_some() && now_ms <= st.valid_until_ms)
        });
        // A node kept absent keeps its pin too: dropped, another machine reporting under
        // its name before its verdict lapses was pinned afresh, and the passes kept for
        // the node counted for that machine.
        let kept: std::collections::BTreeSet<&str> = nodes
            .keys()
            .filter(|(p, _)| p == provider)
            .map(|(_, n)| n.as_str())
            .chain(present.iter().copied())
            .collect();
        if pins::bound(pins, &kept) > 0 {
            tracing::info!(%provider, "pinned keys of nodes gone dropped: the provider's pins passed their bound");
        }
        let mut pending = Vec::new();
        for gpu_node in &view.nodes {
            let node = gpu_node.name.clone();
            let st = nodes.entry((provider.to_owned(), node.clone())).or_default();
            st.absent = false;
            st.sold = gpu_node.allocatable;
            st.sold_model.clone_from(&gpu_node.model);
            let (claims, simulated, answer, key) = match view.reports.get(&node).map(|t| read_report(t)) {
                None => {
                    st.problem = Some(Failure::NotAnswered {
                        detail: "the node publishes no signed inventory report (is the gpufed device plugin running?)".into(),
                    });
                    st.note_missed(&rounds, now_ms);
                    self.expire_unread(provider, &node, st, now_ms);
                    continue;
                }
                Some(Err(f)) => {
                    st.problem = Some(f);
                    st.note_missed(&rounds, now_ms);
                    self.expire_unread(provider, &node, st, now_ms);
                    continue;
                }
                // A GPU node that lists no GPU is withholding them: as a missing report,
                // not an empty verdict that "passed" (its GPUs, shown again later, would be
                // challenged at once as new, off the round's clock — the time-sharing gap).
                // (With a challenge open, the session goes on: it judges the GPUs it was
                // issued for, whatever the report lists now.)
                Some(Ok(r)) if r.0.is_empty() && st.session.is_none() => {
                    st.problem = Some(Failure::NotAnswered {
                        detail: "the node's signed report lists no GPU".into(),
                    });
                    st.note_missed(&rounds, now_ms);
                    self.expire_unread(provider, &node, st, now_ms);
                    continue;
                }
                Some(Ok(r)) => r,
            };
            if let Err(detail) = pins::check(pins, provider, &node, &key) {
                // Another machine speaks for this node: nothing it passed before counts
                // now. What the pinned key signed still stands: failed verdicts (evidence
                // among them), and a challenge it committed to, which ends at the timeout
                // like any unusable report's (a signed impossible time is evidence then).
                tracing::warn!(%provider, %node, "report signed by another key than the node's pinned one");
                st.problem = Some(Failure::BadReport { detail });
                st.verdicts.retain(|v| !v.passed());
                if st.verdicts.is_empty() {
                    st.verdict_at_ms = None;
                }
                st.proven.clear();
                st.resumed_due = false;
                st.note_missed(&rounds, now_ms);
                self.expire_unread(provider, &node, st, now_ms);
                continue;
            }
            st.problem = None;
            let known: Vec<&str> = st.verdicts.iter().map(|v| v.uuid.as_str()).collect();
            let schedule = NodeSchedule {
                judged: st.next_due_ms > 0,
                resumed: st.resumed_due,
                next_due_ms: st.next_due_ms,
                // A node that listed no GPU failed nothing: its first GPUs are challenged at once.
                passed: st.verdicts.iter().all(GpuVerdict::passed),
                open: st
                    .session
                    .as_ref()
                    .map(|s| (s.issued_at_ms, st.why.unwrap_or(Why::Round))),
                changed: claims.iter().any(|c| !known.contains(&c.uuid.as_str())),
                wanted: st.wanted,
            };
            // A report without GPUs starts nothing (the open session is advanced below).
            let decided = (!claims.is_empty())
                .then(|| rounds.decide(&schedule, now_ms))
                .flatten();
            if let Some(why) = decided {
                // Any new challenge is as fresh as a wanted one; a round's replaces one
                // opened between rounds (its request on the member too).
                st.wanted = false;
                st.resumed_due = false;
                let issued = rounds.issued_at(why, now_ms);
                let round_start = rounds.start_of(now_ms);
                let late = st.missed_round_ms.take() == Some(round_start);
                self.observe_start(why, (round_start, late), now_ms);
                match session::start(random_hex(), &claims, &self.cfg.bands, issued) {
                    Ok(s) => {
                        st.session = Some(s);
                        st.why = Some(why);
                    }
                    Err(verdicts) => {
                        st.session = None;
                        st.why = None;
                        st.proven = proven_after(why, &verdicts, &st.proven);
                        st.verdicts = verdicts;
                        st.verdict_at_ms = Some(now_ms);
                        st.issued_at_ms = issued;
                        st.next_due_ms = rounds.next_due(issued);
                        st.valid_until_ms = rounds.valid_until(issued, ms(self.cfg.timeout));
                    }
                }
                continue;
            }
            if let Some(session) = st.session.take() {
                pending.push(Pending {
                    node,
                    session,
                    claims,
                    simulated,
                    answer,
                });
            }
        }
        Some(pending)
    }

    /// Counts a started challenge by why, and a round's lag behind the round's start
    /// (`gpufed_challenges_started_total`, `gpufed_challenge_round_lag_seconds`), or, for
    /// a node the hub found due earlier in the round but could not challenge (`late`),
    /// `gpufed_challenge_round_late_nodes_total`: the lag is the hub's spread only.
    fn observe_start(&self, why: Why, (round_start_ms, late): (u64, bool), now_ms: u64) {
        let Some(m) = &self.metrics else {
            return;
        };
        m.challenges_started_total
            .get_or_create(&crate::metrics::WhyLabel { why: why.label() })
            .inc();
        if why == Why::Round && late {
            m.challenge_round_late_nodes_total.inc();
        } else if why == Why::Round {
            #[allow(clippy::cast_precision_loss)] // milliseconds well under 2^52
            let lag = now_ms.saturating_sub(round_start_ms) as f64 / 1000.0;
            m.challenge_round_lag_seconds.observe(lag);
        }
    }

    /// Records how long the commitment took to reach the hub, under its band's model
    /// (`gpufed_challenge_round_trip_seconds`): what a band's slack must cover, measured.
    fn observe_round_trip(&self, session: &Session, claims: &[GpuClaim]) {
        let (Some(m), Some(c)) = (&self.metrics, &session.committed) else {
            return;
        };
        let Some(band) = claims.first().and_then(|g| self.cfg.bands.get(&g.model)) else {
            return;
        };
        #[allow(clippy::cast_precision_loss)] // milliseconds well under 2^52
        let secs = c.round_trip_ms as f64 / 1000.0;
        m.challenge_round_trip_seconds
            .get_or_create(&crate::metrics::ModelLabel {
                model: band.model.clone(),
            })
            .observe(secs);
    }

    /// Under the lock: puts the advanced sessions back, or records their verdicts.
    fn finish(&self, provider: &str, advanced: Vec<(String, Session, Step)>, now_ms: u64) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        for (node, session, step) in advanced {
            // A node that left meanwhile (it cannot: this provider's heartbeat is this
            // call) would simply be gone.
            let Some(st) = nodes.get_mut(&(provider.to_owned(), node.clone())) else {
                continue;
            };
            match step {
                Step::Wait | Step::Open(_) => st.session = Some(session),
                Step::Done(verdicts) => self.conclude(provider, &node, st, &session, verdicts, now_ms),
            }
        }
    }

    /// A session judged: its verdicts become the node's, and its next round is due.
    fn conclude(
        &self,
        provider: &str,
        node: &str,
        st: &mut NodeState,
        session: &Session,
        verdicts: Vec<GpuVerdict>,
        now_ms: u64,
    ) {
        for v in &verdicts {
            if let Some(f) = &v.failure {
                tracing::info!(%provider, %node, gpu = %v.uuid, failure = %f, "GPU not verified");
            }
            if let Some(m) = &self.metrics {
                let result = v.failure.as_ref().map_or("passed", Failure::reason);
                m.challenges_total
                    .get_or_create(&crate::metrics::ChallengeLabel { result })
                    .inc();
            }
        }
        let rounds = self.rounds();
        // A session's why is set when it starts; none would be a bug, and proves nothing.
        st.proven = proven_after(st.why.unwrap_or(Why::Join), &verdicts, &st.proven);
        st.verdicts = verdicts;
        st.verdict_at_ms = Some(now_ms);
        st.issued_at_ms = session.issued_at_ms;
        st.next_due_ms = rounds.next_due(session.issued_at_ms);
        st.valid_until_ms = rounds.valid_until(session.issued_at_ms, ms(self.cfg.timeout));
        st.nonce = Some(session.request.nonce.clone());
        st.session = None;
        st.why = None;
        // This verdict is as fresh as a wanted one would be.
        st.wanted = false;
    }

    /// The node could not be read (no report, an unusable one, one signed by another key,
    /// its member unreachable, the node gone from its member) at `now_ms`: a session open
    /// past the timeout ends, every GPU it was issued for judged — not answered, or
    /// `ImpossiblyFast` where its signed commitment says so ([`Session::expire`]). Without
    /// this the session stayed open as long as the node stayed silent — the provider
    /// probed every `--challenge-poll` instead of every heartbeat, for good.
    pub(super) fn expire_unread(&self, provider: &str, node: &str, st: &mut NodeState, now_ms: u64) {
        let timeout = ms(self.cfg.timeout);
        let Some(verdicts) = st
            .session
            .as_ref()
            .and_then(|s| s.expire(&self.cfg.bands, now_ms, timeout))
        else {
            return;
        };
        let Some(session) = st.session.take() else {
            return;
        };
        self.conclude(provider, node, st, &session, verdicts, now_ms);
    }
}
