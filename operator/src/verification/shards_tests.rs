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
fn no_shard_is_named_like_another_providers_map() {
    let prefixes = ["gpufed-verdicts-", "gpufed-outcomes-", "gpufed-node-keys-"];
    assert_ne!(
        name(&base("gpufed-verdicts-", "p"), 1),
        base("gpufed-verdicts-", "p-shard-1")
    );
    // Every provider name of up to four characters of `a1-.` (DNS subdomains), each
    // map's shards 0 to 12: all names distinct.
    let valid = |n: &str| {
        n.split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
    };
    let mut providers = vec![String::new()];
    let mut all = Vec::new();
    for _ in 0..4 {
        providers = providers
            .iter()
            .flat_map(|p| ["a", "1", "-", "."].map(|c| format!("{p}{c}")))
            .collect();
        all.extend(providers.iter().filter(|p| valid(p)).cloned());
    }
    all.extend(["p-shard-1", "p-shard-12", "p-1", "1-p", "p.shard-1"].map(String::from));
    let mut seen = std::collections::BTreeMap::new();
    for prefix in prefixes {
        for provider in &all {
            for i in 0..=12 {
                let n = name(&base(prefix, provider), i);
                if let Some(other) = seen.insert(n.clone(), (prefix, provider.clone(), i)) {
                    panic!("{n}: shard {i} of {prefix}{provider} and {other:?}");
                }
            }
        }
    }
}

/// Shard 0 saying `value` in [`SHARDS`].
fn first_saying(value: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.annotations = Some([(SHARDS.to_owned(), value.to_owned())].into());
    cm
}

#[test]
fn the_header_names_count_and_naming_and_older_operators_read_a_new_one_as_one_shard() {
    let header = |v: &str| Header::of(&first_saying(v));
    let (old, new) = (Layout::Suffixed, Layout::Prefixed);
    assert_eq!(Header::of(&ConfigMap::default()), Header::ALONE, "no annotation");
    let cases = [
        ("3", (3, old, 0)),
        ("p3", (3, new, 0)),
        ("p3/5", (3, new, 5)),
        ("p0", (1, new, 0)),
        ("p2000/9000", (1024, new, 1024)),
        ("many", (1, old, 0)),
        ("p", (1, old, 0)),
        ("p3/x", (1, old, 0)),
        ("", (1, old, 0)),
    ];
    for (value, (count, layout, moved)) in cases {
        let h = header(value);
        assert_eq!((h.count, h.layout, h.moved), (count, layout, moved), "{value:?}");
    }
    for value in ["3", "p3", "p3/5"] {
        assert_eq!(header(value).value(), value, "written as read");
    }
    // What an operator of the old naming makes of a new header: no number, one shard —
    // shard 0's entries, never a shard of another naming.
    for value in ["p3", "p3/5"] {
        assert!(value.parse::<usize>().is_err());
    }
    assert_eq!(old.name("gpufed-verdicts-p", 0), "gpufed-verdicts-p");
    assert_eq!(old.name("gpufed-verdicts-p", 2), "gpufed-verdicts-p-shard-2");
    assert_eq!(new.name("gpufed-verdicts-p", 2), "gpufed-2-verdicts-p");
}

#[test]
fn names_and_counts() {
    assert_eq!(name("gpufed-verdicts-p", 0), "gpufed-verdicts-p");
    assert_eq!(name("gpufed-verdicts-p", 2), "gpufed-2-verdicts-p");
    let mut cm = ConfigMap::default();
    assert_eq!(count(&cm), 1, "a map kept before shards");
    cm.metadata.annotations = Some([(SHARDS.to_owned(), "3".to_owned())].into());
    assert_eq!(count(&cm), 3);
    cm.metadata.annotations = Some([(SHARDS.to_owned(), "many".to_owned())].into());
    assert_eq!(count(&cm), 1, "unreadable: the first only");
    assert_eq!(count(&first_saying("p4/2")), 4);
    cm.metadata.annotations = Some([(SHARDS.to_owned(), "0".to_owned())].into());
    assert_eq!(count(&cm), 1);
}

#[path = "shards_versions_tests.rs"]
mod versions;

#[path = "shards_fake.rs"]
mod fake;
