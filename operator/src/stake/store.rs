//! The Stake controller's durable state in the hub, as ConfigMaps in the operator's
//! namespace:
//!
//! - `gpufed-stake-<stake name>`: the pure machine's [`StakeState`] and what the
//!   controller must remember beside it ([`StakeDoc`]), replaced with the resourceVersion
//!   it last read, so a deposed leader's write is refused (409);
//! - `gpufed-deposit-claims-<xx>` (256 shards by the signature's hash; the single
//!   `gpufed-deposit-claims` of earlier releases is still read): deposit signature → the
//!   Stake that claims it, so one deposit
//!   bonds one Stake only, even after that Stake is deleted and another names the same
//!   signature; once it has bonded the entry is marked spent and bonds nothing again
//!   (`super::reuse`).
//!
//! State ConfigMaps are never deleted by the controller: they are the audit trail of what
//! was verified, released and slashed, and they keep deposits claimed.

use std::collections::{BTreeMap, HashMap};

use gpufed_settlement::stake::{StakePhase, StakeState};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of the per-Stake state ConfigMaps.
pub const DOC_PREFIX: &str = "gpufed-stake-";
/// The deposit claims ConfigMap of earlier releases (read only), and the prefix of its
/// shards ([`claims_shard`]).
pub const CLAIMS: &str = "gpufed-deposit-claims";
const KEY: &str = "state.json";
const NAME_ANNOTATION: &str = "gpufed.io/stake-name";

/// What is persisted for one Stake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StakeDoc {
    /// The Stake object's uid this state belongs to.
    pub uid: String,
    /// The pure machine's state.
    pub state: StakeState,
    /// Evidence hashes (hex) of slash requests already acted on (raised, or refused by a
    /// Stake that can never be slashed again): an annotation is fed to the machine once.
    /// One refused while the Stake is not bonded yet is not here: it is raised once it is.
    #[serde(default)]
    pub handled_slash_requests: Vec<String>,
    /// Evidence hashes (hex) of dismissed slashes.
    #[serde(default)]
    pub dismissed_slashes: Vec<String>,
    /// Dispute window end (ms) per evidence hash (hex), for the status of executed slashes.
    #[serde(default)]
    pub slash_windows: BTreeMap<String, u64>,
    /// When unbonding ends (or ended), ms.
    #[serde(default)]
    pub unbonding_end_ms: Option<u64>,
    /// The annotation `slash-dismiss=true` has dismissed a slash since it was set: it
    /// dismisses no other until it is removed (or set to an evidence hash).
    #[serde(default)]
    pub dismiss_true_spent: bool,
    /// When the Stake this state was first created for was created (unix seconds): only
    /// evidence observed since counts against it, and a Stake re-created under the same
    /// name continues this time with the state, so deleting it escapes no evidence.
    /// `None` in documents written before it was kept.
    #[serde(default)]
    pub since: Option<i64>,
    /// The claims ConfigMap records this state's deposit as spent (it has bonded): the
    /// state may then be replaced without the deposit ever bonding again.
    #[serde(default)]
    pub deposit_spent: bool,
    /// The `GpuProvider` the collateral backs (`spec.provider` when the state was first
    /// opened): API servers before 1.25 drop the CEL rule that makes `spec.provider`
    /// immutable, and an edited one would move the collateral, and the evidence it answers
    /// for, to another provider ([`super::reuse::open`] refuses it). `None` in documents
    /// written before it was kept: the provider seen first then is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl StakeDoc {
    /// A fresh document for a Stake.
    pub fn new(uid: &str, state: StakeState) -> Self {
        Self {
            uid: uid.to_string(),
            state,
            handled_slash_requests: Vec::new(),
            dismissed_slashes: Vec::new(),
            slash_windows: BTreeMap::new(),
            unbonding_end_ms: None,
            dismiss_true_spent: false,
            since: None,
            deposit_spent: false,
            provider: None,
        }
    }

    /// Copies what status needs beyond the pure state out of it (after every step).
    pub fn track(&mut self) {
        if let Some(p) = &self.state.pending_slash {
            self.slash_windows.insert(p.evidence.to_hex(), p.dispute_until_ms);
        }
        if let StakePhase::Unbonding { ends_at_ms } = self.state.phase {
            self.unbonding_end_ms = Some(ends_at_ms);
        }
    }
}

/// Who claims a deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The claiming Stake's name.
    pub stake: String,
    /// Its uid.
    pub uid: String,
    /// The deposit has bonded: it never passes to another Stake object, whatever becomes
    /// of the holder's state (absent in entries written before it was kept).
    #[serde(default)]
    pub spent: bool,
}

/// Result of [`StakeStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The deposit is this Stake's.
    Ours,
    /// Another Stake (named) claims it.
    HeldBy(String),
    /// The deposit has bonded for the Stake named (perhaps an earlier object of this
    /// name): it cannot bond again.
    Spent(String),
}

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the ConfigMap since it was read (a newer leader).
    #[error("{0} changed by another writer (fenced)")]
    Fenced(String),
    /// The API server refused or failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// A ConfigMap does not hold what the controller wrote.
    #[error("{0}: {1}")]
    Corrupt(String, String),
}

/// Name of a Stake's state ConfigMap (hashed when the Stake's name is too long for it).
pub fn doc_name(stake: &str) -> String {
    let name = format!("{DOC_PREFIX}{stake}");
    if name.len() <= 253 {
        return name;
    }
    let digest = Sha256::digest(stake.as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("{DOC_PREFIX}{hex}")
}

fn config_map(name: &str, role: &str, data: BTreeMap<String, String>, stake: Option<&str>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".to_string(), "gpufed".to_string()),
                ("gpufed.io/stake".to_string(), role.to_string()),
            ])),
            annotations: stake.map(|s| BTreeMap::from([(NAME_ANNOTATION.to_string(), s.to_string())])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> StoreError {
    let what = what.into();
    move |source| match &source {
        kube::Error::Api(e) if e.code == 409 => StoreError::Fenced(what),
        _ => StoreError::Api { what, source },
    }
}

fn parse_doc(cm: &ConfigMap) -> Result<StakeDoc, StoreError> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .ok_or_else(|| StoreError::Corrupt(name.clone(), format!("no {KEY}")))?;
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(name, e.to_string()))
}

/// The ConfigMaps of the Stake controller, with the resourceVersions last read.
pub struct StakeStore {
    api: Api<ConfigMap>,
    versions: HashMap<String, String>,
}

impl StakeStore {
    /// A store in `namespace` of the hub.
    pub fn new(hub: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(hub, namespace),
            versions: HashMap::new(),
        }
    }

    /// Reads a Stake's state (remembering its resourceVersion for the next save).
    pub async fn load(&mut self, stake: &str) -> Result<Option<StakeDoc>, StoreError> {
        let name = doc_name(stake);
        let Some(cm) = self.api.get_opt(&name).await.map_err(api_err(&name))? else {
            self.versions.remove(&name);
            return Ok(None);
        };
        let doc = parse_doc(&cm)?;
        if let Some(rv) = cm.metadata.resource_version {
            self.versions.insert(name, rv);
        }
        Ok(Some(doc))
    }

    /// Reads another Stake's state without taking its resourceVersion.
    async fn peek(&self, stake: &str) -> Result<Option<StakeDoc>, StoreError> {
        let name = doc_name(stake);
        match self.api.get_opt(&name).await.map_err(api_err(&name))? {
            Some(cm) => parse_doc(&cm).map(Some),
            None => Ok(None),
        }
    }

    /// Stores a Stake's state durably: created when it was not read before, else replaced
    /// under the resourceVersion last read ([`StoreError::Fenced`] when it changed).
    pub async fn save(&mut self, stake: &str, doc: &StakeDoc) -> Result<(), StoreError> {
        let name = doc_name(stake);
        let json =
            serde_json::to_string(doc).map_err(|e| StoreError::Corrupt(name.clone(), e.to_string()))?;
        let mut cm = config_map(
            &name,
            "state",
            BTreeMap::from([(KEY.to_string(), json)]),
            Some(stake),
        );
        let written = match self.versions.get(&name) {
            None => self.api.create(&PostParams::default(), &cm).await,
            Some(rv) => {
                cm.metadata.resource_version = Some(rv.clone());
                self.api.replace(&name, &PostParams::default(), &cm).await
            }
        };
        let written = written.map_err(api_err(&name))?;
        if let Some(rv) = written.metadata.resource_version {
            self.versions.insert(name, rv);
        }
        Ok(())
    }

    /// Forgets what was read of a Stake (after a conflict: the next load starts afresh).
    pub fn forget(&mut self, stake: &str) {
        self.versions.remove(&doc_name(stake));
    }

    /// The claim on `signature`: its shard's entries and the resourceVersion they were
    /// read at, and the holder of the claim (the shard's entry, else one in the single
    /// ConfigMap of earlier releases, which is read but no longer written).
    async fn claims(&self, signature: &str) -> Result<Claims, StoreError> {
        let shard = claims_shard(signature);
        let cm = self.api.get_opt(&shard).await.map_err(api_err(&shard))?;
        let rv = cm.as_ref().and_then(|c| c.metadata.resource_version.clone());
        let data = cm.and_then(|c| c.data).unwrap_or_default();
        let text = match data.get(signature) {
            Some(t) => Some(t.clone()),
            None => self
                .api
                .get_opt(CLAIMS)
                .await
                .map_err(api_err(CLAIMS))?
                .and_then(|c| c.data?.remove(signature)),
        };
        let holder = text
            .map(|t| serde_json::from_str::<Holder>(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt(shard.clone(), e.to_string()))?;
        Ok(Claims {
            shard,
            data,
            rv,
            holder,
        })
    }

    /// Writes `holder` as the claim on `signature` into the shard read in `claims`, under
    /// the resourceVersion it was read at.
    async fn write_claim(
        &self,
        mut claims: Claims,
        signature: &str,
        holder: &Holder,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(holder)
            .map_err(|e| StoreError::Corrupt(claims.shard.clone(), e.to_string()))?;
        claims.data.insert(signature.to_string(), text);
        let mut cm = config_map(&claims.shard, "claims", claims.data, None);
        match claims.rv {
            None => self.api.create(&PostParams::default(), &cm).await,
            Some(rv) => {
                cm.metadata.resource_version = Some(rv);
                self.api.replace(&claims.shard, &PostParams::default(), &cm).await
            }
        }
        .map_err(api_err(&claims.shard))?;
        Ok(())
    }

    /// Claims `signature` for the Stake `stake` (uid `uid`), as
    /// [`super::reuse::claim_verdict`] decides: a spent deposit stays its holder's, a
    /// claim by another live Stake stands, any other passes to this one.
    pub async fn claim(&mut self, signature: &str, stake: &str, uid: &str) -> Result<Claim, StoreError> {
        let claims = self.claims(signature).await?;
        if let Some(holder) = &claims.holder {
            let exact = holder.stake == stake && holder.uid == uid;
            let holder_doc = if exact {
                None
            } else {
                self.peek(&holder.stake).await?
            };
            if let Some(verdict) =
                super::reuse::claim_verdict(holder, holder_doc.as_ref(), signature, stake, uid)
            {
                return Ok(verdict);
            }
        }
        let holder = Holder {
            stake: stake.to_string(),
            uid: uid.to_string(),
            spent: false,
        };
        self.write_claim(claims, signature, &holder).await?;
        Ok(Claim::Ours)
    }

    /// Records that `signature` has bonded (for the Stake `stake`, uid `uid`, unless the
    /// entry names its holder already): no Stake object but its holder ever claims it
    /// again. Idempotent.
    pub async fn mark_spent(&mut self, signature: &str, stake: &str, uid: &str) -> Result<(), StoreError> {
        let mut claims = self.claims(signature).await?;
        let mut holder = claims.holder.take().unwrap_or_else(|| Holder {
            stake: stake.to_string(),
            uid: uid.to_string(),
            spent: false,
        });
        if holder.spent {
            return Ok(());
        }
        holder.spent = true;
        self.write_claim(claims, signature, &holder).await
    }
}

/// One claims shard as read, and the claim on the signature looked up.
struct Claims {
    shard: String,
    data: BTreeMap<String, String>,
    rv: Option<String>,
    holder: Option<Holder>,
}

/// The ConfigMap holding the claim on `signature`: one of 256, by the first byte of the
/// signature's SHA-256. One ConfigMap for every deposit ever made would pass the API
/// server's 1 MiB near 4,000 deposits, after which no new Stake could be claimed.
pub fn claims_shard(signature: &str) -> String {
    let d = Sha256::digest(signature.as_bytes());
    format!("{CLAIMS}-{:02x}", d[0])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gpufed_settlement::Hash32;
    use gpufed_settlement::TxState;
    use gpufed_settlement::stake::PendingSlash;

    #[test]
    fn claims_spread_over_256_shards() {
        let shards: std::collections::BTreeSet<String> =
            (0..4000).map(|i| claims_shard(&format!("sig{i}"))).collect();
        assert_eq!(shards.len(), 256);
        assert_eq!(claims_shard("sig1"), claims_shard("sig1"));
        assert!(
            shards
                .iter()
                .all(|s| s.starts_with("gpufed-deposit-claims-") && s.len() == CLAIMS.len() + 3)
        );
    }

    #[test]
    fn long_names_are_hashed_into_a_valid_name() {
        assert_eq!(doc_name("p-1"), "gpufed-stake-p-1");
        let long = "a".repeat(250);
        let n = doc_name(&long);
        assert!(n.len() <= 253 && n.starts_with(DOC_PREFIX), "{n}");
        assert_ne!(n, doc_name(&"b".repeat(250)));
    }

    #[test]
    fn doc_round_trips_and_tracks_windows() {
        let mut doc = StakeDoc::new("uid-1", StakeState::new("w".into(), 5, "sig".into(), 1));
        doc.state.pending_slash = Some(PendingSlash {
            kind: "failed-challenge".into(),
            evidence: Hash32([1; 32]),
            amount: 2,
            dispute_until_ms: 99,
            tx: TxState::new(2),
        });
        doc.state.phase = StakePhase::Unbonding { ends_at_ms: 1234 };
        doc.track();
        assert_eq!(doc.slash_windows[&Hash32([1; 32]).to_hex()], 99);
        assert_eq!(doc.unbonding_end_ms, Some(1234));
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(serde_json::from_str::<StakeDoc>(&json).unwrap(), doc);
        // Older documents without the optional fields still load.
        let minimal = serde_json::json!({"uid": "u", "state": doc.state});
        let d: StakeDoc = serde_json::from_value(minimal).unwrap();
        assert!(d.handled_slash_requests.is_empty());
    }
}
