//! Shard 0 gone while the provider's shards are there fails the read (this release's naming),
//! and only then: another owner's shard 1 is none of this map's, and a save that died
//! before writing shard 0 leaves a map that reads as empty, not one that cannot be read.

use super::*;

/// Sets the controller of ConfigMap `name` held by the server to `kind`/`owner` of `uid`.
fn own(held: &fake::Held, name: &str, kind: &str, owner: &str, uid: &str) {
    let mut maps = held.maps.lock().unwrap();
    let o = maps
        .get_mut(name)
        .and_then(|cm| cm.metadata.owner_references.as_mut())
        .and_then(|o| o.first_mut())
        .unwrap();
    (o.kind, o.name, o.uid) = (kind.into(), owner.into(), uid.into());
}

#[tokio::test]
async fn shard_0_deleted_while_its_shards_are_the_providers_fails_the_read() {
    let (hub, held) = fake::start().await;
    let p = provider();
    let pins = records(40, "key-a");
    write(&hub, NS, BASE, &p, &pins, SMALL, &|| true).await.unwrap();
    held.maps.lock().unwrap().remove(BASE);
    // Read as none, every node would be pinned again at first sight.
    let e = read(&hub, NS, BASE, &p).await.unwrap_err();
    assert!(
        matches!(&e, Error::Headless { base, shard } if base == BASE && *shard == name(BASE, 1)),
        "{e}"
    );
    assert_eq!(e.unreadable(), Some(BASE));
    assert!(e.to_string().contains("docs/trust.md"), "{e}");
    // Shard 1 of another provider of the name (deleted before), or of none: no map of this
    // provider's is there.
    own(&held, &name(BASE, 1), "GpuProvider", "p", "old");
    assert!(read(&hub, NS, BASE, &p).await.unwrap().is_empty());
    held.maps
        .lock()
        .unwrap()
        .get_mut(&name(BASE, 1))
        .unwrap()
        .metadata
        .owner_references = None;
    assert!(read(&hub, NS, BASE, &p).await.unwrap().is_empty());
    // The old naming's shard 1 without shard 0 may be an older release's first save that
    // died before shard 0 (it wrote shard 0 last, nothing saved): the map reads as empty,
    // as it always did, rather than wait for a repair by hand.
    let (hub, held) = fake::start().await;
    old_write(&hub, &records(40, "old"), false).await;
    held.maps.lock().unwrap().remove(BASE);
    assert!(read(&hub, NS, BASE, &p).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_repair_makes_shard_0_again_naming_the_shards_left() {
    let (hub, held) = fake::start().await;
    let p = provider();
    let pins = records(40, "key-a");
    write(&hub, NS, BASE, &p, &pins, SMALL, &|| true).await.unwrap();
    let n = count(&held.get(BASE).unwrap());
    held.maps.lock().unwrap().remove(BASE);
    assert!(read(&hub, NS, BASE, &p).await.is_err());
    // docs/trust.md: `kubectl create configmap <base>`, annotated `gpufed.io/shards=p<n>`.
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), NS);
    let mut again = ConfigMap::default();
    again.metadata.name = Some(BASE.to_owned());
    again.metadata.annotations = Some([(SHARDS.to_owned(), format!("p{n}"))].into());
    api.create(&PostParams::default(), &again).await.unwrap();
    // Shard 0's entries are gone; the rest reads, and the next save writes it whole.
    let back = read(&hub, NS, BASE, &p).await.unwrap();
    assert!(!back.is_empty() && back.len() < pins.len() && within(&back, &pins));
    write(&hub, NS, BASE, &p, &pins, SMALL, &|| true).await.unwrap();
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), pins);
}

#[tokio::test]
async fn a_first_save_that_dies_before_shard_0_leaves_an_empty_map() {
    let (hub, held) = fake::start().await;
    let p = provider();
    let pins = records(40, "key-a");
    let n = split(&pins, SMALL).len();
    assert!(n >= 4);
    // Its term lapses once shards 1 to n - 1 are written, before shard 0.
    let written = held.clone();
    let lapsing = move || !(1..n).all(|i| written.get(&name(BASE, i)).is_some());
    let e = write(&hub, NS, BASE, &p, &pins, SMALL, &lapsing)
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Lapsed { name } if name == BASE), "{e}");
    assert!(held.get(&name(BASE, 1)).is_some());
    // Nothing was kept yet: the map is empty, not unreadable.
    assert!(read(&hub, NS, BASE, &p).await.unwrap().is_empty());
    write(&hub, NS, BASE, &p, &pins, SMALL, &|| true).await.unwrap();
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), pins);
    // A map of one shard needs no empty shard 0 first.
    let (hub, held) = fake::start().await;
    write(&hub, NS, BASE, &p, &records(2, "a"), SMALL, &|| true)
        .await
        .unwrap();
    let version = held.get(BASE).unwrap().metadata.resource_version;
    assert_eq!(version.as_deref(), Some("1"), "created once");
}
