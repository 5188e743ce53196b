//! Namespace quotas: a cap on GPUs and a cap on spend per hour, held across one round;
//! a job its quota holds waits with `Explanation::Quota`, reserves nothing and evicts
//! nothing, while the rest of the queue goes on.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_placement::{Config, Decisions, Explanation, Job, Micros, Quota, QuotaExceeded, Snapshot, place};

use common::{GIB, UNIT, check, check_quotas, job, provider, running_on_a};

fn quota(gpus: Option<u32>, spend: Option<Micros>) -> Quota {
    Quota {
        gpus,
        spend_per_hour: spend,
        ..Quota::default()
    }
}

fn in_ns(mut j: Job, ns: &str, submit: u64) -> Job {
    j.namespace = ns.into();
    j.submit_time = submit;
    j
}

fn placed<'d>(d: &'d Decisions, job: &str) -> Option<&'d gpufed_placement::Placement> {
    d.placements.iter().find(|p| p.job == job)
}

fn why<'d>(d: &'d Decisions, job: &str) -> &'d Explanation {
    &d.unplaced.iter().find(|u| u.job == job).unwrap().explanation
}

#[test]
fn the_gpu_cap_counts_running_work_and_this_rounds_placements() {
    let snap = Snapshot {
        providers: vec![provider("a", "A100", 80, 4, 8, UNIT)],
        jobs: vec![
            in_ns(job("a", 4, 1), "team", 1),
            in_ns(job("b", 2, 1), "team", 2),
            in_ns(job("c", 8, 1), "other", 3),
        ],
        quotas: BTreeMap::from([(
            "team".to_owned(),
            Quota {
                used_gpus: 4,
                ..quota(Some(8), None)
            },
        )]),
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    check(&snap, &d).unwrap();
    assert!(placed(&d, "a").is_some(), "4 held + 4 = the cap: {d:?}");
    assert_eq!(
        why(&d, "b"),
        &Explanation::Quota(QuotaExceeded::Gpus {
            limit: 8,
            used: 8,
            need: 2
        })
    );
    assert_eq!(
        why(&d, "b").to_string(),
        "quota exceeded: the namespace holds 8 of its 8 GPUs, this job needs 2"
    );
    assert!(placed(&d, "c").is_some(), "another namespace is not held");
}

#[test]
fn a_held_gang_reserves_nothing_and_smaller_jobs_go_on() {
    let snap = Snapshot {
        providers: vec![provider("a", "A100", 80, 4, 8, UNIT)],
        jobs: vec![
            in_ns(job("big", 8, 2), "team", 1),
            in_ns(job("small", 4, 1), "team", 2),
        ],
        quotas: BTreeMap::from([("team".to_owned(), quota(Some(8), None))]),
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert!(matches!(
        why(&d, "big"),
        Explanation::Quota(QuotaExceeded::Gpus { need: 16, .. })
    ));
    assert!(placed(&d, "small").is_some());
    assert!(d.reservations.is_empty(), "{:?}", d.reservations);
}

/// Provider `a`, two full 8-GPU nodes: `team/low` (8 GPUs, priority 0) on n0, `rival/x`
/// on n1; team's quota of 8 GPUs is used up. `team/urgent` (priority 9, 8 GPUs) waits.
fn at_quota(preempt: bool, budget: Option<&str>) -> Snapshot {
    let mut p = provider("a", "A100", 80, 2, 8, UNIT);
    p.nodes.iter_mut().for_each(|n| n.free.clear());
    let mut urgent = in_ns(job("urgent", 8, 1), "team", 2);
    urgent.priority = 9;
    urgent.preempt = preempt;
    Snapshot {
        providers: vec![p],
        running: vec![
            running_on_a("team/low", "team", "n0", 0..8, budget),
            running_on_a("rival/x", "rival", "n1", 0..8, None),
        ],
        jobs: vec![urgent],
        quotas: BTreeMap::from([(
            "team".to_owned(),
            Quota {
                used_gpus: 8,
                ..quota(Some(8), None)
            },
        )]),
        budgets: budget.map(|b| (b.to_owned(), 1)).into_iter().collect(),
        ..Snapshot::default()
    }
}

fn preempting() -> Config {
    Config {
        preemption: true,
        // Even where any namespace's work may be evicted, only the job's own makes room
        // in its quota.
        preempt_across_namespaces: true,
        ..Config::default()
    }
}

#[test]
fn a_job_at_its_quota_evicts_its_own_namespaces_lower_priority_work_only() {
    let snap = at_quota(true, None);
    let d = place(&snap, &preempting()).unwrap();
    check(&snap, &d).unwrap();
    let p = placed(&d, "urgent").expect("placed by eviction");
    assert_eq!(p.evicts, vec!["team/low".to_owned()]);
    assert_eq!(d.evictions.len(), 1, "{d:?}");
    assert!(
        p.workers.iter().all(|w| w.node == "n0"),
        "in the room it made: {p:?}"
    );
}

#[test]
fn a_job_at_its_quota_that_may_not_preempt_or_only_through_a_budget_evicts_nothing() {
    for snap in [at_quota(false, None), at_quota(true, Some("team/llm"))] {
        let d = place(&snap, &preempting()).unwrap();
        assert!(d.evictions.is_empty() && d.placements.is_empty(), "{d:?}");
        assert!(matches!(
            why(&d, "urgent"),
            Explanation::Quota(QuotaExceeded::Gpus {
                limit: 8,
                used: 8,
                need: 8
            })
        ));
    }
    // Work of equal priority is never evicted either.
    let mut snap = at_quota(true, None);
    snap.running[0].priority = 9;
    let d = place(&snap, &preempting()).unwrap();
    assert!(d.evictions.is_empty(), "{d:?}");
}

/// Providers `cheap` (ask 1.00) and `dear` (ask 3.00), both roomy.
fn two_prices() -> Vec<gpufed_placement::Provider> {
    vec![
        provider("cheap", "A100", 80, 4, 8, UNIT),
        provider("dear", "A100", 80, 4, 8, 3 * UNIT),
    ]
}

#[test]
fn the_spending_cap_steers_a_job_to_what_the_namespace_can_afford() {
    let mut j = in_ns(job("j", 4, 1), "team", 1);
    j.preferred = vec!["dear".into()];
    let mut snap = Snapshot {
        providers: two_prices(),
        jobs: vec![j],
        ..Snapshot::default()
    };
    let free = place(&snap, &Config::default()).unwrap();
    assert_eq!(
        placed(&free, "j").unwrap().provider,
        "dear",
        "preferred without a cap"
    );
    // 10.00/h, 4.00/h spent: 6.00/h left for 4 GPUs, at most 1.50 per GPU-hour.
    snap.quotas = BTreeMap::from([(
        "team".to_owned(),
        Quota {
            used_spend_per_hour: 4 * UNIT,
            ..quota(None, Some(10 * UNIT))
        },
    )]);
    let d = place(&snap, &Config::default()).unwrap();
    let p = placed(&d, "j").unwrap();
    assert_eq!(p.provider, "cheap");
    assert!(p.price * 4 <= 6 * UNIT, "{p:?}");
}

#[test]
fn a_job_only_the_spending_cap_holds_is_told_what_its_best_fit_would_add() {
    let mut j = in_ns(job("j", 4, 1), "team", 1);
    j.providers = vec!["dear".into()];
    let mut snap = Snapshot {
        providers: two_prices(),
        jobs: vec![j],
        ..Snapshot::default()
    };
    let unbounded = place(&snap, &Config::default()).unwrap();
    let would_add = placed(&unbounded, "j").unwrap().price * 4;
    snap.quotas = BTreeMap::from([("team".to_owned(), quota(None, Some(10 * UNIT)))]);
    let d = place(&snap, &Config::default()).unwrap();
    assert_eq!(
        why(&d, "j"),
        &Explanation::Quota(QuotaExceeded::Spend {
            limit: 10 * UNIT,
            used: 0,
            need: Some(would_add)
        })
    );
    assert!(
        why(&d, "j").to_string().starts_with(
            "quota exceeded: the namespace spends 0.00 of its 10.00 per hour, this job's best fit would add"
        ),
        "{}",
        why(&d, "j")
    );
}

#[test]
fn a_job_that_fits_nowhere_anyway_is_not_blamed_on_its_quota() {
    let mut j = in_ns(job("j", 4, 1), "team", 1);
    j.min_vram_mib = 141 * GIB;
    let snap = Snapshot {
        providers: two_prices(),
        jobs: vec![j],
        quotas: BTreeMap::from([("team".to_owned(), quota(Some(64), Some(5 * UNIT)))]),
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    let e = why(&d, "j");
    assert!(matches!(e, Explanation::NoFit { .. }), "{e:?}");
    assert!(e.to_string().contains("lack 141 GiB VRAM"), "{e}");
}

#[test]
fn a_spent_quota_holds_every_job_of_its_namespace() {
    let snap = Snapshot {
        providers: two_prices(),
        jobs: vec![in_ns(job("j", 1, 1), "team", 1)],
        quotas: BTreeMap::from([(
            "team".to_owned(),
            Quota {
                used_spend_per_hour: 10 * UNIT,
                ..quota(None, Some(10 * UNIT))
            },
        )]),
        ..Snapshot::default()
    };
    let d = place(&snap, &Config::default()).unwrap();
    assert_eq!(
        why(&d, "j").to_string(),
        "quota exceeded: the namespace spends 10.00 of its 10.00 per hour"
    );
}

/// Many jobs of three namespaces, two of them capped: whatever the engine places, no
/// namespace ends above its caps, and every job held by a quota was held rightly.
#[test]
fn no_round_takes_a_namespace_past_its_caps() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut refused, mut evicted) = (0, 0);
    for round in 0..40 {
        let caps = [
            ("a", Some(12), Some(20 * UNIT)),
            ("b", Some(6), None),
            ("c", None, None),
        ];
        let jobs: Vec<Job> = (0..30)
            .map(|i| {
                let ns = caps[usize::try_from(next(3)).unwrap()].0;
                let g = u8::try_from(1 + next(4)).unwrap();
                let w = u16::try_from(1 + next(2)).unwrap();
                let mut j = in_ns(job(&format!("{ns}-{i}"), g, w), ns, i);
                j.priority = i32::try_from(next(3)).unwrap();
                j.preempt = next(2) == 1;
                j
            })
            .collect();
        // `a` runs 8 GPUs at 1.00 on cheap's n0, `b` 4 at 3.00 on dear's n0 (priority 0).
        let mut providers = two_prices();
        providers[0].nodes[0].free.clear();
        providers[1].nodes[0].free.retain(|&g| g >= 4);
        let mut run_a = running_on_a("a/run", "a", "n0", 0..8, None);
        run_a.provider = "cheap".into();
        let mut run_b = running_on_a("b/run", "b", "n0", 0..4, None);
        run_b.provider = "dear".into();
        let used = |ns: &str| match ns {
            "a" => (8, 8 * UNIT),
            "b" => (4, 12 * UNIT),
            _ => (0, 0),
        };
        let snap = Snapshot {
            providers,
            running: vec![run_a, run_b],
            jobs,
            quotas: caps
                .iter()
                .filter(|c| c.1.is_some() || c.2.is_some())
                .map(|&(ns, gpus, spend)| {
                    let q = Quota {
                        used_gpus: used(ns).0,
                        used_spend_per_hour: used(ns).1,
                        ..quota(gpus, spend)
                    };
                    (ns.to_owned(), q)
                })
                .collect(),
            ..Snapshot::default()
        };
        let cfg = Config {
            preemption: true,
            ..Config::default()
        };
        let d = place(&snap, &cfg).unwrap();
        check(&snap, &d).unwrap();
        check_quotas(&snap, &d).unwrap();
        evicted += d.evictions.len();
        refused += d
            .unplaced
            .iter()
            .filter(|u| matches!(u.explanation, Explanation::Quota(_)))
            .count();
        for (ns, gpus, spend) in caps {
            let mine: Vec<_> = d.placements.iter().filter(|p| p.job.starts_with(ns)).collect();
            let held: u64 = mine
                .iter()
                .map(|p| p.workers.iter().map(|w| w.gpus.len() as u64).sum::<u64>())
                .sum();
            let cost: u64 = mine
                .iter()
                .map(|p| p.price * p.workers.iter().map(|w| w.gpus.len() as u64).sum::<u64>())
                .sum();
            // Once its evicted work has stopped, the namespace holds at most its cap; its
            // spend counts the evicted work until then, so it stays below the cap at once.
            let freed: u64 = d
                .evictions
                .iter()
                .filter(|e| e.job.starts_with(&format!("{ns}/")))
                .map(|_| u64::from(used(ns).0))
                .sum();
            let (used_gpus, used_spend) = used(ns);
            assert!(
                gpus.is_none_or(|c| u64::from(used_gpus) + held - freed <= u64::from(c)),
                "round {round}: {ns} holds {used_gpus} + {held} - {freed}"
            );
            assert!(
                spend.is_none_or(|c| used_spend + cost <= c),
                "round {round}: {ns} spends {used_spend} + {cost}"
            );
            if ns == "c" {
                assert!(
                    !d.unplaced
                        .iter()
                        .any(|u| matches!(u.explanation, Explanation::Quota(_)) && u.job.starts_with('c'))
                );
            }
        }
    }
    assert!(refused > 40, "the caps were exercised: {refused} refusals");
    assert!(evicted > 0, "preemption was exercised");
}
