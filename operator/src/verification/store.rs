//! What the verifier keeps in the hub per provider — pinned node keys
//! ([`super::pins`]), verdict records ([`super::verdicts`]), the outcome ledger
//! ([`super::outcomes`]) — as ConfigMaps in the operator's namespace, each owned by its
//! GpuProvider so that it goes with it.
//!
//! Garbage collection is not instant: a provider deleted and created again under the same
//! name may find the old one's ConfigMaps still there. They are another provider's, so
//! they read as absent, and the first write takes them over for the new owner (were the
//! old owner reference left, the collector would delete what the new one saved). A
//! ConfigMap of that name owned by anything else is never overwritten.

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};

/// Why a kept ConfigMap could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hub's API failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The name is taken by a ConfigMap of another owner.
    #[error("ConfigMap {name} belongs to {owner}, not to this provider: left alone")]
    Foreign {
        /// The ConfigMap.
        name: String,
        /// Its controller, as `Kind/name`.
        owner: String,
    },
    /// A shard the map's first ConfigMap names is missing or another owner's: its
    /// entries cannot be read, and a map read without them would pin its nodes again at
    /// first sight and treat their failed verdicts as new ([`super::shards::read`]).
    #[error(
        "ConfigMap {shard}, shard {index} of the {count} that ConfigMap {base} names, is missing or not this provider's: the map is not read without it (docs/trust.md, \"A shard missing\")"
    )]
    Shard {
        /// The map's first ConfigMap.
        base: String,
        /// The shard's ConfigMap.
        shard: String,
        /// Its index.
        index: usize,
        /// How many shards the first names.
        count: usize,
    },
    /// The map's first ConfigMap is missing while a shard of it is still this provider's
    /// (owned by its UID): the first was deleted, and read as none the map would pin every
    /// node again at first sight ([`super::shards::read`]).
    #[error(
        "ConfigMap {base}, the first of a map kept in shards, is missing while its shard {shard} is this provider's: the map is not read as empty (docs/trust.md, \"A shard missing\")"
    )]
    Headless {
        /// The map's first ConfigMap, missing.
        base: String,
        /// The shard of it found.
        shard: String,
    },
    /// The leadership term the save began in ended before it wrote ConfigMap `name`
    /// (a successor may be saving): the save stopped there.
    #[error("leadership lapsed: the save stopped before changing ConfigMap {name}")]
    Lapsed {
        /// The ConfigMap it would have written or deleted next.
        name: String,
    },
}

impl Error {
    /// The ConfigMap whose absence (or other owner) makes a kept map unreadable until it is
    /// restored ([`Error::Shard`], [`Error::Headless`]); `None` for a failure that passes
    /// by itself (the API, a lapsed term) or a write's.
    pub fn unreadable(&self) -> Option<&str> {
        match self {
            Self::Shard { shard, .. } => Some(shard),
            Self::Headless { base, .. } => Some(base),
            Self::Kube(_) | Self::Foreign { .. } | Self::Lapsed { .. } => None,
        }
    }
}

/// The data of `provider`'s ConfigMap `name`, `None` when it does not exist or belongs to
/// another provider of that name.
pub async fn read(
    hub: &Client,
    namespace: &str,
    name: &str,
    provider: &GpuProvider,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let cm = api.get_opt(name).await?;
    Ok(cm
        .filter(|cm| !stale(cm, provider.uid().as_deref()))
        .map(|cm| cm.data.unwrap_or_default()))
}

/// Sets the data of `provider`'s ConfigMap `name`: created, or the version read replaced
/// (a conflict is an error the next round retries), owned by `provider`. The operator's
/// Role may get, create and update ConfigMaps in its namespace, not patch them.
pub async fn write(
    hub: &Client,
    namespace: &str,
    name: &str,
    provider: &GpuProvider,
    data: BTreeMap<String, String>,
) -> Result<(), Error> {
    write_annotated(hub, namespace, name, provider, data, |_| BTreeMap::new()).await
}

/// Like [`write`], setting the annotations `annotate` returns too (others are kept);
/// nothing is written when the ConfigMap already says all that. `annotate` is given the
/// ConfigMap as read before (`None` when it did not exist): what it returns is computed
/// from the very version that is replaced, a conflict otherwise.
pub async fn write_annotated(
    hub: &Client,
    namespace: &str,
    name: &str,
    provider: &GpuProvider,
    data: BTreeMap<String, String>,
    annotate: impl FnOnce(Option<&ConfigMap>) -> BTreeMap<String, String>,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let existing = api.get_opt(name).await?;
    let annotations = annotate(existing.as_ref());
    if let Some(owner) = existing.as_ref().and_then(|cm| foreign(cm, &provider.name_any())) {
        return Err(Error::Foreign {
            name: name.to_owned(),
            owner,
        });
    }
    let mut cm = existing.unwrap_or_else(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    crate::FIELD_MANAGER.to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    });
    let owners = provider.controller_owner_ref(&()).map(|o| vec![o]);
    let unchanged = cm.metadata.resource_version.is_some()
        && cm.metadata.owner_references == owners
        && same_data(&cm, &data)
        && annotations
            .iter()
            .all(|(k, v)| cm.annotations().get(k) == Some(v));
    if unchanged {
        return Ok(());
    }
    cm.metadata.owner_references = owners;
    cm.data = Some(data);
    cm.annotations_mut().extend(annotations);
    if cm.metadata.resource_version.is_some() {
        api.replace(name, &PostParams::default(), &cm).await?;
    } else {
        api.create(&PostParams::default(), &cm).await?;
    }
    Ok(())
}

/// Whether `cm` holds `data`. The API server leaves an empty `data` out of what it
/// returns: `None` holds an empty map (else an empty map would be written at every save).
pub fn same_data(cm: &ConfigMap, data: &BTreeMap<String, String>) -> bool {
    cm.data.as_ref().map_or(data.is_empty(), |d| d == data)
}

/// `cm`'s controller as `Kind/name` when it is not a GpuProvider named `provider` (of
/// any UID): a ConfigMap that is not ours to take over.
pub fn foreign(cm: &ConfigMap, provider: &str) -> Option<String> {
    let owner = controller(cm)?;
    (owner.kind != "GpuProvider" || owner.name != provider).then(|| format!("{}/{}", owner.kind, owner.name))
}

fn controller(cm: &ConfigMap) -> Option<&OwnerReference> {
    cm.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether `cm` is owned by another object than the provider of UID `uid`: a provider of
/// the same name deleted before. A ConfigMap without a controller reference (made by
/// hand, or before references were set) is taken as the provider's.
pub fn stale(cm: &ConfigMap, uid: Option<&str>) -> bool {
    match (controller(cm), uid) {
        (Some(o), Some(uid)) => o.uid != uid,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by(uid: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                owner_references: uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "gpufed.io/v1alpha1".into(),
                        kind: "GpuProvider".into(),
                        name: "p".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn another_providers_configmap_is_stale() {
        assert!(stale(&owned_by(Some("old")), Some("new")));
        assert!(!stale(&owned_by(Some("new")), Some("new")));
        assert!(!stale(&owned_by(None), Some("new")), "unowned: taken as ours");
        assert!(!stale(&owned_by(Some("old")), None), "no UID to compare");
    }

    #[test]
    fn only_a_provider_of_the_same_name_may_take_one_over() {
        assert_eq!(foreign(&owned_by(Some("old")), "p"), None, "p's, of an older UID");
        assert_eq!(foreign(&owned_by(None), "p"), None);
        assert_eq!(
            foreign(&owned_by(Some("old")), "p.1").as_deref(),
            Some("GpuProvider/p"),
            "another provider's"
        );
        let mut other = owned_by(Some("x"));
        if let Some(o) = other
            .metadata
            .owner_references
            .as_mut()
            .and_then(|o| o.first_mut())
        {
            o.kind = "Deployment".into();
        }
        assert_eq!(foreign(&other, "p").as_deref(), Some("Deployment/p"));
    }
}
