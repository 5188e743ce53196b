//! A small JSON-RPC client for the Solana methods gpufed needs, over the HTTP stack the
//! workspace already has (hyper + rustls) instead of the heavy Solana client crates.
//! Every call has a timeout; transport errors are [`ChainError::Transport`] (retryable).

use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use gpufed_settlement::Commitment;

use crate::error::ChainError;
use crate::pubkey::Pubkey;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The largest answer read from the RPC node.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A Solana JSON-RPC endpoint.
#[derive(Clone)]
pub struct Rpc {
    url: hyper::Uri,
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

/// Status of a signature as `getSignatureStatuses` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureStatus {
    /// Slot it landed in.
    pub slot: u64,
    /// Commitment reached.
    pub commitment: Commitment,
    /// Transaction error (JSON text), if it failed.
    pub error: Option<String>,
}

/// Commitment as the RPC spells it.
pub fn commitment_str(c: Commitment) -> &'static str {
    match c {
        Commitment::Processed => "processed",
        Commitment::Confirmed => "confirmed",
        Commitment::Finalized => "finalized",
    }
}

/// Most bytes of a JSON-RPC error's details kept in its message.
const ERROR_DETAIL_BYTES: usize = 512;

/// A JSON-RPC error's message, with what its `data` says went wrong where a node gives it
/// (a failed preflight simulation: the transaction error and the last program logs —
/// "insufficient funds for rent" is in the logs, not the message), cut to
/// [`ERROR_DETAIL_BYTES`].
fn rpc_error_message(err: &Value) -> String {
    let mut message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let data = err.get("data");
    let mut detail = String::new();
    if let Some(e) = data.and_then(|d| d.get("err")).filter(|e| !e.is_null()) {
        detail.push_str(&format!("err: {e}"));
    }
    if let Some(logs) = data.and_then(|d| d.get("logs")).and_then(Value::as_array) {
        let last: Vec<&str> = logs.iter().rev().take(3).filter_map(Value::as_str).collect();
        for line in last.into_iter().rev() {
            detail.push_str(if detail.is_empty() { "log: " } else { "; log: " });
            detail.push_str(line);
        }
    }
    if !detail.is_empty() {
        let mut end = detail.len().min(ERROR_DETAIL_BYTES);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        message.push_str(&format!(" ({})", &detail[..end]));
    }
    message
}

impl Rpc {
    /// An endpoint (`http://127.0.0.1:8899` or an `https://` URL) with a per-call timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ChainError> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|e| ChainError::Config(format!("RPC URL {url:?} is invalid: {e}")))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| ChainError::Config(format!("TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self { url, client, timeout })
    }

    /// The endpoint URL.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    /// One JSON-RPC call; returns `result`.
    pub async fn call(&self, method: &'static str, params: Value) -> Result<Value, ChainError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let transport = |message: String| ChainError::Transport { method, message };
        let req = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| transport(e.to_string()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = resp.status();
            // A misbehaving endpoint or proxy streaming without end must not take the
            // operator's memory: the largest answer used (a block's signatures) is far less.
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| transport(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ChainError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| transport(format!("no answer within {:?}", self.timeout)))??;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            if status.is_success() {
                ChainError::Decode {
                    method,
                    message: e.to_string(),
                }
            } else {
                transport(format!("HTTP {status}"))
            }
        })?;
        // A gateway's 429/5xx with a JSON body of its own (no JSON-RPC `error`) is the
        // endpoint being busy or away, not an answer that does not parse: retried.
        if !status.is_success() && v.get("error").is_none() {
            return Err(transport(format!("HTTP {status}")));
        }
        if let Some(err) = v.get("error") {
            return Err(ChainError::Rpc {
                method,
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: rpc_error_message(err),
            });
        }
        v.get("result").cloned().ok_or_else(|| ChainError::Decode {
            method,
            message: "no result".into(),
        })
    }

    fn decode<T>(method: &'static str, v: Option<T>, what: &str) -> Result<T, ChainError> {
        v.ok_or_else(|| ChainError::Decode {
            method,
            message: format!("missing {what}"),
        })
    }

    /// `getHealth` is "ok".
    pub async fn health(&self) -> Result<(), ChainError> {
        let v = self.call("getHealth", json!([])).await?;
        match v.as_str() {
            Some("ok") => Ok(()),
            _ => Err(ChainError::Decode {
                method: "getHealth",
                message: v.to_string(),
            }),
        }
    }

    /// `getLatestBlockhash`: the blockhash, its last valid block height, and the slot of
    /// the answer (a transaction signed with it cannot land before that slot).
    pub async fn latest_blockhash(&self, c: Commitment) -> Result<([u8; 32], u64, u64), ChainError> {
        const M: &str = "getLatestBlockhash";
        let v = self.call(M, json!([{"commitment": commitment_str(c)}])).await?;
        let slot = Self::decode(M, v["context"]["slot"].as_u64(), "context.slot")?;
        let value = &v["value"];
        let hash = Self::decode(M, value["blockhash"].as_str(), "blockhash")?;
        let height = Self::decode(M, value["lastValidBlockHeight"].as_u64(), "lastValidBlockHeight")?;
        let key = Pubkey::parse(hash).map_err(|e| ChainError::Decode {
            method: M,
            message: e.to_string(),
        })?;
        Ok((key.0, height, slot))
    }

    /// `getFirstAvailableBlock`: the lowest slot whose block (and transactions) the node
    /// still has.
    pub async fn first_available_block(&self) -> Result<u64, ChainError> {
        const M: &str = "getFirstAvailableBlock";
        let v = self.call(M, json!([])).await?;
        Self::decode(M, v.as_u64(), "slot")
    }

    /// `getBlockHeight` at a commitment.
    pub async fn block_height(&self, c: Commitment) -> Result<u64, ChainError> {
        let v = self
            .call("getBlockHeight", json!([{"commitment": commitment_str(c)}]))
            .await?;
        Self::decode("getBlockHeight", v.as_u64(), "height")
    }

    /// `sendTransaction` of base64 wire bytes. Preflight is skipped: the journal already
    /// holds the intent, and a re-broadcast of a landed transaction must not fail.
    pub async fn send_transaction(&self, wire_b64: &str) -> Result<String, ChainError> {
        let v = self
            .call(
                "sendTransaction",
                json!([wire_b64, {"encoding": "base64", "skipPreflight": true, "maxRetries": 0}]),
            )
            .await?;
        Self::decode("sendTransaction", v.as_str().map(str::to_string), "signature")
    }

    /// `sendTransaction` with preflight (for set-up transactions in tools and tests).
    pub async fn send_checked(&self, wire: &[u8]) -> Result<String, ChainError> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(wire);
        let v = self
            .call(
                "sendTransaction",
                json!([b64, {"encoding": "base64", "preflightCommitment": "confirmed"}]),
            )
            .await?;
        Self::decode("sendTransaction", v.as_str().map(str::to_string), "signature")
    }

    /// `getEpochInfo` at **finalized**: the finalized block height and the slot it was read
    /// at, both of one bank of one node.
    pub async fn finalized_height_and_slot(&self) -> Result<(u64, u64), ChainError> {
        const M: &str = "getEpochInfo";
        let v = self
            .call(M, json!([{"commitment": commitment_str(Commitment::Finalized)}]))
            .await?;
        Ok((
            Self::decode(M, v["blockHeight"].as_u64(), "blockHeight")?,
            Self::decode(M, v["absoluteSlot"].as_u64(), "absoluteSlot")?,
        ))
    }

    /// `getSignatureStatuses` with `searchTransactionHistory`, as the node reports it;
    /// `None` = unknown; and the slot of the node's answer (`context.slot`). A "finalized"
    /// here can be stale (see [`crate::finality`]): callers use
    /// [`Self::signature_status`], which checks it against the block.
    pub(crate) async fn reported_signature_status(
        &self,
        signature: &str,
    ) -> Result<(Option<SignatureStatus>, u64), ChainError> {
        const M: &str = "getSignatureStatuses";
        let v = self
            .call(M, json!([[signature], {"searchTransactionHistory": true}]))
            .await?;
        let context = Self::decode(M, v["context"]["slot"].as_u64(), "context.slot")?;
        let st = &v["value"][0];
        if st.is_null() {
            return Ok((None, context));
        }
        let commitment = match st["confirmationStatus"].as_str() {
            Some("finalized") => Commitment::Finalized,
            Some("confirmed") => Commitment::Confirmed,
            Some("processed") => Commitment::Processed,
            // The field is nullable (some front-ends leave it out): `confirmations` null
            // means rooted; a count says no more than processed.
            None if st["confirmations"].is_null() => Commitment::Finalized,
            None => Commitment::Processed,
            other => {
                return Err(ChainError::Decode {
                    method: M,
                    message: format!("confirmationStatus {other:?}"),
                });
            }
        };
        Ok((
            Some(SignatureStatus {
                slot: Self::decode(M, st["slot"].as_u64(), "slot")?,
                commitment,
                error: (!st["err"].is_null()).then(|| st["err"].to_string()),
            }),
            context,
        ))
    }

    /// `getTransaction` (jsonParsed) at a commitment; `None` when unknown.
    pub async fn transaction(&self, signature: &str, c: Commitment) -> Result<Option<Value>, ChainError> {
        let v = self
            .call(
                "getTransaction",
                json!([signature, {"encoding": "jsonParsed", "commitment": commitment_str(c),
                                    "maxSupportedTransactionVersion": 0}]),
            )
            .await?;
        Ok((!v.is_null()).then_some(v))
    }

    /// [`Self::transaction`], asked again every 250 ms for up to `wait` while the node
    /// answers null: a node serves a transaction a little after its signature status says
    /// it is final (seen on agave 3.1 at 0.37 s slots). For callers that know it landed.
    pub async fn transaction_when_served(
        &self,
        signature: &str,
        c: Commitment,
        wait: std::time::Duration,
    ) -> Result<Option<Value>, ChainError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(tx) = self.transaction(signature, c).await? {
                return Ok(Some(tx));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// `getTokenAccountBalance` in base units; `None` when the account does not exist.
    pub async fn token_balance(&self, account: &Pubkey, c: Commitment) -> Result<Option<u64>, ChainError> {
        const M: &str = "getTokenAccountBalance";
        match self
            .call(M, json!([account.to_string(), {"commitment": commitment_str(c)}]))
            .await
        {
            Ok(v) => {
                let amount = Self::decode(M, v["value"]["amount"].as_str(), "amount")?;
                amount.parse().map(Some).map_err(|e| ChainError::Decode {
                    method: M,
                    message: format!("amount {amount:?}: {e}"),
                })
            }
            // "could not find account" / "not a Token account"
            Err(ChainError::Rpc { code: -32602, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Decimals of a mint (`getTokenSupply`); settlement refuses to guess them.
    pub async fn mint_decimals(&self, mint: &Pubkey) -> Result<u8, ChainError> {
        const M: &str = "getTokenSupply";
        let v = self.call(M, json!([mint.to_string()])).await?;
        let d = Self::decode(M, v["value"]["decimals"].as_u64(), "decimals")?;
        u8::try_from(d).map_err(|_| ChainError::Decode {
            method: M,
            message: format!("decimals {d}"),
        })
    }

    /// `getBalance` in lamports.
    pub async fn balance(&self, account: &Pubkey, c: Commitment) -> Result<u64, ChainError> {
        let v = self
            .call(
                "getBalance",
                json!([account.to_string(), {"commitment": commitment_str(c)}]),
            )
            .await?;
        Self::decode("getBalance", v["value"].as_u64(), "value")
    }

    /// `getSignaturesForAddress` (newest first, up to 1000) as the node reports it:
    /// (signature, succeeded, slot). Callers use [`Self::signatures_for_address`].
    pub(crate) async fn reported_signatures_for_address(
        &self,
        account: &Pubkey,
        c: Commitment,
    ) -> Result<Vec<(String, bool, u64)>, ChainError> {
        const M: &str = "getSignaturesForAddress";
        let v = self
            .call(
                M,
                json!([account.to_string(), {"commitment": commitment_str(c), "limit": 1000}]),
            )
            .await?;
        let arr = Self::decode(M, v.as_array(), "array")?;
        Ok(arr
            .iter()
            .filter_map(|e| {
                let sig = e["signature"].as_str()?.to_string();
                Some((sig, e["err"].is_null(), e["slot"].as_u64()?))
            })
            .collect())
    }

    /// `getMinimumBalanceForRentExemption`.
    pub async fn rent_exempt_minimum(&self, space: u64) -> Result<u64, ChainError> {
        let v = self
            .call("getMinimumBalanceForRentExemption", json!([space]))
            .await?;
        Self::decode("getMinimumBalanceForRentExemption", v.as_u64(), "lamports")
    }

    /// `requestAirdrop` (test validators only).
    pub async fn request_airdrop(&self, to: &Pubkey, lamports: u64) -> Result<String, ChainError> {
        let v = self
            .call("requestAirdrop", json!([to.to_string(), lamports]))
            .await?;
        Self::decode("requestAirdrop", v.as_str().map(str::to_string), "signature")
    }

    /// Polls until `signature` reaches `c` (or fails), up to `timeout`.
    pub async fn wait_for(
        &self,
        signature: &str,
        c: Commitment,
        timeout: Duration,
    ) -> Result<SignatureStatus, ChainError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.signature_status(signature).await?
                && (st.error.is_some() || st.commitment >= c)
            {
                return Ok(st);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChainError::Transport {
                    method: "getSignatureStatuses",
                    message: format!(
                        "{signature} did not reach {} within {timeout:?}",
                        commitment_str(c)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "rpc_tests.rs"]
mod tests;
