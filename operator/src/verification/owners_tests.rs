//! A provider deleted and created again under its name starts afresh; one gone is
//! forgotten.

use super::*;

#[test]
fn a_provider_created_again_under_its_name_is_not_held_to_the_old_ones_keys() {
    let v = Verifier::new(cfg());
    assert!(!v.adopt("p", "uid-1"), "nothing known yet");
    v.load_pins("p", BTreeMap::new());
    v.load_outcomes("p", outcomes::Ledger::default());
    let t = verify_with(&v, 3, 1_000);
    assert_eq!(v.verdict("p", t).0.verified, 2);
    assert!(!v.adopt("p", "uid-1"), "the same provider keeps what is known");
    assert_eq!(v.verdict("p", t).0.verified, 2);

    // Deleted and created again: its nodes were reinstalled with new keys.
    assert!(v.adopt("p", "uid-2"));
    assert!(!v.pins_loaded("p"), "its own pins are read from the hub again");
    assert!(!v.outcomes_loaded("p"));
    assert_eq!(v.verdict("p", t).0.verified, 0, "the old verdicts do not count");
    v.load_pins("p", BTreeMap::new());
    let t = verify_with(&v, 9, t);
    let (verdict, problems) = v.verdict("p", t);
    assert_eq!(verdict.verified, 2, "key 9 pinned afresh: {problems:?}");
}

#[test]
fn providers_gone_are_forgotten_once_a_heartbeat() {
    let v = Verifier::new(cfg());
    v.adopt("p", "uid-p");
    v.adopt("q", "uid-q");
    v.load_pins("p", BTreeMap::new());
    v.load_pins("q", BTreeMap::new());
    let t = verify_gpus(&v, "q", &["GPU-9"], &[], 4, verify_with(&v, 3, 1_000));
    assert_eq!(v.verdict("q", t).0.verified, 1);
    // `q` is gone, `p` was created again under its name.
    let present = |p: &str, uid: &str| p == "p" && uid == "uid-p";
    assert_eq!(v.retain_providers(60_000, 15_000, present), ["q"]);
    assert!(!v.pins_loaded("q"));
    assert_eq!(v.verdict("q", t).0.verified, 0);
    assert!(v.pins_loaded("p"), "still there");
    assert_eq!(v.verdict("p", t).0.verified, 2);
    v.adopt("q", "uid-q2");
    assert!(
        v.retain_providers(70_000, 15_000, |_, _| false).is_empty(),
        "not again within the heartbeat"
    );
    assert_eq!(v.retain_providers(75_000, 15_000, present), ["q"]);
}
