//! Shard 0 of a map kept in shards ([`super`]) is what makes the map: without it the map
//! reads as none. A save of a map with no shard 0 makes an empty one before it writes
//! the other shards ([`make`]), so a shard of the provider's without its shard 0 means
//! shard 0 was deleted, never a save that died half-way; [`super::read`] then fails
//! rather than read the map as none ([`orphan`]), which would pin every node again at
//! first sight.

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, ResourceExt};

use super::{Header, Holds, Layout, SHARDS, fence};
use crate::verification::store::{self, Error};

/// Shard 1 of the map kept as `base`, in this release's naming, when it is there and owned
/// by `provider`'s UID: every such map of two shards or more has one, and [`make`] wrote
/// its shard 0 before it. Another provider's (one deleted before) or an unowned ConfigMap
/// is none. The old naming's shard 1 (`<base>-shard-1`) is not looked at: an older release
/// wrote it before any shard 0, so without shard 0 it may be a first save that died
/// half-way (nothing saved: the map is truly empty) and reads as none, as it always did.
pub(super) async fn orphan(
    api: &Api<ConfigMap>,
    base: &str,
    provider: &GpuProvider,
) -> Result<Option<String>, Error> {
    let Some(uid) = provider.uid() else {
        return Ok(None);
    };
    for layout in [Layout::Prefixed] {
        let shard = layout.name(base, 1);
        let owned = api.get_opt(&shard).await?.is_some_and(|cm| {
            cm.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.kind == "GpuProvider" && o.uid == uid)
        });
        if owned {
            return Ok(Some(shard));
        }
    }
    Ok(None)
}

/// Makes shard 0 of the map kept as `base`, empty and naming no shard, when `provider`
/// has none (missing, or a provider's deleted before), before a save writes its shards:
/// shard 1 of `provider` without its shard 0 then means shard 0 was deleted, never a save
/// that died before writing shard 0 ([`super::read`] fails on the one, and could not tell the
/// other). Until the save writes shard 0, the map reads as empty, as it did.
pub(super) async fn make(
    hub: &Client,
    namespace: &str,
    base: &str,
    provider: &GpuProvider,
    holds: Holds<'_>,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let uid = provider.uid();
    if api
        .get_opt(base)
        .await?
        .is_some_and(|cm| !store::stale(&cm, uid.as_deref()))
    {
        return Ok(());
    }
    let alone = Header {
        count: 1,
        layout: Layout::Prefixed,
        moved: 0,
    };
    fence(holds, base)?;
    store::write_annotated(hub, namespace, base, provider, BTreeMap::new(), |_| {
        BTreeMap::from([(SHARDS.to_owned(), alone.value())])
    })
    .await
}
