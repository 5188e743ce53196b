//! A stateful fake Solana node for the settler's tests, served by [`crate::fake_rpc`]: a
//! blockhash, heights and accounts the test moves on, signature statuses, and a record of
//! every transaction sent. What it does not serve answers JSON-RPC "method not found".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value, json};

/// What the node knows.
#[derive(Debug, Default)]
pub struct ChainState {
    /// Slot of every answer's context (and of the finalized bank).
    pub slot: u64,
    /// Finalized block height (`getEpochInfo`).
    pub height: u64,
    /// The byte the current blockhash repeats (0 is read as 1).
    pub blockhash: u8,
    /// Last valid block height of the current blockhash.
    pub last_valid: u64,
    /// Replaces the `getLatestBlockhash` answer when set.
    pub blockhash_answer: Option<Result<Value, Value>>,
    /// Accounts by address, as `jsonParsed` values.
    pub accounts: BTreeMap<String, Value>,
    /// Signature statuses by signature (unknown when absent).
    pub statuses: BTreeMap<String, Value>,
    /// Signatures of the transactions sent, in order (a re-broadcast repeats one).
    pub sent: Vec<String>,
    /// When set, a transaction sent lands at once (status confirmed).
    pub land: bool,
}

/// A confirmed, successful signature status at `slot`.
pub fn confirmed(slot: u64) -> Value {
    json!({"slot": slot, "confirmations": 1, "err": null, "confirmationStatus": "confirmed"})
}

/// Shared by the test and the server.
#[derive(Debug, Clone, Default)]
pub struct FakeChain(Arc<Mutex<ChainState>>);

impl FakeChain {
    /// Changes (or reads) the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut ChainState) -> R) -> R {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Serves the node; returns its URL.
    pub async fn serve(&self) -> String {
        let me = self.clone();
        crate::fake_rpc::serve_with(move |method, params| me.with(|s| s.answer(method, params))).await
    }
}

impl ChainState {
    fn answer(&mut self, method: &str, params: &Value) -> Result<Value, Value> {
        let context = json!({"slot": self.slot});
        let account = |s: &Self, key: &Value| {
            key.as_str()
                .and_then(|k| s.accounts.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        match method {
            "getSignaturesForAddress" => Ok(json!([])),
            "getFirstAvailableBlock" => Ok(json!(0)),
            "getEpochInfo" => Ok(json!({"blockHeight": self.height, "absoluteSlot": self.slot})),
            "getAccountInfo" => Ok(json!({"context": context, "value": account(self, &params[0])})),
            "getMultipleAccounts" => {
                let keys = params[0].as_array().cloned().unwrap_or_default();
                let values: Vec<Value> = keys.iter().map(|k| account(self, k)).collect();
                Ok(json!({"context": context, "value": values}))
            }
            "getLatestBlockhash" => self.blockhash_answer.clone().unwrap_or_else(|| {
                let hash = bs58::encode([self.blockhash.max(1); 32]).into_string();
                Ok(json!({"context": context, "value": {
                    "blockhash": hash, "lastValidBlockHeight": self.last_valid}}))
            }),
            "sendTransaction" => {
                let wire = params[0]
                    .as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .filter(|w| w.len() > 65)
                    .ok_or_else(|| json!({"code": -32602, "message": "invalid transaction"}))?;
                // One signature: its count (one byte), then the transaction id.
                let sig = bs58::encode(&wire[1..65]).into_string();
                self.sent.push(sig.clone());
                if self.land {
                    self.statuses.insert(sig.clone(), confirmed(self.slot));
                }
                Ok(json!(sig))
            }
            "getSignatureStatuses" => {
                let sig = params[0][0].as_str().unwrap_or_default();
                let st = self.statuses.get(sig).cloned().unwrap_or(Value::Null);
                Ok(json!({"context": context, "value": [st]}))
            }
            other => Err(json!({"code": -32601, "message": format!("{other} not served")})),
        }
    }
}
