use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::machine::{Action, Intent, MachineConfig, Observation, QueryId, SigStatus};
use gpufed_settlement::{AttemptMeter, Commitment, Hash32, JobRef, Memo, PlanConfig};
use serde_json::{Value, json};

use super::*;
use crate::fixtures::T0;

const T: u64 = T0.unsigned_abs();

const UID: &str = "uid-train";
const SIG: &str = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
const SIG2: &str = "3xQm8r5bJ9kq2AfZ1nTFmc6wWq7qG4oYbsY6d6mG3uQeH5yKkZ8W1nVd2tQe9hL7pXo4rCz3sJ2fU6aN8bDvE1tR";
const MEMO_PROGRAM: &str = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";

fn job_ref(uid: &str) -> JobRef {
    JobRef {
        namespace: "team".into(),
        name: "train".into(),
        uid: uid.into(),
    }
}

fn query(actions: &[Action]) -> QueryId {
    match actions.first() {
        Some(Action::SignAndPersistIntent { query })
        | Some(Action::Broadcast { query, .. })
        | Some(Action::QuerySignatureStatus { query, .. })
        | Some(Action::QueryBlockHeight { query }) => *query,
        other => panic!("no query in {other:?}"),
    }
}

/// Signs batch `id` with `sig`; with `finalize`, also settles it at finalized commitment.
fn sign(j: &mut Journal, id: u64, sig: &str, finalize: bool) {
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
    if !finalize {
        return;
    }
    j.step(id, 0, Observation::Broadcasted { query: query(&a) }, &cfg)
        .unwrap();
    let a = j.step(id, 0, Observation::Restarted, &cfg).unwrap();
    let status = Some(SigStatus {
        slot: 42,
        commitment: Commitment::Finalized,
        error: None,
    });
    let obs = Observation::SignatureStatus {
        query: query(&a),
        status,
    };
    j.step(id, 0, obs, &cfg).unwrap();
}

/// Attempt 1 (8 GPUs at 2.5/GPU-hour, one-minute records): three records settled in batch
/// 0 (with a record of another job), one in batch 1 (signed, not final), one pending; and
/// a pending record of attempt 2.
fn journal() -> Journal {
    let mut j = Journal::new();
    let plan = |j: &mut Journal| j.plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0);
    let mut a1 = AttemptMeter::new(job_ref(UID), 1, "provider-a".into(), "team".into(), 2_500_000);
    let mut other = AttemptMeter::new(job_ref("uid-other"), 1, "provider-a".into(), "team".into(), 1);
    for i in 0..3 {
        let r = a1.record(T + 60 * i, T + 60 * (i + 1), 8).unwrap();
        j.append(r).unwrap();
    }
    j.append(other.record(T, T + 60, 1).unwrap()).unwrap();
    assert_eq!(plan(&mut j), Some(0));
    sign(&mut j, 0, SIG, true);
    j.append(a1.record(T + 180, T + 240, 8).unwrap()).unwrap();
    assert_eq!(plan(&mut j), Some(1));
    sign(&mut j, 1, SIG2, false);
    j.append(a1.record(T + 240, T + 300, 8).unwrap()).unwrap();
    let mut a2 = AttemptMeter::new(job_ref(UID), 2, "provider-b".into(), "team".into(), 1_800_000);
    j.append(a2.record(T + 400, T + 430, 4).unwrap()).unwrap();
    j
}

/// A `getTransaction` (jsonParsed) answer with `memo` and `meta.err`.
fn tx(memo: Option<&str>, err: Value) -> Value {
    let instructions: Vec<Value> = memo
        .map(|m| json!({"programId": MEMO_PROGRAM, "parsed": m}))
        .into_iter()
        .collect();
    json!({"slot": 42, "meta": {"err": err, "innerInstructions": []},
           "transaction": {"message": {"instructions": instructions}}})
}

fn chain(lookup: Lookup) -> BTreeMap<String, Lookup> {
    BTreeMap::from([(SIG.to_owned(), lookup)])
}

fn verdicts(r: &VerifyReport) -> Vec<Verdict> {
    r.records.iter().map(|row| row.verdict).collect()
}

#[test]
fn settled_records_verify_and_the_rest_wait() {
    let j = journal();
    let records = collect(&j, UID);
    assert_eq!(records.len(), 6, "the other job's record is not the job's");
    assert_eq!(signatures(&records), BTreeSet::from([SIG.to_owned()]));
    let memo = j.batch(0).unwrap().memo.clone();
    let txs = chain(Lookup::Finalized(tx(Some(&memo), Value::Null)));
    let settled = j.billing(UID).settled.records;
    let r = report("team/train", UID, &records, &txs, settled);
    use Verdict::*;
    assert_eq!(
        verdicts(&r),
        [Verified, Verified, Verified, InFlight, Pending, Pending]
    );
    assert_eq!(
        r.summary,
        Summary {
            records: 6,
            verified: 3,
            pending: 2,
            in_flight: 1,
            settled: 3,
            failed: 0,
            pruned: 0
        }
    );
    assert!(r.passed());
    let row = &r.records[0];
    assert_eq!((row.batch, row.slot, row.gpu_seconds), (Some(0), Some(42), 480));
    assert_eq!(row.amount, "0.333333");
    assert_eq!(row.start, "2026-01-01T00:00:00Z");
    assert_eq!(row.signature.as_deref(), Some(SIG));
    assert_eq!(r.records[3].signature.as_deref(), Some(SIG2), "in flight, signed");
    assert_eq!((r.records[4].batch, r.records[5].attempt), (None, 2));

    let text = render(&r);
    let id = &row.id[..ID_PREFIX];
    assert!(
        text.starts_with("computejob team/train (uid uid-train): 6 usage records"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{id}…   1         2026-01-01T00:00:00Z +60s   480           0.333333   0       5VERv8NMvzbJ…   verified (slot 42)"
        )),
        "{text}"
    );
    assert!(text.contains("0 failed verification"), "{text}");
    assert!(text.contains(&format!("Transactions:  batch 0: {SIG}")), "{text}");
    assert!(
        text.contains(&format!("               batch 1: {SIG2} (in flight)")),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["summary"]["inFlight"], 1);
    assert_eq!(json["records"][0]["verdict"], "Verified");
    assert_eq!(json["records"][0]["gpuSeconds"], 480);
    assert!(json["records"][4].get("batch").is_none());
}

#[test]
fn a_tampered_record_fails_verification() {
    let j = journal();
    let mut records = collect(&j, UID);
    let memo = j.batch(0).unwrap().memo.clone();
    let txs = chain(Lookup::Finalized(tx(Some(&memo), Value::Null)));
    // The journal claims more than was anchored on chain.
    records[1].record.amount += 1;
    let r = report("team/train", UID, &records, &txs, 3);
    assert_eq!(r.records[1].verdict, Verdict::ProofMismatch);
    assert_eq!(
        (r.records[0].verdict, r.records[2].verdict),
        (Verdict::Verified, Verdict::Verified)
    );
    assert_eq!((r.summary.verified, r.summary.failed), (2, 1));
    assert!(!r.passed());
    let detail = r.records[1].detail.clone().unwrap();
    assert_eq!(detail, "the record differs from what batch 0 anchored");
    assert_eq!(r.records[1].root, Some(j.batch(0).unwrap().root.to_hex()));
    let text = render(&r);
    assert!(
        text.contains(
            "FAILED: proof does not match the memo root: the record differs from what batch 0 anchored"
        ),
        "{text}"
    );
    assert!(
        text.contains("2 verified, 2 pending, 1 in flight, 1 failed verification"),
        "{text}"
    );

    // A memo anchoring another root: no record of the batch verifies.
    let forged = Memo::Batch {
        id: 0,
        root: Hash32([7; 32]),
        count: 4,
    }
    .to_string();
    let records = collect(&j, UID);
    let txs = chain(Lookup::Finalized(tx(Some(&forged), Value::Null)));
    let r = report("team/train", UID, &records, &txs, 3);
    assert_eq!(r.summary.failed, 3);
    assert!(
        r.records[..3]
            .iter()
            .all(|row| row.verdict == Verdict::ProofMismatch)
    );
    let detail = r.records[0].detail.as_deref().unwrap();
    assert_eq!(
        detail,
        "the memo's root differs from the journal's root of batch 0"
    );
    assert_eq!(r.records[0].root, Some(Hash32([7; 32]).to_hex()));
}

#[test]
fn the_failure_counts_every_settled_record() {
    let j = journal();
    let mut records = collect(&j, UID);
    let memo = j.batch(0).unwrap().memo.clone();
    // Settled record 0 verifies, record 1 was tampered with, record 2's transaction is
    // not final yet: 1 of 3 settled records failed.
    records[1].record.amount += 1;
    records[2].proof.as_mut().unwrap().signature = Some(SIG2.to_owned());
    let txs = BTreeMap::from([
        (SIG.to_owned(), Lookup::Finalized(tx(Some(&memo), Value::Null))),
        (SIG2.to_owned(), Lookup::NotFinalized),
    ]);
    let r = report("team/train", UID, &records, &txs, 3);
    assert_eq!(
        verdicts(&r)[..3],
        [Verdict::Verified, Verdict::ProofMismatch, Verdict::NotFinalized]
    );
    assert_eq!((r.summary.settled, r.summary.failed), (3, 1));
    let e = r.failure().unwrap();
    assert_eq!(
        e.to_string(),
        "1 of 3 settled usage records of computejob team/train failed verification on chain"
    );
    records[1].record.amount -= 1;
    let r = report("team/train", UID, &records, &txs, 3);
    assert!(r.failure().is_none());
}

#[test]
fn chain_failures_fail_but_finality_is_awaited() {
    let j = journal();
    let records = collect(&j, UID);
    let memo = j.batch(0).unwrap().memo.clone();
    let judge = |lookup: Lookup| report("team/train", UID, &records, &chain(lookup), 3);

    let r = judge(Lookup::Missing);
    assert_eq!((r.records[0].verdict, r.summary.failed), (Verdict::NotFound, 3));
    let failed = tx(Some(&memo), json!({"InstructionError": [0, "Custom"]}));
    let r = judge(Lookup::Finalized(failed));
    assert_eq!(r.records[0].verdict, Verdict::Failed);
    assert!(
        r.records[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("InstructionError")
    );
    assert!(!r.passed());
    let r = judge(Lookup::Finalized(tx(None, Value::Null)));
    assert_eq!((r.records[0].verdict, r.summary.failed), (Verdict::NoMemo, 3));
    let r = judge(Lookup::Finalized(tx(Some("not a gpufed memo"), Value::Null)));
    assert_eq!(r.records[0].verdict, Verdict::NoMemo);
    // Not final yet is not a failure: it waits, like the records in flight.
    let r = judge(Lookup::NotFinalized);
    assert!(r.passed());
    assert_eq!((r.summary.in_flight, r.summary.verified), (4, 0));
    assert!(render(&r).contains("not finalized yet"));

    // A settled record without proof or signature cannot be verified.
    let mut broken = records.clone();
    broken[0].proof = None;
    let r = report("team/train", UID, &broken, &chain(Lookup::Missing), 3);
    assert_eq!(r.records[0].verdict, Verdict::NoProof);
    assert!(Verdict::NoProof.is_failure() && !Verdict::Pending.is_failure());
}

#[test]
fn an_empty_journal_and_pruned_records() {
    let r = report("team/train", UID, &[], &BTreeMap::new(), 2);
    assert_eq!((r.summary.records, r.summary.pruned), (0, 2));
    assert!(r.passed());
    let text = render(&r);
    assert!(
        text.contains("No usage records of this job in the journal yet."),
        "{text}"
    );
    assert!(text.contains("Not checked:   2 settled records pruned"), "{text}");
    assert!(!text.contains("Transactions:"), "{text}");
    assert!(collect(&Journal::new(), UID).is_empty());
    assert_eq!(abbreviate("abc", 12), "abc");
    assert_eq!(rfc3339(u64::MAX), u64::MAX.to_string());
}
