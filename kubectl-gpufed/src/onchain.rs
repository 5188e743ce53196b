//! I/O of `bill --verify`: the settlement journal from the hub (the operator's ConfigMaps)
//! and the settlement transactions from a Solana RPC node; [`crate::verify`] judges them.

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_chain::{JournalStore, Rpc};
use gpufed_operator::settlement::store::ConfigMapStore;
use gpufed_settlement::Commitment;
use kube::Client;

use crate::error::{Error, Result};
use crate::jobs::job_ref;
use crate::session::Session;
use crate::verify::{self, Lookup, VerifyReport};

/// Timeout of each RPC call.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Verifies the settled usage records of ComputeJob `ns/name` against the chain at
/// `rpc_url`, reading the settlement journal from `operator_ns` of the hub. Records not
/// settled yet are reported as pending or in flight; a settled record that fails
/// verification is in the report (see [`VerifyReport::passed`]), not an error.
pub async fn verify_job(
    client: Client,
    rpc_url: &str,
    operator_ns: &str,
    ns: &str,
    name: &str,
) -> Result<VerifyReport, Error> {
    let session = Session {
        client,
        namespace: ns.to_owned(),
        server: "the hub".to_owned(),
    };
    verify(&session, rpc_url, operator_ns, name).await
}

fn rpc_error(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Chain {
        url: url.to_owned(),
        message: e.to_string(),
    }
}

/// [`verify_job`] in the session's namespace.
pub async fn verify(session: &Session, rpc_url: &str, operator_ns: &str, name: &str) -> Result<VerifyReport> {
    let rpc = Rpc::new(rpc_url, RPC_TIMEOUT).map_err(|e| Error::Flag {
        flag: "--solana-rpc".into(),
        message: e.to_string(),
    })?;
    let job = session.job(name).await?;
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let mut store = ConfigMapStore::new(session.client.clone(), operator_ns);
    let journal = store
        .load()
        .await
        .map_err(|e| Error::Api {
            what: format!("reading the settlement journal in {operator_ns}"),
            message: e.to_string(),
            code: None,
        })?
        .ok_or_else(|| Error::NoJournal {
            namespace: operator_ns.to_owned(),
        })?;
    let records = verify::collect(&journal, &uid);
    // One fetch per batch transaction, however many of the job's records it settled.
    let mut txs = BTreeMap::new();
    for sig in verify::signatures(&records) {
        tracing::debug!(signature = %sig, "fetching settlement transaction");
        let lookup = match rpc
            .transaction(&sig, Commitment::Finalized)
            .await
            .map_err(|e| rpc_error(rpc_url, e))?
        {
            Some(tx) => Lookup::Finalized(tx),
            // `getTransaction` answers null for a while after a transaction is final (and
            // between confirmation and finality): the signature status decides "known". A
            // stale `finalized` status of a dropped slot (see `gpufed_chain::finality`)
            // answers unknown there, so such a batch reads "not found", not "not final".
            None => match rpc
                .signature_status(&sig)
                .await
                .map_err(|e| rpc_error(rpc_url, e))?
            {
                Some(_) => Lookup::NotFinalized,
                None => Lookup::Missing,
            },
        };
        txs.insert(sig, lookup);
    }
    let settled_total = journal.billing(&uid).settled.records;
    Ok(verify::report(
        &job_ref(&job),
        &uid,
        &records,
        &txs,
        settled_total,
    ))
}
