//! A map saved and read by this version and by an operator of the old shard naming (a
//! rollback, a rolling upgrade's old leader), on an in-memory API server.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};

use super::fake::{self, NS};
use super::*;

const BASE: &str = "gpufed-verdicts-p";
/// Bytes a shard: records of 100 bytes make about 10 a shard.
const SMALL: usize = 1_000;

fn provider() -> GpuProvider {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
        "metadata": {"name": "p", "uid": "u"},
        "spec": {"kubeconfigSecretRef": {"namespace": "elsewhere", "name": "kc", "key": "kubeconfig"},
                 "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                 "prices": [{"model": "H100", "pricePerGpuHour": "2"}]}
    }))
    .unwrap()
}

/// `n` records, each saying `what`.
fn records(n: usize, what: &str) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("node-{i:04}"), format!("{what}{}", "r".repeat(90))))
        .collect()
}

/// The old operator's shard name.
fn old_name(i: usize) -> String {
    if i == 0 {
        BASE.to_owned()
    } else {
        format!("{BASE}-shard-{i}")
    }
}

/// The old operator's number of shards: a bare number, else one.
fn old_count(cm: &ConfigMap) -> usize {
    cm.annotations()
        .get(SHARDS)
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(1, |n| n.clamp(1, 1024))
}

/// How the old operator read a map: shard 0, then `<base>-shard-<i>` up to its count.
async fn old_read(hub: &Client) -> BTreeMap<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), NS);
    let Some(first) = api.get_opt(BASE).await.unwrap() else {
        return BTreeMap::new();
    };
    let mut map = first.data.clone().unwrap_or_default();
    for i in 1..old_count(&first) {
        let shard = api.get_opt(&old_name(i)).await.unwrap();
        for (k, v) in shard.and_then(|cm| cm.data).into_iter().flatten() {
            map.entry(k).or_insert(v);
        }
    }
    map
}

/// How the old operator saved a map: its shards under the old names, then shard 0 with
/// annotation `gpufed.io/shards` set to a bare number (the others kept), then the shards
/// past it deleted; `pins_only`: as it saved pins, shard 0's data alone.
async fn old_write(hub: &Client, map: &BTreeMap<String, String>, pins_only: bool) {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), NS);
    let shards = if pins_only {
        vec![map.clone()]
    } else {
        split(map, SMALL)
    };
    let n = shards.len();
    let mut before = 1;
    for (i, shard) in shards.into_iter().enumerate().rev() {
        let existing = api.get_opt(&old_name(i)).await.unwrap();
        if i == 0 {
            before = existing.as_ref().map_or(1, old_count);
        }
        let mut cm = existing.unwrap_or_else(|| ConfigMap {
            metadata: ObjectMeta {
                name: Some(old_name(i)),
                ..Default::default()
            },
            ..Default::default()
        });
        cm.metadata.owner_references = provider().controller_owner_ref(&()).map(|o| vec![o]);
        cm.data = Some(shard);
        if i == 0 && !pins_only {
            cm.annotations_mut().insert(SHARDS.to_owned(), n.to_string());
        }
        if cm.metadata.resource_version.is_some() {
            api.replace(&old_name(i), &PostParams::default(), &cm)
                .await
                .unwrap();
        } else {
            api.create(&PostParams::default(), &cm).await.unwrap();
        }
    }
    for i in n..before {
        let _ = api.delete(&old_name(i), &DeleteParams::default()).await;
    }
}

/// Whether every entry `read` holds is `map`'s: nothing stale.
fn within(read: &BTreeMap<String, String>, map: &BTreeMap<String, String>) -> bool {
    read.iter().all(|(k, v)| map.get(k) == Some(v))
}

#[path = "shards_fence_tests.rs"]
mod fence;

#[path = "shards_first_tests.rs"]
mod first;

#[tokio::test]
async fn a_rollback_and_back_reads_what_the_old_operator_saved_last() {
    let (hub, held) = fake::start().await;
    let p = provider();
    let newer = records(40, "pass");
    write(&hub, NS, BASE, &p, &newer, SMALL, &|| true).await.unwrap();
    assert!(count(&held.get(BASE).unwrap()) >= 4);
    // The old operator reads shard 0's entries only: none of another naming.
    let seen = old_read(&hub).await;
    assert!(!seen.is_empty() && seen.len() < newer.len());
    assert!(within(&seen, &newer));
    // It saves a failure of a node past shard 0, and one node fewer.
    let mut failed = newer.clone();
    failed.insert("node-0039".into(), "failed".into());
    failed.remove("node-0038");
    old_write(&hub, &failed, false).await;
    // This version reads what it saved, not the shards it saved itself before.
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), failed);
    // Its next save moves the map to the new names and deletes the old ones.
    write(&hub, NS, BASE, &p, &failed, SMALL, &|| true).await.unwrap();
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), failed);
    let names = held.names();
    assert!(names.iter().all(|n| !n.contains("-shard-")), "{names:?}");
    assert_eq!(Header::of(&held.get(BASE).unwrap()).moved, 0);
}

#[tokio::test]
async fn old_named_shards_left_by_a_save_that_died_are_deleted_by_a_later_one() {
    let (hub, held) = fake::start().await;
    let p = provider();
    old_write(&hub, &records(40, "old"), false).await;
    let old_shards = count(&held.get(BASE).unwrap());
    assert!(old_shards >= 4);
    // This version moves the map; it dies before deleting the old shards.
    held.fail_deletes.store(true, Ordering::SeqCst);
    let moved = records(40, "new");
    write(&hub, NS, BASE, &p, &moved, SMALL, &|| true).await.unwrap();
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), moved);
    assert!(held.get(&old_name(1)).is_some(), "left");
    // An old operator reads none of them meanwhile.
    assert!(within(&old_read(&hub).await, &moved));
    assert_eq!(Header::of(&held.get(BASE).unwrap()).moved, old_shards);
    // A later save deletes them, and shard 0 says none is left.
    held.fail_deletes.store(false, Ordering::SeqCst);
    let later = records(30, "later");
    write(&hub, NS, BASE, &p, &later, SMALL, &|| true).await.unwrap();
    assert_eq!(read(&hub, NS, BASE, &p).await.unwrap(), later);
    let names = held.names();
    assert!(names.iter().all(|n| !n.contains("-shard-")), "{names:?}");
    let header = Header::of(&held.get(BASE).unwrap());
    assert_eq!((header.layout, header.moved), (Layout::Prefixed, 0));
    assert_eq!(names.len(), header.count, "{names:?}");
}

#[tokio::test]
async fn pins_an_old_operator_saved_in_shard_0_win_over_the_shards_it_did_not_see() {
    let (hub, _held) = fake::start().await;
    let p = provider();
    let pins = records(40, "key-a");
    write(&hub, NS, BASE, &p, &pins, SMALL, &|| true).await.unwrap();
    // The old operator saved pins in one ConfigMap: what it read (shard 0), and a node
    // past it pinned again with another key, as it never saw that node's pin.
    let mut seen = old_read(&hub).await;
    seen.insert("node-0039".into(), "key-b".into());
    old_write(&hub, &seen, true).await;
    let back = read(&hub, NS, BASE, &p).await.unwrap();
    assert_eq!(back.get("node-0039").map(String::as_str), Some("key-b"));
    assert_eq!(
        back.len(),
        pins.len(),
        "the pins of the shards it did not see stay"
    );
}
