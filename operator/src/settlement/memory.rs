//! What settlement remembers across its leadership terms.
//!
//! A term ends on any round error (a journal save, an RPC answer it cannot use) and the
//! next starts within seconds (`crate::lease::per_term`). What paces the authority's
//! spending and the operator's Events must outlive that: payout accounts created and how
//! often their owners closed them ([`super::payouts`]), and when each problem was last
//! told. Were it kept per term, an owner closing its payout account after each creation
//! would have it re-created after each failed round, and every Event re-sent.
//!
//! All of it is keyed by account address, provider or job attempt, so carrying it over a
//! term of another replica is safe: `ready` only spares a lookup (a round's report takes
//! an account out again), and a problem told by this replica an hour ago is told again.

use tokio::sync::Mutex;

use super::{payouts, surface, unmetered};

/// Settlement's memory across terms (one per process: [`super::run`]).
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Payout accounts found or created, and the pacing of their creations.
    pub payouts: payouts::Payouts,
    /// When each provider's payout problem was last told.
    pub payouts_told: surface::PayoutTold,
    /// When each job's unmeterable usage was last told.
    pub unmetered_told: unmetered::Told,
}

/// Runs one term's `session` with the memory kept across terms: what it changed stays
/// for the next term, however it ended. Terms run one after another, so the lock is
/// only ever waited on by a term whose predecessor is still winding down.
pub(super) async fn with_memory<R>(memory: &Mutex<Memory>, session: impl AsyncFnOnce(&mut Memory) -> R) -> R {
    let mut memory = memory.lock().await;
    session(&mut memory).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use gpufed_chain::Pubkey;

    use super::*;

    #[tokio::test]
    async fn a_term_ended_by_an_error_leaves_its_memory_to_the_next() {
        let memory = Mutex::new(Memory::default());
        let ata = Pubkey([9; 32]);
        let reasons: BTreeMap<String, String> = [("p".to_string(), "missing".to_string())].into();
        let failed: Result<(), &str> = with_memory(&memory, async |m: &mut Memory| {
            assert!(m.payouts.creating(ata, 0));
            m.payouts.exists(ata);
            assert_eq!(m.payouts_told.due(&reasons, 0).len(), 1);
            Err("journal save failed")
        })
        .await;
        assert!(failed.is_err());
        // The next term, seconds later: the account is still known, the problem still told.
        with_memory(&memory, async |m: &mut Memory| {
            assert!(!m.payouts.due(&ata, 5_000), "not looked up or created again");
            assert!(m.payouts_told.due(&reasons, 5).is_empty(), "not told again");
        })
        .await;
    }
}
