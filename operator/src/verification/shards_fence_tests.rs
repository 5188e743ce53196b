//! A shard gone missing fails the read; a leader whose term lapsed stops saving before
//! it deletes what a successor's shard 0 names; an empty shard 0 as the API server
//! returns it (no `data`).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A fence that holds for the first `calls` checks only (a term that lapses mid-save).
fn lapsing_after(calls: usize) -> impl Fn() -> bool + Sync {
    let used = AtomicUsize::new(0);
    move || used.fetch_add(1, Ordering::SeqCst) < calls
}

/// What the server holds: each name with its resourceVersion.
fn versions(held: &fake::Held) -> Vec<(String, Option<String>)> {
    held.maps
        .lock()
        .unwrap()
        .iter()
        .map(|(n, cm)| (n.clone(), cm.metadata.resource_version.clone()))
        .collect()
}

#[tokio::test]
async fn a_shard_that_shard_0_names_missing_or_another_owners_fails_the_read() {
    let (hub, held) = fake::start().await;
    let p = provider();
    let pins = records(40, "key-a");
    write(&hub, NS, BASE, &p, &pins, SMALL, &|| true).await.unwrap();
    let count = count(&held.get(BASE).unwrap());
    assert!(count >= 4);
    // Missing: read without it, the map would pin its nodes again at first sight.
    let lost = held.maps.lock().unwrap().remove(&name(BASE, 2)).unwrap();
    let e = read(&hub, NS, BASE, &p).await.unwrap_err();
    assert!(
        matches!(&e, Error::Shard { shard, index: 2, .. } if *shard == name(BASE, 2)),
        "{e}"
    );
    assert!(e.to_string().contains("gpufed-2-verdicts-p"), "{e}");
    held.maps.lock().unwrap().insert(name(BASE, 2), lost);
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), pins);
    // Another provider's of the same name (deleted before).
    if let Some(o) = held
        .maps
        .lock()
        .unwrap()
        .get_mut(&name(BASE, 1))
        .and_then(|cm| cm.metadata.owner_references.as_mut())
        .and_then(|o| o.first_mut())
    {
        o.uid = "old".into();
    }
    assert!(matches!(
        read(&hub, NS, BASE, &p).await,
        Err(Error::Shard { index: 1, .. })
    ));
    // The repair docs/trust.md gives: the shard made again, empty and unowned. Its
    // entries are gone; the rest reads, and the next save writes it whole.
    held.maps.lock().unwrap().remove(&name(BASE, 1));
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), NS);
    let mut empty = ConfigMap::default();
    empty.metadata.name = Some(name(BASE, 1));
    api.create(&PostParams::default(), &empty).await.unwrap();
    let back = read(&hub, NS, BASE, &p).await.unwrap();
    assert!(!back.is_empty() && back.len() < pins.len() && within(&back, &pins));
    write(&hub, NS, BASE, &p, &pins, SMALL, &|| true).await.unwrap();
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), pins);
    // The old naming's too.
    old_write(&hub, &records(40, "old"), false).await;
    held.maps.lock().unwrap().remove(&old_name(3));
    assert!(matches!(
        read(&hub, NS, BASE, &p).await,
        Err(Error::Shard { index: 3, .. })
    ));
}

#[tokio::test]
async fn a_lapsed_leader_stops_before_deleting_the_shards_a_successors_shard_0_names() {
    let (hub, held) = fake::start().await;
    let p = provider();
    // The successor saved its map in several shards.
    let successors = records(40, "b");
    write(&hub, NS, BASE, &p, &successors, SMALL, &|| true)
        .await
        .unwrap();
    let count = count(&held.get(BASE).unwrap());
    assert!(count >= 4);
    let before = versions(&held);
    // A leader whose term lapsed before its save: nothing written.
    let e = write(&hub, NS, BASE, &p, &records(5, "a"), SMALL, &|| false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Lapsed { .. }), "{e}");
    assert_eq!(versions(&held), before, "nothing changed");
    // One whose term lapsed just after its shard 0: the shards it would delete stay.
    let e = write(&hub, NS, BASE, &p, &records(5, "a"), SMALL, &lapsing_after(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Lapsed { name: n } if *n == name(BASE, 1)),
        "{e}"
    );
    for i in 1..count {
        assert!(held.get(&name(BASE, i)).is_some(), "shard {i} deleted");
    }
}

#[tokio::test]
async fn a_lapsed_leader_leaves_the_old_named_shards_an_older_operator_wrote() {
    let (hub, held) = fake::start().await;
    let p = provider();
    old_write(&hub, &records(40, "old"), false).await;
    let old_count = count(&held.get(BASE).unwrap());
    assert!(old_count >= 4);
    let map = records(40, "new");
    let writes = split(&map, SMALL).len();
    let e = write(&hub, NS, BASE, &p, &map, SMALL, &lapsing_after(writes))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Lapsed { name: n } if *n == old_name(1)),
        "{e}"
    );
    for i in 1..old_count {
        assert!(held.get(&old_name(i)).is_some(), "old shard {i} deleted");
    }
    // Shard 0 still says they may remain, for the next save.
    assert_eq!(Header::of(&held.get(BASE).unwrap()).moved, old_count);
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), map);
}

#[tokio::test]
async fn an_empty_shard_0_clears_the_move_marker() {
    let (hub, held) = fake::start().await;
    let p = provider();
    old_write(&hub, &records(40, "old"), false).await;
    write(&hub, NS, BASE, &p, &BTreeMap::new(), SMALL, &|| true)
        .await
        .unwrap();
    let first = held.get(BASE).unwrap();
    assert_eq!(first.data, None, "the server keeps no empty data");
    let header = Header::of(&first);
    assert_eq!(
        (header.count, header.layout, header.moved),
        (1, Layout::Prefixed, 0)
    );
    assert_eq!(held.names(), [BASE]);
    assert!(read(&hub, NS, BASE, &p).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_empty_map_is_not_written_again() {
    let (hub, held) = fake::start().await;
    let p = provider();
    write(&hub, NS, BASE, &p, &BTreeMap::new(), SMALL, &|| true)
        .await
        .unwrap();
    let before = versions(&held);
    write(&hub, NS, BASE, &p, &BTreeMap::new(), SMALL, &|| true)
        .await
        .unwrap();
    assert_eq!(versions(&held), before);
}
