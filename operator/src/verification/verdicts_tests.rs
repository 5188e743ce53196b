use super::*;
use gpufed_trust::{Band, Failure, Params};

/// Rounds every hour, 5 s grace; a 2-minute challenge timeout.
const HOUR: u64 = 3_600_000;
const TIMEOUT: u64 = 120_000;
/// A round's start (some hour on the Unix clock).
const R: u64 = 1_796_000_400_000 - 1_796_000_400_000 % HOUR;

fn rounds() -> Rounds {
    Rounds::new(HOUR, 5_000)
}

fn bands(slack_ms: u64) -> Bands {
    Bands {
        bands: vec![Band {
            model: "NVIDIA H100 80GB HBM3".into(),
            params: Params::u32(16, 4, 4, 8),
            min_kernel_micros: 100,
            max_kernel_micros: 10_000,
            round_trip_slack_ms: slack_ms,
        }],
    }
}

/// A record of a round challenge issued 40 ms into round `R`, judged 3 s later: one GPU
/// passed, one failed.
fn record(fingerprint: &str) -> String {
    to_text(&Record {
        bands: fingerprint.into(),
        issued_at_ms: R + 40,
        verdict_at_ms: R + 3_000,
        nonce: Some("n-1".into()),
        proven: ["GPU-1".to_owned()].into(),
        verdicts: vec![
            GpuVerdict {
                uuid: "GPU-1".into(),
                model: "NVIDIA H100 80GB HBM3".into(),
                serial: Some("1650923000001".into()),
                failure: None,
            },
            GpuVerdict {
                uuid: "GPU-2".into(),
                model: "NVIDIA H100 80GB HBM3".into(),
                serial: None,
                failure: Some(Failure::WrongDigest { row: 3 }),
            },
        ],
    })
}

#[test]
fn a_record_resumes_whole_and_waits_for_its_next_round() {
    let fp = bands_fingerprint(&bands(30_000));
    let (outcome, resumed) = resume(&record(&fp), &fp, &rounds(), TIMEOUT, R + 600_000);
    assert_eq!(outcome, Outcome::Restored);
    let r = resumed.expect("resumed");
    assert_eq!(r.next_due_ms, R + HOUR, "the next round, not at once");
    assert_eq!(r.valid_until_ms, R + HOUR + 5_000 + TIMEOUT);
    assert_eq!(r.record.verdicts.len(), 2);
    assert!(r.record.verdicts[0].passed() && !r.record.verdicts[1].passed());
    assert_eq!(
        r.record.verdicts[1].failure.as_ref().map(Failure::reason),
        Some("WrongDigest")
    );
    assert_eq!(r.record.nonce.as_deref(), Some("n-1"));
    assert!(r.record.proven.contains("GPU-1") && r.record.proven.len() == 1);
    assert_eq!(to_text(&r.record), record(&fp), "it saves back as it was");
}

#[test]
fn a_record_whose_round_has_started_counts_until_it_lapses_and_asks_for_a_challenge_now() {
    let fp = bands_fingerprint(&bands(30_000));
    // The old leader went away during the next round; this one takes over 30 s into it.
    let (outcome, resumed) = resume(&record(&fp), &fp, &rounds(), TIMEOUT, R + HOUR + 30_000);
    assert_eq!(outcome, Outcome::Due);
    let r = resumed.expect("still counts");
    assert_eq!(r.next_due_ms, 0, "challenged at once, on its own clock");
    assert_eq!(r.valid_until_ms, R + HOUR + 5_000 + TIMEOUT);
    // Once it would have lapsed under the old leader, it is gone.
    let late = R + HOUR + 5_000 + TIMEOUT + 1;
    assert_eq!(
        resume(&record(&fp), &fp, &rounds(), TIMEOUT, late),
        (Outcome::Expired, None)
    );
}

#[test]
fn other_bands_an_unreadable_record_or_one_from_the_future_resume_nothing() {
    let old = bands_fingerprint(&bands(30_000));
    let new = bands_fingerprint(&bands(2_000));
    assert_ne!(old, new, "a band's slack is part of the fingerprint");
    assert_eq!(old, bands_fingerprint(&bands(30_000)), "and it is stable");
    assert_eq!(old.len(), 16);
    let now = R + 60_000;
    assert_eq!(
        resume(&record(&old), &new, &rounds(), TIMEOUT, now),
        (Outcome::BandsChanged, None)
    );
    for text in ["", "{}", "not json", r#"{"bands":"x","issuedAtMs":-1}"#] {
        assert_eq!(
            resume(text, &old, &rounds(), TIMEOUT, now),
            (Outcome::Unreadable, None),
            "{text:?}"
        );
    }
    // Judged "after" now: a clock that went backwards, or a forged record.
    assert_eq!(
        resume(&record(&old), &old, &rounds(), TIMEOUT, R + 2_000),
        (Outcome::Expired, None)
    );
}

#[test]
fn outcomes_have_distinct_labels() {
    let all = [
        Outcome::Restored,
        Outcome::Due,
        Outcome::Expired,
        Outcome::BandsChanged,
        Outcome::Unreadable,
    ];
    let labels: std::collections::BTreeSet<_> = all.iter().map(|o| o.label()).collect();
    assert_eq!(labels.len(), all.len());
    assert_eq!(configmap_name("dc-1"), "gpufed-verdicts-dc-1");
}
