//! The journal's settled history stays bounded (`Journal::prune_beyond`), and a deleted
//! job's bookkeeping goes once nothing of it is left (`Journal::forget_jobs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::{AppendOutcome, Journal, PlanConfig, RecordStatus, Retention, UsageRecord};

use common::{Rng, records, settle};

const KEEP: Retention = Retention {
    batches: 16,
    records: 64,
};

fn plan_small(j: &mut Journal) -> Option<u64> {
    let cfg = PlanConfig {
        max_records_per_batch: 8,
        ..PlanConfig::default()
    };
    j.plan_batch(&cfg, &BTreeSet::new(), 0)
}

fn header_bytes(j: &Journal) -> usize {
    serde_json::to_vec(&j.to_chunks(1000).0).unwrap().len()
}

#[test]
fn a_busy_journal_keeps_a_bounded_history_and_every_settled_amount() {
    let by_job = records(12, 60, 3, &mut Rng(7));
    let all: Vec<UsageRecord> = by_job.iter().flatten().cloned().collect();
    let mut j = Journal::new();
    let mut largest_header = 0;
    let mut pruned = 0;
    // Records arrive a minute at a time, a batch settles after each: 90 batches.
    for minute in 0..60 {
        for job in &by_job {
            assert_eq!(j.append(job[minute].clone()).unwrap(), AppendOutcome::Inserted);
        }
        while let Some(b) = plan_small(&mut j) {
            settle(&mut j, b, &format!("sig-{b}"), None);
        }
        let archived = j.prune_beyond(&KEEP);
        pruned += archived.iter().map(|a| a.records.len()).sum::<usize>();
        for a in &archived {
            assert!(
                a.records
                    .iter()
                    .all(|(r, p)| gpufed_settlement::verify_proof(r, p, &a.batch.root)),
                "pruned records come back with their proofs"
            );
        }
        let (batches, settled) = j.history();
        assert!(
            batches <= KEEP.batches && settled <= KEEP.records,
            "{batches} {settled}"
        );
        if !archived.is_empty() {
            // Down to half, so the chunks are not rewritten at every settled batch.
            assert!(batches <= KEEP.batches / 2 && settled <= KEEP.records / 2);
        }
        largest_header = largest_header.max(header_bytes(&j));
    }
    assert!(pruned > all.len() / 2, "most of the history went: {pruned}");
    assert_eq!(j.backlog_records(), 0);
    // The header never held more than the retention's worth of batches: its size is that
    // of the live bookkeeping plus at most 16 batches, not of 720 records.
    let mut unpruned = Journal::new();
    for r in &all {
        unpruned.append(r.clone()).unwrap();
    }
    while let Some(b) = plan_small(&mut unpruned) {
        settle(&mut unpruned, b, &format!("sig-{b}"), None);
    }
    assert!(
        largest_header * 3 < header_bytes(&unpruned),
        "bounded {largest_header} B vs {} B unpruned",
        header_bytes(&unpruned)
    );
    // What settled is still counted per job, to the base unit, pruned or not.
    let mut expected: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in &all {
        let e = expected.entry(r.job.uid.as_str()).or_default();
        e.0 += 1;
        e.1 += r.amount;
    }
    for (uid, (n, amount)) in expected {
        let settled = j.billing(uid).settled;
        assert_eq!((settled.records, settled.amount), (n, amount), "{uid}");
    }
    // Metering that starts over (a restart) changes nothing: every record is known.
    for r in &all {
        assert_eq!(j.append(r.clone()).unwrap(), AppendOutcome::Duplicate);
    }
    assert_eq!(j.backlog_records(), 0);
}

#[test]
fn live_batches_and_pending_records_are_never_pruned() {
    let all: Vec<UsageRecord> = records(4, 10, 2, &mut Rng(8)).into_iter().flatten().collect();
    let mut j = Journal::new();
    for r in &all {
        j.append(r.clone()).unwrap();
    }
    let settled = plan_small(&mut j).unwrap();
    settle(&mut j, settled, "done", None);
    let failed = plan_small(&mut j).unwrap();
    settle(&mut j, failed, "failed", Some("custom program error".into()));
    let live = plan_small(&mut j).unwrap();
    let pending = j.backlog_records();
    let archived = j.prune_beyond(&Retention {
        batches: 0,
        records: 0,
    });
    let ids: Vec<u64> = archived.iter().map(|a| a.batch.id).collect();
    assert_eq!(ids, [settled], "only the settled batch comes back archived");
    assert!(j.batch(failed).is_none(), "the failed one is dropped");
    assert!(j.batch(live).is_some(), "the live one stays");
    assert_eq!(j.backlog_records(), pending);
    let in_live = &j.batch(live).unwrap().records;
    assert!(
        in_live
            .iter()
            .all(|id| j.status(id) == Some(RecordStatus::InBatch(live)))
    );
}

#[test]
fn a_deleted_job_is_forgotten_only_once_none_of_its_records_is_left() {
    let by_job = records(2, 4, 1, &mut Rng(9));
    let mut j = Journal::new();
    for r in by_job.iter().flatten() {
        j.append(r.clone()).unwrap();
    }
    let (gone, live) = (by_job[0][0].job.uid.clone(), by_job[1][0].job.uid.clone());
    while let Some(b) = plan_small(&mut j) {
        settle(&mut j, b, "s", None);
    }
    // Its records are still kept (history within the retention): nothing is forgotten,
    // nor is a uid the journal never knew counted.
    assert_eq!(j.forget_jobs([gone.as_str(), "uid-unknown"]), 0);
    assert!(j.known_jobs().contains(gone.as_str()));
    j.prune_beyond(&Retention {
        batches: 0,
        records: 0,
    });
    assert_eq!(j.forget_jobs([gone.as_str()]), 1);
    let known = j.known_jobs();
    assert!(
        !known.contains(gone.as_str()) && known.contains(live.as_str()),
        "{known:?}"
    );
    assert_eq!(j.billing(&gone).settled.records, 0);
    assert_eq!(j.billing(&live).settled.records, 4);
}
