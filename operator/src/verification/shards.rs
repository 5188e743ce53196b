//! A kept map too large for one ConfigMap (the API server stores at most 1 MiB per
//! object) split over several: the verdict records of a provider with thousands of nodes
//! (about 1.1 KB per 8-GPU node), the pinned keys of one with thousands of long names.
//!
//! Shard 0 is the ConfigMap the map always had (`<base>`), so a map saved before shards
//! existed reads as one shard; shard `i > 0` of `gpufed-<rest>` is `gpufed-<i>-<rest>`
//! ([`name`]). Every base is `gpufed-`, a word, `-` and the provider's name ([`base`]): a
//! letter follows `gpufed-` in every base and a digit in every shard, so no shard of one
//! provider is named like another provider's map. (Shards were `<base>-shard-<i>` before:
//! that is also the base of provider `<provider>-shard-<i>`, and one of the two could not
//! save.)
//!
//! Shard 0 says how many shards there are and how they are named in annotation
//! `gpufed.io/shards` ([`Header`]): `p<n>` for this naming, a bare `<n>` for the old one.
//! The naming is in the number on purpose. Older operators (a rollback, or the old leader
//! of a rolling upgrade) read `p<n>` as no number, so as one shard: they see shard 0's
//! entries only, never a shard of the other naming; and when they save they set a bare
//! number with their shards under the old names, which this version then reads as such
//! (were the naming a separate annotation, an old writer kept it, and the old shards'
//! newer entries were read from the other naming's stale ones). A map of the old naming
//! is moved to the new names when next saved; `p<n>/<k>` says its old shards 1 to `k-1`
//! may still be there (a save that died, or failed to delete them): a later save deletes
//! them, then writes `p<n>`.
//!
//! Keys go to shards in order, each filled up to [`LIMIT`] bytes, so a changed entry
//! rewrites only its shard (an unchanged shard is not written again). Shard 0 is written
//! last: until it is, readers keep the old shards (a map that has none gets an empty one
//! first: [`first`]). Shards no longer named are deleted after. A save stops once the
//! leader's term lapses (checked before each write and delete: a request already sent
//! still lands), and a shard shard 0 names that is not there, or shard 0 gone while its
//! shards are there, fails the read rather than leaving entries out ([`read`]). Every
//! shard is owned by the provider and taken over or left alone as [`super::store`] says.

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use sha2::Digest;

use super::store::{self, Error};

/// Annotation of shard 0: how many shards the map has, and how they are named
/// ([`Header`]).
pub const SHARDS: &str = "gpufed.io/shards";
/// Most shards a map has (a larger number read is taken as this).
const MAX_SHARDS: usize = 1024;
/// Bytes of keys and values per shard at most (the rest of the 1 MiB is left to metadata
/// and to the API server's own encoding).
pub const LIMIT: usize = 768 * 1024;

/// Longest name of an object (a DNS subdomain, as the API server checks ConfigMap names).
const MAX_NAME: usize = 253;
/// Room a base name leaves for a shard's name (up to `-shard-` and five digits: the old
/// naming's, more than [`name`]'s `-` and five digits).
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

/// ConfigMap name of shard `i` of the map kept as `base` (`gpufed-…`, from [`base`]):
/// `base` itself for shard 0, else `gpufed-<i>-<rest of base>`.
pub fn name(base: &str, i: usize) -> String {
    if i == 0 {
        return base.to_owned();
    }
    let rest = base.strip_prefix("gpufed-").unwrap_or(base);
    format!("gpufed-{i}-{rest}")
}

/// How a map's shards are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// [`name`].
    Prefixed,
    /// `<base>-shard-<i>`: a map saved by an older operator.
    Suffixed,
}

impl Layout {
    /// ConfigMap name of shard `i` of the map kept as `base`, in this naming.
    pub fn name(self, base: &str, i: usize) -> String {
        match self {
            Self::Prefixed => name(base, i),
            Self::Suffixed if i == 0 => base.to_owned(),
            Self::Suffixed => format!("{base}-shard-{i}"),
        }
    }
}

/// What shard 0 says of its map ([`SHARDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// How many shards (at least 1).
    pub count: usize,
    /// How they are named.
    pub layout: Layout,
    /// Shards 1 to `moved - 1` of the old naming may remain from a move ([`Layout::Prefixed`]
    /// only; 0 or 1: none).
    pub moved: usize,
}

impl Header {
    /// A map saved before shards: shard 0 alone.
    const ALONE: Self = Self {
        count: 1,
        layout: Layout::Suffixed,
        moved: 0,
    };

    /// What shard 0 `cm` says; an unreadable value reads as shard 0 alone (as older
    /// operators read it).
    pub fn of(cm: &ConfigMap) -> Self {
        let Some(value) = cm.annotations().get(SHARDS) else {
            return Self::ALONE;
        };
        let number = |n: &str| n.parse::<usize>().ok().map(|n| n.clamp(1, MAX_SHARDS));
        let Some(prefixed) = value.strip_prefix('p') else {
            return number(value).map_or(Self::ALONE, |count| Self {
                count,
                layout: Layout::Suffixed,
                moved: 0,
            });
        };
        let (count, moved) = prefixed.split_once('/').unwrap_or((prefixed, "0"));
        match (number(count), moved.parse::<usize>()) {
            (Some(count), Ok(moved)) => Self {
                count,
                layout: Layout::Prefixed,
                moved: moved.min(MAX_SHARDS),
            },
            _ => Self::ALONE,
        }
    }

    /// The annotation's value.
    pub fn value(&self) -> String {
        match (self.layout, self.moved) {
            (Layout::Suffixed, _) => self.count.to_string(),
            (Layout::Prefixed, 0 | 1) => format!("p{}", self.count),
            (Layout::Prefixed, moved) => format!("p{}/{moved}", self.count),
        }
    }

    /// Old-named shards 1 to this `- 1` may exist and are named by no one once shard 0
    /// says [`Layout::Prefixed`].
    fn old_names(&self) -> usize {
        match self.layout {
            Layout::Suffixed => self.count,
            Layout::Prefixed => self.moved,
        }
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
    Header::of(cm).count
}

/// The whole map kept as `base` for `provider`; empty when none is kept (or shard 0 is
/// another provider's: a provider deleted before). A shard shard 0 names that is missing
/// or another owner's is an error ([`Error::Shard`]), not an empty shard: read without
/// its entries, the map would pin its nodes again at first sight and take their failed
/// verdicts for none. So is shard 0 missing while shard 1 of the current naming is this
/// provider's ([`Error::Headless`]): shard 0 was deleted, since a save makes shard 0
/// before the shards of a map that has none ([`write`]) (the old naming's, written before
/// its shard 0 by older releases, reads as none). The caller waits and reads again
/// (a save under way, which replaces shard 0 before deleting the shards it no longer
/// names); one lost for good is repaired by hand (docs/trust.md).
pub async fn read(
    hub: &Client,
    namespace: &str,
    base: &str,
    provider: &GpuProvider,
) -> Result<BTreeMap<String, String>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let Some(first) = api.get_opt(base).await? else {
        return match first::orphan(&api, base, provider).await? {
            Some(shard) => Err(Error::Headless {
                base: base.to_owned(),
                shard,
            }),
            None => Ok(BTreeMap::new()),
        };
    };
    if store::stale(&first, provider.uid().as_deref()) {
        return Ok(BTreeMap::new());
    }
    let header = Header::of(&first);
    let mut map = first.data.unwrap_or_default();
    for i in 1..header.count {
        let shard = header.layout.name(base, i);
        let Some(data) = store::read(hub, namespace, &shard, provider).await? else {
            return Err(Error::Shard {
                base: base.to_owned(),
                shard,
                index: i,
                count: header.count,
            });
        };
        for (k, v) in data {
            // Shard 0 was written last: it wins over a shard of an older layout.
            map.entry(k).or_insert(v);
        }
    }
    Ok(map)
}

/// Whether the leadership term a save began in still holds (`crate::lease::Fence`).
pub type Holds<'a> = &'a (dyn Fn() -> bool + Sync);

/// [`Error::Lapsed`] unless `holds`: checked before each request that changes the map,
/// `name` the ConfigMap it changes.
fn fence(holds: Holds<'_>, name: &str) -> Result<(), Error> {
    if holds() {
        Ok(())
    } else {
        Err(Error::Lapsed {
            name: name.to_owned(),
        })
    }
}

/// Keeps `map` as `base` for `provider`, in shards of at most `limit` bytes, while
/// `holds`. A leader whose term lapsed stops before its next write or delete: it would
/// otherwise write over a successor's shard 0 and delete the shards that one named (their
/// entries gone from the hub), or delete by their old names the shards an older
/// operator just wrote, which its shard 0 names. That narrows the race, it does not close
/// it: `holds` is checked before a request is sent, and one in flight when the term
/// lapses still lands (a shard it deleted then fails the successor's next read).
pub async fn write(
    hub: &Client,
    namespace: &str,
    base: &str,
    provider: &GpuProvider,
    map: &BTreeMap<String, String>,
    limit: usize,
    holds: Holds<'_>,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let uid = provider.uid();
    let mut shards = split(map, limit);
    let n = shards.len();
    if n > 1 {
        first::make(hub, namespace, base, provider, holds).await?;
    }
    // Shard 0 goes last.
    for (i, shard) in shards.iter().enumerate().skip(1).rev() {
        let shard_name = name(base, i);
        fence(holds, &shard_name)?;
        store::write_annotated(hub, namespace, &shard_name, provider, shard.clone(), |_| {
            BTreeMap::new()
        })
        .await?;
    }
    // What shard 0 said before (as replaced, not as read earlier) says which shards are
    // no longer named: past the new number, or all of the old naming.
    let first = std::mem::take(&mut shards[0]);
    let mut before = Header::ALONE;
    let mut now = Header {
        count: n,
        layout: Layout::Prefixed,
        moved: 0,
    };
    fence(holds, base)?;
    store::write_annotated(hub, namespace, base, provider, first.clone(), |old| {
        before = old
            .filter(|cm| !store::stale(cm, uid.as_deref()))
            .map_or(Header::ALONE, Header::of);
        now.moved = before.old_names();
        BTreeMap::from([(SHARDS.to_owned(), now.value())])
    })
    .await?;
    if before.layout == Layout::Prefixed {
        for i in n..before.count {
            let shard = name(base, i);
            fence(holds, &shard)?;
            delete(&api, &shard, provider).await?;
        }
    }
    if now.moved <= 1 {
        return Ok(());
    }
    for i in 1..now.moved {
        let old = Layout::Suffixed.name(base, i);
        fence(holds, &old)?;
        if let Err(e) = delete(&api, &old, provider).await {
            // Shard 0 says they may remain: the next save tries again.
            tracing::warn!(configmap = %old, error = %e, "cannot delete a shard of the old naming; the next save retries");
            return Ok(());
        }
    }
    // None left: shard 0 says so, unless another writer replaced it meanwhile (it then
    // says what that writer knew).
    let Some(mut cm) = api.get_opt(base).await? else {
        return Ok(());
    };
    if Header::of(&cm) != now || !store::same_data(&cm, &first) || store::stale(&cm, uid.as_deref()) {
        return Ok(());
    }
    now.moved = 0;
    cm.annotations_mut().insert(SHARDS.to_owned(), now.value());
    fence(holds, base)?;
    match api.replace(base, &PostParams::default(), &cm).await {
        Ok(_) => Ok(()),
        // Replaced meanwhile: the next save tries again (nothing is left to delete then).
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `provider`'s shard `shard`, if there is one (a ConfigMap of that name of
/// another owner is left alone).
async fn delete(api: &Api<ConfigMap>, shard: &str, provider: &GpuProvider) -> Result<(), Error> {
    let Some(cm) = api.get_opt(shard).await? else {
        return Ok(());
    };
    if store::stale(&cm, provider.uid().as_deref()) || store::foreign(&cm, &provider.name_any()).is_some() {
        return Ok(());
    }
    // Fenced by UID: a ConfigMap made again under the name meanwhile is not ours.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cm.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(shard, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or made again meanwhile (the UID precondition failed).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[path = "shards_first.rs"]
mod first;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "shards_tests.rs"]
mod tests;
