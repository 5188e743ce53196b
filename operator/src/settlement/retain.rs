//! Keeps the settlement journal bounded (docs/settlement.md, "History"): settled history
//! beyond the retention is pruned ([`gpufed_settlement::retention`]), and the metering
//! positions and settled totals of deleted jobs are forgotten once none of their records
//! is left.
//!
//! Forgetting a job that still exists would meter it again from the start of its attempt
//! and bill it twice, so a job counts as deleted only when neither the round's cache nor
//! a list of ComputeJobs straight from the API server (at most every [`RELIST`], and only
//! while some job is missing from the cache) holds its uid; and a job forgotten is never
//! metered again by this term, should a lagging cache still show it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gpufed_api::ComputeJob;
use gpufed_chain::{ChainError, Settler};
use gpufed_settlement::Retention;
use kube::Api;
use kube::api::ListParams;
use tracing::warn;

use super::store::ConfigMapStore;
use crate::context::Context;

/// How often ComputeJobs are listed to confirm that jobs missing from the cache are gone.
pub const RELIST: Duration = Duration::from_secs(600);

/// Retention state of one settlement term.
pub(super) struct Retainer {
    keep: Retention,
    listed_at: Option<Instant>,
    forgotten: BTreeSet<String>,
}

impl Retainer {
    pub(super) fn new(keep: Retention) -> Self {
        Self {
            keep,
            listed_at: None,
            forgotten: BTreeSet::new(),
        }
    }

    /// Whether the job of `uid` was forgotten this term (and must not be metered).
    pub(super) fn forgot(&self, uid: &str) -> bool {
        self.forgotten.contains(uid)
    }

    /// Prunes and forgets what the journal no longer needs; returns the records pruned.
    /// `live`: the uids of the jobs in the round's cache.
    pub(super) async fn run(
        &mut self,
        ctx: &Context,
        settler: &mut Settler<ConfigMapStore>,
        live: &BTreeSet<&str>,
    ) -> Result<usize, ChainError> {
        let known = settler.journal().known_jobs();
        let mut deleted = BTreeSet::new();
        let due = self.listed_at.is_none_or(|t| t.elapsed() >= RELIST);
        if due && known.iter().any(|uid| !live.contains(uid)) {
            match listed_uids(ctx).await {
                Ok(listed) => {
                    self.listed_at = Some(Instant::now());
                    deleted = gone(&known, live, &listed);
                }
                Err(e) => warn!(error = %e, "cannot list ComputeJobs; deleted jobs are forgotten later"),
            }
        }
        let (records, forgotten) = settler.retain(&self.keep, &deleted).await?;
        if forgotten > 0 {
            let known = settler.journal().known_jobs();
            self.forgotten
                .extend(deleted.into_iter().filter(|uid| !known.contains(uid.as_str())));
        }
        Ok(records)
    }
}

/// The jobs the journal `known`s that are deleted: in neither the round's cache (`live`)
/// nor the API server's list (`listed`, read after the cache's state).
fn gone(known: &BTreeSet<&str>, live: &BTreeSet<&str>, listed: &BTreeSet<String>) -> BTreeSet<String> {
    known
        .iter()
        .filter(|uid| !live.contains(*uid) && !listed.contains(**uid))
        .map(|uid| (*uid).to_owned())
        .collect()
}

/// The uids of all ComputeJobs, from the API server (metadata only).
async fn listed_uids(ctx: &Context) -> Result<BTreeSet<String>, kube::Error> {
    let api: Api<ComputeJob> = Api::all(ctx.hub.clone());
    let list = api.list_metadata(&ListParams::default()).await?;
    Ok(list.items.into_iter().filter_map(|m| m.metadata.uid).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_counts_as_deleted_only_when_neither_the_cache_nor_the_list_has_it() {
        let known = BTreeSet::from(["cached", "listed", "both", "deleted"]);
        let live = BTreeSet::from(["cached", "both", "new-in-cache"]);
        let listed: BTreeSet<String> = ["listed", "both", "new-in-list"].map(String::from).into();
        // A job the cache lags behind on (only listed), or the list missed (only cached),
        // is not forgotten: it would be metered again from its attempt's start.
        assert_eq!(
            gone(&known, &live, &listed),
            BTreeSet::from(["deleted".to_owned()])
        );
        assert!(gone(&BTreeSet::new(), &live, &listed).is_empty());
    }
}
