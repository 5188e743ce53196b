//! The exactly-once transaction state machine, shared by settlement batches and stake
//! effects (deposit return, slash).
//!
//! `step(state, now, observation) -> (new state, actions)`. The driver (I/O layer)
//! **persists the new state before executing any returned action**; that one rule makes
//! "write the intent before broadcasting" structural: a [`Action::Broadcast`] is only ever
//! returned together with a state that holds its signed intent.
//!
//! ```text
//! Pending ──Signed──▶ InFlight ──status ok ≥ commitment──▶ Done      (MarkSettled)
//!    ▲                 │   ▲  ──status err ≥ commitment──▶ Failed    (MarkFailed)
//!    │                 │   └─ status < commitment ─▶ Landed ─▶ (polls until final,
//!    │                 │                                       back to InFlight if dropped)
//!    └── status unknown after a finalized block height > lastValidBlockHeight
//! ```
//! Re-signing happens only when a block height **past** `last_valid_block_height` was
//! observed first and a signature-status query issued **after** that observation still
//! finds nothing: query ids enforce that order, so a stale "unknown" can never re-sign.
//! And that "nothing" must come from a node that has seen the finalized slot the height
//! was read at (`min_context_slot`): behind a load balancer the two queries may reach two
//! nodes, and one still replaying would not know a transaction that landed.
//! A broadcast that failed is sent again only after a finalized block height shows its
//! blockhash still valid; past it, the same proof decides, so a node that refuses the
//! transaction forever (its blockhash expired) cannot leave the effect stuck.

mod types;
pub use types::*;

impl TxState {
    fn issue(&mut self, now: u64, kind: QueryKind) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        self.awaiting = Some(Awaiting {
            id,
            kind,
            issued_at_ms: now,
        });
        id
    }

    /// The action due in the current phase (with a fresh query id).
    fn due(&mut self, now: u64) -> Vec<Action> {
        match self.phase.clone() {
            TxPhase::Pending => vec![Action::SignAndPersistIntent {
                query: self.issue(now, QueryKind::Sign),
            }],
            // A broadcast that failed is not simply sent again: a node that refuses it
            // (an RPC gateway turning away a transaction whose blockhash expired, say)
            // would refuse it forever, and nothing else would ever learn the expiry that
            // allows a re-sign. The finalized height decides: still valid, the same
            // bytes are sent again; expired, the proof path (status at that slot) runs.
            TxPhase::InFlight {
                broadcast: false,
                expired_at_height: None,
                ..
            } if self.failures > 0 => vec![Action::QueryBlockHeight {
                query: self.issue(now, QueryKind::BlockHeight),
            }],
            TxPhase::InFlight {
                intent,
                broadcast: false,
                expired_at_height: None,
                ..
            } => vec![Action::Broadcast {
                query: self.issue(now, QueryKind::Broadcast),
                signature: intent.signature,
                transaction: intent.transaction,
            }],
            TxPhase::InFlight {
                intent,
                expired_at_slot,
                ..
            } => vec![Action::QuerySignatureStatus {
                query: self.issue(now, QueryKind::Status),
                signature: intent.signature,
                min_context_slot: expired_at_slot,
            }],
            TxPhase::Landed { intent, .. } => vec![Action::QuerySignatureStatus {
                query: self.issue(now, QueryKind::Status),
                signature: intent.signature,
                min_context_slot: None,
            }],
            TxPhase::Done { .. } | TxPhase::Failed { .. } => Vec::new(),
        }
    }

    fn settle_wait(&mut self, now: u64, poll_ms: u64) {
        self.awaiting = None;
        self.wake_at_ms = now.saturating_add(poll_ms);
    }
}

/// One transition. Pure: `state` is not modified; errors leave it as it was.
pub fn step(
    state: &TxState,
    now: u64,
    obs: Observation,
    cfg: &MachineConfig,
) -> Result<(TxState, Vec<Action>), MachineError> {
    let mut s = state.clone();
    let expect = |s: &TxState, q: QueryId, kind: QueryKind| match s.awaiting {
        Some(a) if a.id == q && a.kind == kind => Ok(()),
        _ => Err(MachineError::UnexpectedObservation(q)),
    };
    let actions = match obs {
        Observation::Tick => {
            let timed_out = s
                .awaiting
                .is_some_and(|a| now >= a.issued_at_ms.saturating_add(cfg.query_timeout_ms));
            if s.is_terminal() || now < s.wake_at_ms || (s.awaiting.is_some() && !timed_out) {
                Vec::new()
            } else {
                s.due(now)
            }
        }
        Observation::Restarted => {
            s.awaiting = None;
            s.wake_at_ms = now;
            s.due(now)
        }
        Observation::RpcError { query, .. } => {
            let kind = s
                .awaiting
                .map(|a| a.kind)
                .ok_or(MachineError::UnexpectedObservation(query))?;
            expect(&s, query, kind)?;
            s.failures = s.failures.saturating_add(1);
            s.awaiting = None;
            s.wake_at_ms = now.saturating_add(cfg.backoff.delay_ms(s.failures, s.seed));
            Vec::new()
        }
        Observation::Signed { query, intent } => {
            expect(&s, query, QueryKind::Sign)?;
            if intent.signature.is_empty() || intent.transaction.is_empty() {
                return Err(MachineError::InvalidIntent("empty signature or transaction"));
            }
            if s.expired_signatures.contains(&intent.signature) {
                return Err(MachineError::InvalidIntent(
                    "signature already expired; sign with a fresh blockhash",
                ));
            }
            s.failures = 0;
            s.phase = TxPhase::InFlight {
                intent,
                broadcast: false,
                expired_at_height: None,
                expired_at_slot: None,
            };
            s.due(now)
        }
        Observation::Broadcasted { query } => {
            expect(&s, query, QueryKind::Broadcast)?;
            s.failures = 0;
            if let TxPhase::InFlight { broadcast, .. } = &mut s.phase {
                *broadcast = true;
            }
            s.settle_wait(now, cfg.poll_ms);
            Vec::new()
        }
        Observation::BlockHeight { query, height, slot } => {
            expect(&s, query, QueryKind::BlockHeight)?;
            match &mut s.phase {
                TxPhase::InFlight {
                    intent,
                    expired_at_height,
                    expired_at_slot,
                    ..
                } if height > intent.last_valid_block_height => {
                    s.failures = 0;
                    *expired_at_height = Some(height);
                    *expired_at_slot = Some(slot);
                    let sig = intent.signature.clone();
                    vec![Action::QuerySignatureStatus {
                        query: s.issue(now, QueryKind::Status),
                        signature: sig,
                        min_context_slot: Some(slot),
                    }]
                }
                TxPhase::InFlight { intent, .. } => {
                    // Still valid: re-send the same signed bytes (idempotent by signature).
                    // `failures` is kept: it counts the broadcasts that failed, so a node
                    // that keeps refusing is retried ever more slowly (a height query per
                    // try); the first acknowledged broadcast resets it.
                    let (signature, transaction) = (intent.signature.clone(), intent.transaction.clone());
                    vec![Action::Broadcast {
                        query: s.issue(now, QueryKind::Broadcast),
                        signature,
                        transaction,
                    }]
                }
                _ => {
                    s.failures = 0;
                    s.settle_wait(now, 0);
                    Vec::new()
                }
            }
        }
        Observation::SignatureStatus { query, status } => {
            expect(&s, query, QueryKind::Status)?;
            s.failures = 0;
            on_status(&mut s, now, status, cfg)
        }
    };
    Ok((s, actions))
}

fn on_status(s: &mut TxState, now: u64, status: Option<SigStatus>, cfg: &MachineConfig) -> Vec<Action> {
    let intent = match &s.phase {
        TxPhase::InFlight { intent, .. } | TxPhase::Landed { intent, .. } => intent.clone(),
        _ => {
            s.settle_wait(now, 0);
            return Vec::new();
        }
    };
    match status {
        Some(st) if st.commitment >= cfg.commitment => {
            s.awaiting = None;
            match st.error {
                None => {
                    s.phase = TxPhase::Done {
                        signature: intent.signature.clone(),
                        slot: st.slot,
                    };
                    vec![Action::MarkSettled {
                        signature: intent.signature,
                        slot: st.slot,
                    }]
                }
                Some(error) => {
                    s.phase = TxPhase::Failed {
                        signature: intent.signature.clone(),
                        slot: st.slot,
                        error: error.clone(),
                    };
                    vec![Action::MarkFailed {
                        signature: intent.signature,
                        error,
                    }]
                }
            }
        }
        Some(st) => {
            s.phase = TxPhase::Landed {
                intent,
                slot: st.slot,
                commitment: st.commitment,
            };
            s.settle_wait(now, cfg.poll_ms);
            Vec::new()
        }
        None => match s.phase.clone() {
            TxPhase::InFlight {
                expired_at_height: Some(_),
                ..
            } => {
                // Proven dead: expired by finalized height, then unknown. Safe to re-sign.
                s.expired_signatures.push(intent.signature);
                let excess = s
                    .expired_signatures
                    .len()
                    .saturating_sub(cfg.max_signature_history);
                s.expired_signatures.drain(..excess);
                s.resigns = s.resigns.saturating_add(1);
                s.phase = TxPhase::Pending;
                s.due(now)
            }
            _ => {
                // Unknown (or dropped from a fork): check expiry before anything else.
                s.phase = TxPhase::InFlight {
                    intent,
                    broadcast: true,
                    expired_at_height: None,
                    expired_at_slot: None,
                };
                vec![Action::QueryBlockHeight {
                    query: s.issue(now, QueryKind::BlockHeight),
                }]
            }
        },
    }
}
