//! The settlement journal in the hub API server, as ConfigMaps in the operator's namespace.
//!
//! - `gpufed-journal`: the header (batches with their transaction intents, metering
//!   positions, settled totals) and the names of the record chunks, in order;
//! - `gpufed-journal-<hash>`: record chunks, **named by the hash of their content**;
//! - the same for *state parts*: the positions and settled totals, moved out of a header
//!   that grew past [`super::store_parts::INLINE_STATE_BYTES`].
//!
//! A save writes new chunks first (an unchanged chunk keeps its name and is not rewritten),
//! then replaces the header with the resourceVersion it last read, then deletes chunks
//! that are no longer referenced. A crash at any point leaves the old header pointing at
//! chunks that still exist, so the journal is always loadable; the resourceVersion
//! precondition fences a deposed leader (its header write gets 409 and it stops settling).

use std::collections::{BTreeMap, BTreeSet};

use gpufed_chain::{ChainError, JournalStore};
use gpufed_settlement::Journal;
use gpufed_settlement::chunks::{JournalHeader, RecordChunk};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store_parts::{self, StatePart};

/// Name of the header ConfigMap.
pub const HEADER: &str = "gpufed-journal";
/// Records per chunk: ≤ 640 KiB worst case (1280-byte records), under ConfigMap's 1 MiB.
pub const CHUNK_RECORDS: usize = 500;
const KEY: &str = "journal.json";
/// Header annotations recording the settlement mint and its decimals: amounts in the
/// journal are base units of that mint, and a later term (maybe started while the RPC
/// node is down) must meter in the same units without asking the chain.
pub const MINT_ANNOTATION: &str = "gpufed.io/settlement-mint";
/// See [`MINT_ANNOTATION`].
pub const DECIMALS_ANNOTATION: &str = "gpufed.io/settlement-mint-decimals";

/// The header as written while the state fits it (and by earlier releases).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeaderDoc {
    header: JournalHeader,
    chunks: Vec<String>,
}

/// The header of a journal whose state went to parts ([`StatePart`], in order). Its
/// header field is named otherwise on purpose: an earlier release (a rollback, an old
/// replica leading during an upgrade) fails to read it and pauses settlement, where
/// reading a header without positions and settled totals would meter every live attempt
/// again from its start.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartedDoc {
    header_without_state: JournalHeader,
    chunks: Vec<String>,
    state: Vec<String>,
}

/// Which header a ConfigMap holds. Read first, then the header is parsed as that type
/// from the text: not an untagged enum, whose buffering cannot read the batches' integer
/// map keys from JSON's string keys.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    header_without_state: Option<serde::de::IgnoredAny>,
}

/// Label selecting the journal's ConfigMaps other than the header.
const PARTS_SELECTOR: &str = "gpufed.io/journal in (chunk,state)";
/// Saves between two sweeps of orphaned ConfigMaps (one at the first save of a term too).
const SWEEP_EVERY_SAVES: u64 = 1000;

/// The journal's ConfigMaps.
pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    resource_version: Option<String>,
    chunks: BTreeSet<String>,
    /// Mint and decimals written on the header (see [`MINT_ANNOTATION`]).
    mint: Option<(String, u8)>,
    /// Saves that wrote the header (metrics and tests).
    pub saves: u64,
}

fn store_err(what: &str, e: impl std::fmt::Display) -> ChainError {
    ChainError::Store(format!("{what}: {e}"))
}

fn config_map(name: &str, role: &str, json: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".to_string(), "gpufed".to_string()),
                ("gpufed.io/journal".to_string(), role.to_string()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), json)])),
        ..Default::default()
    }
}

fn payload<T: for<'de> Deserialize<'de>>(cm: &ConfigMap) -> Result<T, ChainError> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .ok_or_else(|| store_err(&name, format!("no {KEY}")))?;
    serde_json::from_str(text).map_err(|e| store_err(&name, e))
}

impl ConfigMapStore {
    /// A store in `namespace` of the hub.
    pub fn new(hub: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(hub, namespace),
            resource_version: None,
            chunks: BTreeSet::new(),
            mint: None,
            saves: 0,
        }
    }

    /// Records `mint` and its `decimals` on the header at every save.
    pub fn with_mint(mut self, mint: &str, decimals: u8) -> Self {
        self.mint = Some((mint.to_string(), decimals));
        self
    }

    /// The decimals recorded on the header for `mint` by an earlier save (`None`: no
    /// journal yet, none recorded, or recorded for another mint).
    pub async fn recorded_decimals(&self, mint: &str) -> Result<Option<u8>, ChainError> {
        let header = self
            .api
            .get_opt(HEADER)
            .await
            .map_err(|e| store_err("reading journal", e))?;
        let annotations = header.as_ref().map(|cm| cm.annotations());
        Ok(recorded(annotations, mint))
    }

    fn chunk_name(json: &str) -> String {
        let digest = Sha256::digest(json.as_bytes());
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        format!("{HEADER}-{hex}")
    }
}

/// The decimals in `annotations` if they were recorded for `mint`.
fn recorded(annotations: Option<&BTreeMap<String, String>>, mint: &str) -> Option<u8> {
    let a = annotations?;
    if a.get(MINT_ANNOTATION).map(String::as_str) != Some(mint) {
        return None;
    }
    a.get(DECIMALS_ANNOTATION)?.parse().ok()
}

impl JournalStore for ConfigMapStore {
    async fn load(&mut self) -> Result<Option<Journal>, ChainError> {
        let Some(cm) = self
            .api
            .get_opt(HEADER)
            .await
            .map_err(|e| store_err("reading journal", e))?
        else {
            self.resource_version = None;
            return Ok(None);
        };
        let (mut header, names, state) = if payload::<Probe>(&cm)?.header_without_state.is_some() {
            let d: PartedDoc = payload(&cm)?;
            (d.header_without_state, d.chunks, d.state)
        } else {
            let d: HeaderDoc = payload(&cm)?;
            (d.header, d.chunks, Vec::new())
        };
        let mut chunks: Vec<RecordChunk> = Vec::with_capacity(names.len());
        for name in &names {
            let c = self.api.get(name).await.map_err(|e| store_err(name, e))?;
            chunks.push(payload(&c)?);
        }
        let mut parts: Vec<StatePart> = Vec::with_capacity(state.len());
        for name in &state {
            let c = self.api.get(name).await.map_err(|e| store_err(name, e))?;
            parts.push(payload(&c)?);
        }
        store_parts::merge(&mut header, parts);
        let journal = Journal::from_chunks(header, chunks).map_err(|e| store_err("journal", e))?;
        self.resource_version = cm.metadata.resource_version;
        self.chunks = names.into_iter().chain(state).collect();
        Ok(Some(journal))
    }

    async fn save(&mut self, journal: &Journal) -> Result<(), ChainError> {
        let (mut header, chunks) = journal.to_chunks(CHUNK_RECORDS);
        let parts = store_parts::split(&mut header);
        let mut names = Vec::with_capacity(chunks.len());
        for c in &chunks {
            names.push(self.put_part(c, "chunk").await?);
        }
        let mut state = Vec::with_capacity(parts.len());
        for p in &parts {
            state.push(self.put_part(p, "state").await?);
        }
        let json = if state.is_empty() {
            serde_json::to_string(&HeaderDoc {
                header,
                chunks: names.clone(),
            })
        } else {
            serde_json::to_string(&PartedDoc {
                header_without_state: header,
                chunks: names.clone(),
                state: state.clone(),
            })
        }
        .map_err(|e| store_err("encoding header", e))?;
        let mut cm = config_map(HEADER, "header", json);
        if let Some((mint, decimals)) = &self.mint {
            cm.metadata.annotations = Some(BTreeMap::from([
                (MINT_ANNOTATION.to_string(), mint.clone()),
                (DECIMALS_ANNOTATION.to_string(), decimals.to_string()),
            ]));
        }
        let written = match &self.resource_version {
            None => self.api.create(&PostParams::default(), &cm).await,
            Some(rv) => {
                cm.metadata.resource_version = Some(rv.clone());
                self.api.replace(HEADER, &PostParams::default(), &cm).await
            }
        };
        let written = match written {
            Ok(w) => w,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Err(ChainError::Store(format!(
                    "journal header changed by another writer (fenced: {})",
                    e.message
                )));
            }
            Err(e) => return Err(store_err("writing journal header", e)),
        };
        self.resource_version = written.metadata.resource_version;
        self.saves += 1;
        let keep: BTreeSet<String> = names.into_iter().chain(state).collect();
        for stale in self.chunks.difference(&keep) {
            // Best effort: one left behind is an orphan, deleted by a later sweep.
            let _ = self.api.delete(stale, &DeleteParams::default()).await;
        }
        self.chunks = keep;
        // Only a writer sweeps (its first save of a term, then now and then): readers of
        // the journal (`kubectl gpufed bill --verify`) delete nothing.
        if self.saves == 1 || self.saves.is_multiple_of(SWEEP_EVERY_SAVES) {
            self.sweep().await;
        }
        Ok(())
    }
}

impl ConfigMapStore {
    /// Creates the ConfigMap of a chunk or state part unless it exists (named by the hash
    /// of its content: the same name is the same content); returns its name.
    async fn put_part<T: Serialize>(&self, part: &T, role: &str) -> Result<String, ChainError> {
        let json = serde_json::to_string(part).map_err(|e| store_err("encoding journal part", e))?;
        let name = Self::chunk_name(&json);
        if !self.chunks.contains(&name) {
            match self
                .api
                .create(&PostParams::default(), &config_map(&name, role, json))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {} // same content, same name
                Err(e) => return Err(store_err(&name, e)),
            }
        }
        Ok(name)
    }

    /// Deletes the journal's ConfigMaps the header does not reference, once old enough
    /// ([`store_parts::orphans`]): chunks of saves whose header write failed (a deposed
    /// leader's, an error) and deletes that failed would otherwise pile up in etcd.
    /// Best effort, logged.
    async fn sweep(&self) {
        let lp = ListParams::default().labels(PARTS_SELECTOR);
        let listed = match self.api.list_metadata(&lp).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the journal's chunks; orphans stay until the next sweep");
                return;
            }
        };
        let listed: Vec<(String, i64)> = listed
            .items
            .iter()
            .map(|m| {
                let created = m
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_second());
                (m.name_any(), created)
            })
            .collect();
        for name in store_parts::orphans(&listed, &self.chunks, crate::time::now()) {
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(configmap = %name, "orphaned journal chunk deleted"),
                Err(e) => {
                    tracing::warn!(configmap = %name, error = %e, "cannot delete an orphaned journal chunk")
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_parted_header_is_unreadable_as_a_whole_one_and_both_load() {
        let header: JournalHeader = serde_json::from_value(serde_json::json!({
            "batches": {}, "watermarks": {}, "nextSeq": 3, "nextBatch": 1,
            "chunkCount": 0, "recordCount": 0
        }))
        .unwrap();
        let parted = serde_json::to_string(&PartedDoc {
            header_without_state: header.clone(),
            chunks: vec![],
            state: vec!["gpufed-journal-aa".into()],
        })
        .unwrap();
        // What an earlier release reads: it must refuse, not meter everything again.
        assert!(serde_json::from_str::<HeaderDoc>(&parted).is_err());
        let probe = |text: &str| {
            serde_json::from_str::<Probe>(text)
                .unwrap()
                .header_without_state
                .is_some()
        };
        assert!(probe(&parted));
        assert_eq!(serde_json::from_str::<PartedDoc>(&parted).unwrap().state.len(), 1);
        let whole = serde_json::to_string(&HeaderDoc {
            header,
            chunks: vec![],
        })
        .unwrap();
        assert!(!probe(&whole));
    }

    #[test]
    fn recorded_decimals_count_only_for_the_same_mint() {
        let a = BTreeMap::from([
            (MINT_ANNOTATION.to_string(), "Mint1".to_string()),
            (DECIMALS_ANNOTATION.to_string(), "6".to_string()),
        ]);
        assert_eq!(recorded(Some(&a), "Mint1"), Some(6));
        assert_eq!(recorded(Some(&a), "Mint2"), None, "another mint's units");
        assert_eq!(recorded(None, "Mint1"), None);
        let mut bad = a.clone();
        bad.insert(DECIMALS_ANNOTATION.to_string(), "six".to_string());
        assert_eq!(recorded(Some(&bad), "Mint1"), None, "unparseable is unknown");
    }
}
