//! Node keys pinned at first sight (trust on first use), kept in the hub so that a new
//! leader, or a restarted operator, holds every node to the key it first signed with.
//!
//! A node whose report is later signed by another key is another machine claiming the
//! node's name (or a reinstalled node that lost `/var/lib/gpufed/node.key`): its GPUs stop
//! counting as verified at once, and its report problem says so. An administrator who
//! knows the node was reinstalled deletes its entry from the provider's ConfigMap
//! `gpufed-node-keys-<provider>` (docs/trust.md); the next report is pinned again.
//!
//! One ConfigMap per provider in the operator's namespace, owned by the GpuProvider (it
//! goes with it), data `<node>: <base64 ed25519 public key>`; more for a provider of
//! thousands of long node names ([`super::shards`]: a pin takes up to about 300 bytes,
//! a node's name up to 253 characters, and [`MAX_PINS`] of them did not fit one).

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use kube::{Client, ResourceExt};

/// ConfigMap name of a provider's pinned node keys.
pub fn configmap_name(provider: &str) -> String {
    super::shards::base("gpufed-node-keys-", provider)
}

/// A provider's pinned keys (`node → key`); none when the ConfigMap does not exist yet.
pub async fn load(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
) -> Result<BTreeMap<String, String>, super::store::Error> {
    let base = configmap_name(&provider.name_any());
    super::shards::read(hub, namespace, &base, provider).await
}

/// Writes `keys` as the provider's pinned keys, in shards of at most
/// [`super::shards::LIMIT`] bytes (a map saved before shards is their shard 0), while
/// `holds` (the leader's term).
pub async fn save(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
    keys: &BTreeMap<String, String>,
    holds: super::shards::Holds<'_>,
) -> Result<(), super::store::Error> {
    let base = configmap_name(&provider.name_any());
    super::shards::write(hub, namespace, &base, provider, keys, super::shards::LIMIT, holds).await
}

/// What this process knows of one provider's pins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pins {
    /// `node → key`.
    pub keys: BTreeMap<String, String>,
    /// Keys pinned since the last save.
    pub dirty: bool,
}

/// Most pins one provider keeps. Node names come and go (autoscaling, spot nodes); past
/// this, the pins of nodes the provider no longer lists are dropped ([`bound`]), so what
/// the hub keeps and rewrites per provider stays bounded: at most about 2.4 MB (253-
/// character names), in four shards.
pub const MAX_PINS: usize = 8192;

/// Keeps `pins` within [`MAX_PINS`] by dropping the pins of nodes not `present` (a node
/// that comes back is pinned again at first sight). `present`: the nodes listed, and
/// those the verifier still keeps while absent (their verdicts stand until they lapse, so
/// must the key they are held to). Returns how many were dropped.
pub fn bound(pins: &mut Pins, present: &std::collections::BTreeSet<&str>) -> usize {
    if pins.keys.len() <= MAX_PINS {
        return 0;
    }
    let before = pins.keys.len();
    pins.keys.retain(|node, _| present.contains(node.as_str()));
    let dropped = before - pins.keys.len();
    pins.dirty |= dropped > 0;
    dropped
}

/// The pinned key a report from `node` must carry, and what to do with a report signed by
/// `key` (pure): `Ok(true)` when it pins a new node, `Ok(false)` when it matches, `Err`
/// with the reason when it is signed by another key than the pinned one.
pub fn check(pins: &mut Pins, provider: &str, node: &str, key: &str) -> Result<bool, String> {
    match pins.keys.get(node) {
        Some(pinned) if pinned == key => Ok(false),
        Some(pinned) => Err(format!(
            "node key changed: reports must be signed by the key pinned at first sight ({pinned}), \
             this one is signed by {key}; if the node was reinstalled, delete its entry from \
             ConfigMap {} (or from the shard gpufed-<i>-{} holding it) and restart the \
             operator's leader to pin the new key (docs/trust.md)",
            configmap_name(provider),
            configmap_name(provider).trim_start_matches("gpufed-")
        )),
        None => {
            pins.keys.insert(node.to_owned(), key.to_owned());
            pins.dirty = true;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_key_is_pinned_then_held_and_another_refused() {
        let mut p = Pins::default();
        assert_eq!(check(&mut p, "dc", "n1", "key-a"), Ok(true));
        assert!(p.dirty);
        p.dirty = false;
        assert_eq!(check(&mut p, "dc", "n1", "key-a"), Ok(false));
        assert!(!p.dirty, "nothing new to save");
        let e = check(&mut p, "dc", "n1", "key-b").expect_err("another key is refused");
        assert!(
            e.contains("node key changed") && e.contains("key-a") && e.contains("key-b"),
            "{e}"
        );
        assert!(
            e.contains("gpufed-node-keys-dc"),
            "names the ConfigMap to edit: {e}"
        );
        assert_eq!(p.keys["n1"], "key-a", "a refused key never replaces the pin");
        assert_eq!(check(&mut p, "dc", "n2", "key-b"), Ok(true), "pins are per node");
    }

    #[test]
    fn the_most_pins_of_the_longest_names_fit_the_shards_they_are_saved_in() {
        let mut p = Pins::default();
        let key = "A".repeat(44); // base64 of an ed25519 key
        for i in 0..MAX_PINS {
            let node = format!("{i:05}{}", "n".repeat(248));
            check(&mut p, "dc", &node, &key).expect("a new node is pinned");
        }
        let bytes: usize = p.keys.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(bytes > 1024 * 1024, "more than one ConfigMap holds: {bytes}");
        let shards = crate::verification::shards::split(&p.keys, crate::verification::shards::LIMIT);
        assert!(shards.len() <= 4, "{}", shards.len());
        for s in &shards {
            let size: usize = s.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(size <= crate::verification::shards::LIMIT, "{size}");
        }
    }

    #[test]
    fn past_the_bound_the_pins_of_nodes_gone_are_dropped() {
        let mut p = Pins::default();
        for i in 0..MAX_PINS {
            check(&mut p, "dc", &format!("spot-{i}"), "k").expect("a new node is pinned");
        }
        p.dirty = false;
        let present: std::collections::BTreeSet<&str> = ["spot-1", "new-0"].into();
        assert_eq!(bound(&mut p, &present), 0, "within the bound nothing goes");
        check(&mut p, "dc", "new-0", "k").expect("a new node is pinned");
        assert_eq!(bound(&mut p, &present), MAX_PINS - 1);
        assert!(p.dirty);
        assert_eq!(p.keys.keys().collect::<Vec<_>>(), ["new-0", "spot-1"]);
    }
}
