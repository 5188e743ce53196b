use super::*;

#[test]
fn after_an_outage_of_the_hub_the_grace_period_runs_from_this_process_s_first_failure() {
    use crate::fleet::Failing;
    // The heartbeat in status is 10 minutes old (the hub was down); grace 60 s. The first
    // failed probe of this process, at 1600, does not end the jobs there...
    let old = status(&provider(None), &Ok(view()), 1000, &crate::time::format(1000));
    let p = provider(Some(old));
    // Probed every 5 s with a 10 s member timeout: a cycle of 15 s.
    let seen = |first, last, probes| {
        Some(Failing {
            term: 1,
            first,
            last,
            probes,
            cycle: 15,
        })
    };
    assert!(heartbeat_lost(&p, 1600));
    assert!(!provider_lost(&p, seen(1600, 1600, 1), 1600));
    assert!(
        !provider_lost(&p, seen(1600, 1660, 13), 1660),
        "within the grace of the first failure"
    );
    // ...failing for longer than the grace period does.
    assert!(provider_lost(&p, seen(1600, 1660, 13), 1661));
    // Never failed here: not lost, however old the heartbeat.
    assert!(!provider_lost(&p, None, 5000));
    // A fresh heartbeat: not lost, however long the failures (another replica's probe).
    assert!(!provider_lost(&p, seen(800, 1000, 41), 1030));
}

#[test]
fn failover_does_not_wait_for_the_next_probe_nor_for_a_failed_reconcile_s_retry() {
    use crate::fleet::Failing;
    let old = status(&provider(None), &Ok(view()), 1000, &crate::time::format(1000));
    let p = provider(Some(old));
    let seen = |last, probes, cycle| {
        Some(Failing {
            term: 1,
            first: 1600,
            last,
            probes,
            cycle,
        })
    };
    // Grace 60 s, probes every 30 s (a 40 s cycle): failed at 1600, 1630 and 1660. At 1661
    // the provider has been seen failing for 61 s: lost now, not at the probe of 1690.
    assert!(provider_lost(&p, seen(1660, 3, 40), 1661));
    // Probes every 5 s until 1655, then the reconcile fails after probing (its status
    // write refused) and waits for its retry: lost at 1661 all the same.
    assert!(provider_lost(&p, seen(1655, 12, 15), 1661));
    // But a streak whose probes stopped long ago (the hub down) counts no further than a
    // cycle past its latest failed probe.
    assert!(!provider_lost(&p, seen(1630, 7, 15), 5000));
    assert!(provider_lost(&p, seen(1650, 11, 15), 5000));
}

#[tokio::test]
async fn a_single_failed_probe_from_before_an_outage_is_not_a_lost_provider() {
    // Grace 60 s. A blip at 1000 (one failed probe), then the hub is down (no probe runs)
    // for ten minutes and the Lease is taken again: term 2.
    let fleet = crate::fleet::Fleet::default();
    let ok = status(&provider(None), &Ok(view()), 990, &crate::time::format(990));
    let p = provider(Some(ok));
    fleet.mark_unreachable("a", 1, 1000, 15).await;
    let now = 1600;
    assert!(heartbeat_lost(&p, now));
    assert!(
        !provider_lost(&p, fleet.failing("a", 2).await, now),
        "a failure of an earlier term is no evidence in this one"
    );
    assert!(
        !provider_lost(&p, fleet.failing("a", 1).await, now),
        "even in the same term: one failed probe long ago is not a minute of failures"
    );
    // Probes of this term fail: lost only once they have failed for the grace period.
    fleet.mark_unreachable("a", 2, 1600, 15).await;
    fleet.mark_unreachable("a", 2, 1630, 15).await;
    assert!(!provider_lost(&p, fleet.failing("a", 2).await, 1630));
    fleet.mark_unreachable("a", 2, 1661, 15).await;
    assert!(provider_lost(&p, fleet.failing("a", 2).await, 1661));
    // Answered again: the streak is over.
    fleet.update("a", view()).await;
    assert_eq!(fleet.failing("a", 2).await, None);
}
