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
//! goes with it), data `<node>: <base64 ed25519 public key>`.

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use kube::{Client, ResourceExt};

/// ConfigMap name of a provider's pinned node keys.
pub fn configmap_name(provider: &str) -> String {
    format!("gpufed-node-keys-{provider}")
}

/// A provider's pinned keys (`node → key`); none when the ConfigMap does not exist yet.
pub async fn load(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
) -> Result<BTreeMap<String, String>, super::store::Error> {
    let name = configmap_name(&provider.name_any());
    Ok(super::store::read(hub, namespace, &name, provider)
        .await?
        .unwrap_or_default())
}

/// Writes `keys` as the provider's pinned keys.
pub async fn save(
    hub: &Client,
    namespace: &str,
    provider: &GpuProvider,
    keys: &BTreeMap<String, String>,
) -> Result<(), super::store::Error> {
    let name = configmap_name(&provider.name_any());
    super::store::write(hub, namespace, &name, provider, keys.clone()).await
}

/// What this process knows of one provider's pins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pins {
    /// `node → key`.
    pub keys: BTreeMap<String, String>,
    /// Keys pinned since the last save.
    pub dirty: bool,
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
             ConfigMap {} to pin the new key",
            configmap_name(provider)
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
}
