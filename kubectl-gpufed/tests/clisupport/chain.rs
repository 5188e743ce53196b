//! `bill --verify` in `tests/cli.rs`: a settlement journal as the operator leaves it, a
//! Solana JSON-RPC node that answers `getTransaction` and `getSignatureStatuses` from a
//! table, and the scenario.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use gpufed_api::ComputeJob;
use gpufed_chain::JournalStore;
use gpufed_operator::settlement::store::ConfigMapStore;
use gpufed_settlement::machine::{Action, Intent, MachineConfig, Observation, QueryId, SigStatus};
use gpufed_settlement::{AttemptMeter, Commitment, Hash32, JobRef, Journal, Memo, PlanConfig};
use kube::Api;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Hub, SIG, fails, ok, ok_json, run, text};

/// `bill train --verify`: flag and journal errors, verified, not final yet, a forged root
/// on chain (exit 1), an unreachable node.
pub async fn bill_verified_on_chain(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    let out = run(k, &["bill", "train", "-n", ns, "--verify"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--solana-rpc <URL>"),
        "{}",
        text(&out.stderr)
    );
    // The test's namespace plays the operator's.
    let rpc = FakeRpc::start().await;
    let verify = ["bill", "train", "-n", ns, "--verify", "--solana-rpc", &rpc.url];
    let verify = [&verify[..], &["--operator-namespace", ns]].concat();
    let e = fails(k, &verify).await;
    let expected = format!(
        "error: no settlement journal in {ns}: is settlement enabled (--solana-rpc on the operator)?"
    );
    assert_eq!(e.trim(), expected);

    // Two records of `train` settled by SIG, a third pending; the chain anchors their root.
    let uid = Api::<ComputeJob>::namespaced(hub.client.clone(), ns)
        .get("train")
        .await
        .unwrap();
    let j = journal(ns, "train", &uid.metadata.uid.unwrap(), SIG);
    ConfigMapStore::new(hub.client.clone(), ns)
        .save(&j)
        .await
        .unwrap();
    rpc.set(SIG, memo_tx(&j.batch(0).unwrap().memo));
    let out = ok(k, &verify).await;
    assert!(
        out.contains("2 verified, 1 pending, 0 in flight, 0 failed verification"),
        "{out}"
    );
    assert!(out.contains("verified (slot 7)") && out.contains(SIG), "{out}");
    let report = ok_json(k, &[&verify[..], &["-o", "json"]].concat()).await;
    assert_eq!(report["summary"]["verified"], 2);
    assert_eq!(report["records"][2]["verdict"], "Pending");
    let report = kubectl_gpufed::verify_job(hub.client.clone(), &rpc.url, ns, ns, "train")
        .await
        .unwrap();
    assert!(report.passed() && report.summary.verified == 2, "{report:?}");
    // Known but not finalized yet: it waits, nothing failed.
    rpc.set_finalized(false);
    let out = ok(k, &verify).await;
    assert!(
        out.contains("0 verified, 1 pending, 2 in flight, 0 failed"),
        "{out}"
    );
    rpc.set_finalized(true);

    // The chain anchors another root: exit 1, and the table says which records failed.
    let forged = Memo::Batch {
        id: 0,
        root: Hash32([7; 32]),
        count: 2,
    };
    rpc.set(SIG, memo_tx(&forged.to_string()));
    let out = run(k, &verify).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAILED: proof does not match the memo root"),
        "{stdout}"
    );
    let failed = format!("error: 2 of 2 settled usage records of computejob {ns}/train failed verification");
    assert!(stderr.starts_with(&failed), "{stderr}");
    // An unreachable node is an error, not a verdict.
    let down = [&verify[..6], &["http://127.0.0.1:1", "--operator-namespace", ns]].concat();
    let e = fails(k, &down).await;
    assert!(e.starts_with("error: Solana RPC at http://127.0.0.1:1: "), "{e}");
}

/// The SPL Memo program.
pub const MEMO_PROGRAM: &str = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";

fn query(actions: &[Action]) -> QueryId {
    match actions.first() {
        Some(Action::SignAndPersistIntent { query })
        | Some(Action::Broadcast { query, .. })
        | Some(Action::QuerySignatureStatus { query, .. })
        | Some(Action::QueryBlockHeight { query }) => *query,
        other => panic!("no query in {other:?}"),
    }
}

/// Drives batch `id` to settled by `sig` at finalized commitment.
fn settle(j: &mut Journal, id: u64, sig: &str) {
    let cfg = MachineConfig::default();
    let a = j.step(id, 0, Observation::Restarted, &cfg).unwrap();
    let intent = Intent {
        signature: sig.into(),
        blockhash: "bh".into(),
        last_valid_block_height: 10,
        transaction: "tx".into(),
        signed_at_slot: None,
    };
    let signed = Observation::Signed {
        query: query(&a),
        intent,
    };
    let a = j.step(id, 0, signed, &cfg).unwrap();
    j.step(id, 0, Observation::Broadcasted { query: query(&a) }, &cfg)
        .unwrap();
    let a = j.step(id, 0, Observation::Restarted, &cfg).unwrap();
    let status = Some(SigStatus {
        slot: 7,
        commitment: Commitment::Finalized,
        error: None,
    });
    let obs = Observation::SignatureStatus {
        query: query(&a),
        status,
    };
    j.step(id, 0, obs, &cfg).unwrap();
}

/// Attempt 1 of job `ns/name` (uid `uid`): two one-minute records settled in batch 0 by
/// `sig`, and a third one pending.
pub fn journal(ns: &str, name: &str, uid: &str, sig: &str) -> Journal {
    let job = JobRef {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
    };
    let mut meter = AttemptMeter::new(job, 1, "provider-a".into(), ns.into(), 2_500_000);
    let t = 1_767_225_600;
    let mut j = Journal::new();
    for i in 0..2 {
        j.append(meter.record(t + 60 * i, t + 60 * (i + 1), 8).unwrap())
            .unwrap();
    }
    let planned = j.plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0);
    assert_eq!(planned, Some(0));
    settle(&mut j, 0, sig);
    j.append(meter.record(t + 120, t + 180, 8).unwrap()).unwrap();
    j
}

/// A successful `getTransaction` (jsonParsed) answer carrying `memo`.
pub fn memo_tx(memo: &str) -> Value {
    json!({"slot": 7, "meta": {"err": null, "innerInstructions": []},
           "transaction": {"message": {"instructions": [{"programId": MEMO_PROGRAM, "parsed": memo}]}}})
}

#[derive(Default)]
struct Chain {
    txs: BTreeMap<String, Value>,
    /// When false, transactions are known at confirmed commitment only.
    finalized: bool,
}

/// A JSON-RPC node on 127.0.0.1 that knows the transactions given to [`FakeRpc::set`].
pub struct FakeRpc {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    chain: Arc<Mutex<Chain>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRpc {
    /// Starts the node.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let chain = Arc::new(Mutex::new(Chain {
            finalized: true,
            ..Chain::default()
        }));
        let shared = Arc::clone(&chain);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Self { url, chain, task }
    }

    /// The transaction of `signature` (replacing any).
    pub fn set(&self, signature: &str, tx: Value) {
        self.chain.lock().unwrap().txs.insert(signature.into(), tx);
    }

    /// Whether the transactions are finalized (else known at confirmed only).
    pub fn set_finalized(&self, finalized: bool) {
        self.chain.lock().unwrap().finalized = finalized;
    }
}

impl Drop for FakeRpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(chain: &Mutex<Chain>, req: &Value) -> Value {
    let chain = chain.lock().unwrap();
    let result = match req["method"].as_str() {
        Some("getTransaction") => {
            let finalized = req["params"][1]["commitment"] == "finalized";
            let sig = req["params"][0].as_str().unwrap_or_default();
            match chain.txs.get(sig) {
                Some(tx) if chain.finalized || !finalized => tx.clone(),
                _ => Value::Null,
            }
        }
        // Known signatures answer with their commitment, like a real node's status cache.
        Some("getSignatureStatuses") => {
            let sig = req["params"][0][0].as_str().unwrap_or_default();
            let status = chain.txs.get(sig).map(|_| {
                let level = if chain.finalized { "finalized" } else { "confirmed" };
                json!({"slot": 7, "confirmations": null, "err": null, "confirmationStatus": level})
            });
            json!({"context": {"slot": 9}, "value": [status]})
        }
        _ => Value::Null,
    };
    json!({"jsonrpc": "2.0", "id": req["id"], "result": result})
}

/// Serves HTTP/1.1 requests (keep-alive) on one connection.
async fn serve(mut stream: TcpStream, chain: Arc<Mutex<Chain>>) {
    let mut buf = Vec::new();
    loop {
        let body = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                    break body;
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let req: Value = serde_json::from_slice(&body).unwrap_or_default();
        let body = answer(&chain, &req).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
