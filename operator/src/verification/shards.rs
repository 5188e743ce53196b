//! A kept map too large for one ConfigMap (the API server stores at most 1 MiB per
//! object) split over several: the verdict records of a provider with thousands of nodes
//! (about 1.1 KB per 8-GPU node).
//!
//! Shard 0 is the ConfigMap the map always had (`<base>`), so a map saved before shards
//! existed reads as one shard; shard `i > 0` is `<base>-shard-<i>`. Shard 0 names their
//! number in annotation `gpufed.io/shards`. Keys go to shards in order, each filled up to
//! [`LIMIT`] bytes, so a changed entry rewrites only its shard (an unchanged shard is not
//! written again). Shard 0 is written last: until it is, readers keep the old number of
//! shards. Shards past the new number are deleted after. Every shard is owned by the
//! provider and taken over or left alone as [`super::store`] says.

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use sha2::Digest;

use super::store::{self, Error};

/// Annotation of shard 0: how many shards the map has.
pub const SHARDS: &str = "gpufed.io/shards";
/// Bytes of keys and values per shard at most (the rest of the 1 MiB is left to metadata
/// and to the API server's own encoding).
pub const LIMIT: usize = 768 * 1024;

/// Longest name of an object (a DNS subdomain, as the API server checks ConfigMap names).
const MAX_NAME: usize = 253;
/// Room a base name leaves for a shard's suffix (`-shard-` and up to five digits).
const SHARD_SUFFIX: usize = "-shard-".len() + 5;

/// Base name of a map kept per provider: `<prefix><provider>`, or, when that would not
/// leave room for a shard's suffix within the 253 characters a ConfigMap name may have
/// (a provider's own name may have 253), the provider's first characters and a hash of
/// its whole name, so that two long names sharing a head still name two maps.
pub fn base(prefix: &str, provider: &str) -> String {
    let plain = format!("{prefix}{provider}");
    if plain.len() <= MAX_NAME - SHARD_SUFFIX {
        return plain;
    }
    let digest = sha2::Sha256::digest(provider.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let room = MAX_NAME - SHARD_SUFFIX - prefix.len() - hash.len() - 1;
    // A provider's name is a DNS subdomain (ASCII), so a byte count is a char count. Its
    // head must still end a label with a letter or digit before the `-<hash>`.
    let head: String = provider.chars().take(room).collect();
    format!("{prefix}{}-{hash}", head.trim_end_matches(['-', '.']))
}

/// ConfigMap name of shard `i` of the map kept as `base`.
pub fn name(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_owned()
    } else {
        format!("{base}-shard-{i}")
    }
}

/// Splits `map` in key order into shards of at most `limit` bytes (an entry larger than
/// `limit` alone in its shard); an empty map is one empty shard.
pub fn split(map: &BTreeMap<String, String>, limit: usize) -> Vec<BTreeMap<String, String>> {
    let mut shards = vec![BTreeMap::new()];
    let mut size = 0;
    for (k, v) in map {
        let entry = k.len() + v.len();
        if size + entry > limit && size > 0 {
            shards.push(BTreeMap::new());
            size = 0;
        }
        size += entry;
        if let Some(last) = shards.last_mut() {
            last.insert(k.clone(), v.clone());
        }
    }
    shards
}

/// How many shards shard 0 says there are (1 without the annotation, at most 1024).
pub fn count(cm: &ConfigMap) -> usize {
    cm.annotations()
        .get(SHARDS)
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(1, |n| n.clamp(1, 1024))
}

/// The whole map kept as `base` for `provider`; empty when none is kept. A shard that
/// is missing or another owner's reads as empty (its entries are simply not kept).
pub async fn read(
    hub: &Client,
    namespace: &str,
    base: &str,
    provider: &GpuProvider,
) -> Result<BTreeMap<String, String>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let Some(first) = api.get_opt(base).await? else {
        return Ok(BTreeMap::new());
    };
    if store::stale(&first, provider.uid().as_deref()) {
        return Ok(BTreeMap::new());
    }
    let n = count(&first);
    let mut map = first.data.unwrap_or_default();
    for i in 1..n {
        let shard = store::read(hub, namespace, &name(base, i), provider).await?;
        for (k, v) in shard.into_iter().flatten() {
            // Shard 0 was written last: it wins over a shard of an older layout.
            map.entry(k).or_insert(v);
        }
    }
    Ok(map)
}

/// Keeps `map` as `base` for `provider`, in shards of at most `limit` bytes.
pub async fn write(
    hub: &Client,
    namespace: &str,
    base: &str,
    provider: &GpuProvider,
    map: &BTreeMap<String, String>,
    limit: usize,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let shards = split(map, limit);
    let n = shards.len();
    // Shard 0 goes last; as it was before says how many shards there were.
    let mut before = 1;
    for (i, shard) in shards.into_iter().enumerate().rev() {
        let annotations = (i == 0).then(|| BTreeMap::from([(SHARDS.to_owned(), n.to_string())]));
        let old =
            store::write_annotated(hub, namespace, &name(base, i), provider, shard, annotations).await?;
        if i == 0 {
            before = old
                .filter(|cm| !store::stale(cm, provider.uid().as_deref()))
                .map_or(1, |cm| count(&cm));
        }
    }
    for i in n..before {
        let shard = name(base, i);
        let Some(cm) = api.get_opt(&shard).await? else {
            continue;
        };
        if store::stale(&cm, provider.uid().as_deref()) || store::foreign(&cm, &provider.name_any()).is_some()
        {
            continue;
        }
        // Fenced by UID: a ConfigMap made again under the name meanwhile is not ours.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: cm.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&shard, &params).await {
            Ok(_) => {}
            // Gone already, or made again meanwhile (the UID precondition failed).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: usize, value: usize) -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("node-{i:04}"), "x".repeat(value)))
            .collect()
    }

    #[test]
    fn shards_hold_the_map_in_key_order_within_the_limit() {
        let m = map(100, 90); // 99 bytes an entry
        let shards = split(&m, 1_000);
        assert_eq!(shards.len(), 10);
        assert!(shards.iter().all(|s| s.len() == 10));
        let keys: Vec<&String> = shards.iter().flat_map(|s| s.keys()).collect();
        assert_eq!(keys, m.keys().collect::<Vec<_>>(), "every key once, in order");
        assert_eq!(split(&m, 1_050).len(), 10, "a part entry does not fit");
        assert_eq!(split(&m, 1_000_000).len(), 1);
    }

    #[test]
    fn an_empty_map_is_one_shard_and_a_huge_entry_one_alone() {
        assert_eq!(split(&BTreeMap::new(), 10), vec![BTreeMap::new()]);
        let mut m = map(3, 10);
        m.insert("node-0001".into(), "y".repeat(100));
        let shards = split(&m, 50);
        assert_eq!(shards.iter().map(BTreeMap::len).collect::<Vec<_>>(), [1, 1, 1]);
    }

    #[test]
    fn a_provider_of_the_longest_name_still_names_valid_distinct_shards() {
        assert_eq!(
            base("gpufed-verdicts-", "dc-1"),
            "gpufed-verdicts-dc-1",
            "short names unchanged"
        );
        let dns = |n: &str| {
            n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        };
        // 253 characters, and a head that ends on a dot where it is cut.
        let long = format!("{}.{}", "a".repeat(220), "b".repeat(32));
        let other = format!("{}.{}", "a".repeat(220), "c".repeat(32));
        for prefix in ["gpufed-verdicts-", "gpufed-outcomes-", "gpufed-node-keys-"] {
            let (a, b) = (base(prefix, &long), base(prefix, &other));
            assert_ne!(a, b, "a hash of the whole name tells them apart");
            assert!(a.starts_with(prefix));
            for i in [0, 1, 99_999] {
                assert!(dns(&name(&a, i)), "{} is no valid name", name(&a, i));
            }
        }
        for cut in 200..252 {
            let n = format!("{}.{}", "x".repeat(cut), "y".repeat(252 - cut));
            assert!(dns(&name(&base("gpufed-verdicts-", &n), 12)), "cut at {cut}");
        }
    }

    #[test]
    fn names_and_counts() {
        assert_eq!(name("gpufed-verdicts-p", 0), "gpufed-verdicts-p");
        assert_eq!(name("gpufed-verdicts-p", 2), "gpufed-verdicts-p-shard-2");
        let mut cm = ConfigMap::default();
        assert_eq!(count(&cm), 1, "a map kept before shards");
        cm.metadata.annotations = Some([(SHARDS.to_owned(), "3".to_owned())].into());
        assert_eq!(count(&cm), 3);
        cm.metadata.annotations = Some([(SHARDS.to_owned(), "many".to_owned())].into());
        assert_eq!(count(&cm), 1, "unreadable: the first only");
        cm.metadata.annotations = Some([(SHARDS.to_owned(), "0".to_owned())].into());
        assert_eq!(count(&cm), 1);
    }
}
