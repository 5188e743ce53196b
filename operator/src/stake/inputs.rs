//! Feeding a round's inputs ([`super::plan::inputs`], recorded evidence, dismissals made on
//! another Stake) to the pure machine: pure, so which requests count as handled is tested
//! without an API server. [`super::apply::Driver`] persists the result.

use gpufed_settlement::MachineConfig;
use gpufed_settlement::stake::{StakeConfig, StakeEvent, step};
use tracing::{info, warn};

use super::plan::{self, Input, Slashable};
use super::store::StakeDoc;

/// Applies `inputs` to `doc` at `now_ms` (`dismiss_true`: the dismiss annotation says
/// `true`; once it has dismissed a slash it is spent until removed). Returns the last
/// refusal, for status.
///
/// A slash request counts as handled (never fed again) once it was raised, or refused by a
/// Stake that can never be slashed again ([`plan::slashable`]: Rejected, Released, nothing
/// left). Refused by one that can be later (its deposit not bonded yet) it is kept, so it
/// is raised once the Stake is bonded: marking it handled then dropped it for good, and a
/// duplicate-GPU slash has no other way in than the request.
pub fn apply_inputs(
    name: &str,
    doc: &mut StakeDoc,
    inputs: Vec<Input>,
    dismiss_true: bool,
    (now_ms, cfg, machine): (u64, &StakeConfig, &MachineConfig),
) -> Option<String> {
    let mut note = None;
    if !dismiss_true {
        doc.dismiss_true_spent = false;
    }
    for input in inputs {
        let ev = match &input {
            Input::Unbond => StakeEvent::RequestUnbond,
            Input::Raise(r) => StakeEvent::RaiseSlash {
                kind: r.kind.clone(),
                evidence: r.evidence,
                amount: r.amount,
            },
            Input::Dismiss(_) => StakeEvent::DismissSlash,
        };
        match (step(&doc.state, now_ms, ev, cfg, machine), input) {
            (Ok((state, _)), input) => {
                doc.state = state;
                match input {
                    Input::Raise(r) => {
                        info!(stake = name, kind = %r.kind, evidence = %r.evidence, "slash raised");
                        doc.handled_slash_requests.push(r.evidence.to_hex());
                    }
                    Input::Dismiss(hex) => {
                        info!(stake = name, evidence = %hex, "slash dismissed");
                        doc.dismissed_slashes.push(hex);
                        doc.dismiss_true_spent |= dismiss_true;
                    }
                    Input::Unbond => info!(stake = name, "unbonding"),
                }
            }
            (Err(e), Input::Raise(r)) => {
                let hex = r.evidence.to_hex();
                if plan::slashable(&doc.state) == Slashable::Never {
                    warn!(stake = name, error = %e, "slash request refused for good");
                    note = Some(format!("slash request {hex} refused: {e}"));
                    doc.handled_slash_requests.push(hex);
                } else {
                    warn!(stake = name, error = %e, "slash request refused for now; retried next round");
                    note = Some(format!("slash request {hex} waits (refused for now: {e})"));
                }
            }
            (Err(e), _) => note = Some(e.to_string()),
        }
    }
    note
}

#[cfg(test)]
#[path = "inputs_tests.rs"]
mod tests;
