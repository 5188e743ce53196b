//! Driving one Stake: feed the machine, **persist its state before executing the actions
//! it returned** (as `gpufed_chain::settler` does for the journal), execute them against
//! the RPC node, feed the answers back; then write `status`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use gpufed_api::Stake;
use gpufed_chain::history::HistoryGate;
use gpufed_chain::stake_tx::{self, StakeAccounts};
use gpufed_chain::{Keypair, Rpc, deposit};
use gpufed_settlement::MachineConfig;
use gpufed_settlement::stake::{StakeAction, StakeConfig, StakeEvent, step};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::plan::{self, Input, SpecView};
use super::reuse::{self, Open};
use super::status::{self, StatusView};
use super::store::{Claim, StakeDoc, StakeStore, StoreError};

/// What goes wrong driving one Stake (the others carry on).
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// Persisting failed or was fenced: nothing was executed past the last save.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing status failed.
    #[error("Stake status: {0}")]
    Status(#[source] kube::Error),
}

/// One leadership term's driver of every Stake.
pub struct Driver {
    /// RPC node.
    pub rpc: Rpc,
    /// Stake authority (vault owner, fee payer).
    pub authority: Keypair,
    /// Mint, vault, treasury.
    pub accounts: StakeAccounts,
    /// The pure machine's parameters.
    pub cfg: StakeConfig,
    /// Transaction machine parameters.
    pub machine: MachineConfig,
    /// Durable state.
    pub store: StakeStore,
    /// Stakes resolved with `Restarted` in this term (the rest get `Tick`).
    pub resumed: HashSet<String>,
    /// State last persisted, per Stake (this term's cache).
    pub saved: HashMap<String, StakeDoc>,
    /// Share of the bonded amount a slash for recorded evidence takes, basis points
    /// (0: evidence is never slashed automatically).
    pub slash_bps: u32,
    /// Whether the RPC node keeps the transaction history that proves a stake effect dead
    /// (`gpufed_chain::history`), asked once per round by [`Driver::check_history`].
    pub history: HistoryGate,
    /// This round's answer: why no stake transaction is sent or concluded (`None`: go).
    pub paused: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a round found for one Stake, for its status.
#[derive(Default)]
struct Findings {
    held_by: Option<String>,
    note: Option<String>,
}

impl Findings {
    fn note(&mut self, n: impl Into<String>) {
        self.note = Some(n.into());
    }
}

impl Driver {
    /// Asks (at most once per `gpufed_chain::history::RECHECK` while the answer is yes)
    /// whether the RPC node keeps transaction history; until it does, every Stake's inputs
    /// are still recorded but no transaction is signed, sent or concluded, and its status
    /// says why.
    pub async fn check_history(&mut self) {
        let now = self
            .history
            .check(&self.rpc, &self.authority.pubkey())
            .await
            .err()
            .map(|c| c.to_string());
        match (&self.paused, &now) {
            (None, Some(why)) => warn!(reason = %why, "stake transactions wait"),
            (Some(_), None) => info!("stake transactions resume: the RPC node keeps transaction history"),
            _ => {}
        }
        self.paused = now;
    }

    /// Saves `doc` when it differs from what was last persisted.
    async fn persist(&mut self, name: &str, doc: &mut StakeDoc) -> Result<(), StoreError> {
        doc.track();
        if self.saved.get(name) == Some(doc) {
            return Ok(());
        }
        if let Err(e) = self.store.save(name, doc).await {
            self.saved.remove(name);
            self.store.forget(name);
            return Err(e);
        }
        self.saved.insert(name.to_string(), doc.clone());
        Ok(())
    }

    /// The persisted state of `stake`, created (and persisted) on first sight; `Err((reason,
    /// message))` when the spec no longer matches it, it belongs to an earlier object of
    /// this name that still holds tokens, or the spec names that object's spent deposit
    /// ([`reuse::open`]).
    async fn open(
        &mut self,
        stake: &Stake,
        spec: &SpecView,
    ) -> Result<Result<StakeDoc, (&'static str, String)>, StoreError> {
        let (name, uid) = (stake.name_any(), stake.uid().unwrap_or_default());
        let found = match self.saved.get(&name) {
            Some(d) => Some(d.clone()),
            None => {
                let loaded = self.store.load(&name).await?;
                if let Some(d) = &loaded {
                    self.saved.insert(name.clone(), d.clone());
                }
                loaded
            }
        };
        let created = stake
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second());
        let doc_name = super::store::doc_name(&name);
        let mut doc = match reuse::open(found, &uid, spec, created, &doc_name) {
            Open::Continue(d) => d,
            Open::Fresh { doc, retire } => {
                // The replaced state is the only record that its deposit bonded unless the
                // claims say so: they must, before it is gone.
                if let Some((signature, old_uid)) = retire {
                    self.store.mark_spent(&signature, &name, &old_uid).await?;
                }
                doc
            }
            Open::Refuse(reason, message) => return Ok(Err((reason, message))),
        };
        self.persist(&name, &mut doc).await?;
        self.seal(&name, &mut doc).await?;
        Ok(Ok(doc))
    }

    /// Marks the deposit of a state that has bonded spent in the claims (once per state):
    /// from then on no other Stake object claims it, even after this state is replaced.
    /// Until it is marked, [`reuse::claim_verdict`] reads the same from the state itself.
    async fn seal(&mut self, name: &str, doc: &mut StakeDoc) -> Result<(), StoreError> {
        if doc.deposit_spent || !reuse::has_bonded(&doc.state) {
            return Ok(());
        }
        self.store
            .mark_spent(&doc.state.deposit_signature, name, &doc.uid)
            .await?;
        doc.deposit_spent = true;
        self.persist(name, doc).await
    }

    /// Feeds one event: the new state is persisted before its actions are returned.
    async fn feed(
        &mut self,
        name: &str,
        doc: &mut StakeDoc,
        ev: StakeEvent,
        found: &mut Findings,
    ) -> Result<Vec<StakeAction>, StoreError> {
        match step(&doc.state, now_ms(), ev, &self.cfg, &self.machine) {
            Ok((state, actions)) => {
                doc.state = state;
                self.persist(name, doc).await?;
                Ok(actions)
            }
            Err(e) => {
                debug!(stake = name, error = %e, "stake event refused");
                found.note(e.to_string());
                Ok(Vec::new())
            }
        }
    }

    /// Applies the spec's and annotations' inputs ([`super::inputs::apply_inputs`]) and
    /// persists the result.
    async fn inputs(
        &mut self,
        name: &str,
        doc: &mut StakeDoc,
        inputs: Vec<Input>,
        dismiss_true: bool,
        found: &mut Findings,
    ) -> Result<(), StoreError> {
        let at = (now_ms(), &self.cfg, &self.machine);
        if let Some(n) = super::inputs::apply_inputs(name, doc, inputs, dismiss_true, at) {
            found.note(n);
        }
        self.persist(name, doc).await
    }

    /// Executes the machine's actions (and those their answers lead to).
    async fn execute(
        &mut self,
        name: &str,
        doc: &mut StakeDoc,
        actions: Vec<StakeAction>,
        found: &mut Findings,
    ) -> Result<(), StoreError> {
        let mut queue: VecDeque<StakeAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let ev = match action {
                StakeAction::VerifyDeposit { signature } => {
                    match self.store.claim(&signature, name, &doc.uid).await? {
                        Claim::HeldBy(other) => {
                            found.held_by = Some(other);
                            continue;
                        }
                        Claim::Spent(other) => {
                            found.held_by = Some(format!(
                                "{other}, for which it has bonded: a deposit bonds one Stake, once"
                            ));
                            continue;
                        }
                        Claim::Ours => {}
                    }
                    match deposit::fetch_deposit(&self.rpc, &signature).await {
                        Ok(d) => StakeEvent::Deposit(d),
                        Err(e) => {
                            debug!(stake = name, error = %e, "deposit lookup failed; retrying");
                            found.note(format!("deposit lookup: {e}"));
                            continue;
                        }
                    }
                }
                StakeAction::Tx { kind, effect, action } => {
                    let signed_at = doc.state.effect_tx(kind).and_then(|t| t.signed_at_slot());
                    match stake_tx::execute(
                        &self.rpc,
                        &self.accounts,
                        &self.authority,
                        &effect,
                        action,
                        signed_at,
                    )
                    .await
                    {
                        Some(obs) => {
                            if let gpufed_settlement::Observation::RpcError { message, .. } = &obs {
                                found.note(format!("{kind:?}: {message}"));
                            }
                            StakeEvent::Tx(kind, obs)
                        }
                        None => continue,
                    }
                }
            };
            let more = self.feed(name, doc, ev, found).await?;
            queue.extend(more);
        }
        Ok(())
    }

    /// One round for one Stake: open its state, apply inputs, tick, execute, write status.
    pub async fn reconcile(
        &mut self,
        hub: &Client,
        stake: &Stake,
        evidence: &[plan::EvidenceRef],
        dismissed: &std::collections::BTreeSet<String>,
    ) -> Result<(), DriveError> {
        let name = stake.name_any();
        let generation = stake.metadata.generation;
        let old = stake.status.as_ref();
        let now = crate::time::format(crate::time::now());
        let spec = match plan::spec_view(&stake.spec, self.accounts.decimals) {
            Ok(s) => s,
            Err(msg) => {
                let st = status::stalled(old, generation, "InvalidSpec", &msg, &now);
                return write_status(hub, stake, st).await;
            }
        };
        let mut doc = match self.open(stake, &spec).await? {
            Ok(d) => d,
            Err((reason, msg)) => {
                let st = status::stalled(old, generation, reason, &msg, &now);
                return write_status(hub, stake, st).await;
            }
        };
        let mut found = Findings::default();
        let empty = BTreeMap::new();
        let annotations = stake.metadata.annotations.as_ref().unwrap_or(&empty);
        let (mut inputs, note) = plan::inputs(stake.spec.unbond, annotations, &doc, self.accounts.decimals);
        found.note = note;
        // Evidence from verification (docs/trust.md) after the annotations: an explicit
        // request raised in the same round goes first; the evidence waits for the next.
        // It counts from when the state began (`StakeDoc::since`), the object's creation
        // only for states recorded before that was kept.
        if !inputs.iter().any(|i| matches!(i, Input::Raise(_)))
            && let Some(raise) = plan::evidence_input(
                evidence,
                &doc,
                self.slash_bps,
                stake
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
            )
        {
            inputs.push(raise);
        }
        // Dismissed on another of the provider's Stakes: dismissed here too (a
        // `slash-dismiss=true` on this one counts as spent on it, as it would have been).
        if let Some(d) = plan::dismissed_elsewhere(&doc, dismissed) {
            inputs.retain(|i| !matches!(i, Input::Dismiss(_)));
            inputs.push(d);
        }
        let dismiss_true = annotations
            .get(plan::SLASH_DISMISS_ANNOTATION)
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("true"));
        self.inputs(&name, &mut doc, inputs, dismiss_true, &mut found)
            .await?;
        if let Some(why) = &self.paused {
            // Not even the restart's resolution: it is spent once, on a node that can
            // prove what became of an in-flight transaction.
            found.note(why.clone());
        } else {
            let ev = if self.resumed.insert(name.clone()) {
                StakeEvent::Restarted
            } else {
                StakeEvent::Tick
            };
            let actions = self.feed(&name, &mut doc, ev, &mut found).await?;
            self.execute(&name, &mut doc, actions, &mut found).await?;
            self.seal(&name, &mut doc).await?;
        }
        let view = StatusView {
            doc: &doc,
            generation,
            decimals: self.accounts.decimals,
            held_by: found.held_by.as_deref(),
            note: found.note.as_deref(),
            grace_ms: self.cfg.deposit_not_found_grace_ms,
        };
        write_status(hub, stake, status::status(old, &view, &now)).await
    }
}

/// Writes `status` when it changed: server-side apply with the field manager of every
/// operator write, fenced by the resourceVersion the round read.
async fn write_status(
    hub: &Client,
    stake: &Stake,
    status: gpufed_api::StakeStatus,
) -> Result<(), DriveError> {
    if stake.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<Stake> = Api::all(hub.clone());
    let patch = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "Stake",
        "metadata": {"resourceVersion": stake.resource_version()},
        "status": status,
    });
    api.patch_status(
        &stake.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(DriveError::Status)?;
    Ok(())
}
