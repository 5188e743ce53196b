//! Reading a stake deposit from chain: a `getTransaction` (jsonParsed) answer becomes the
//! pure machine's [`DepositTx`] — its commitment, its error and every SPL Token transfer
//! it made (outer and inner instructions), each with the mint, the owner of the source
//! account, the destination token account and the amount.
//!
//! The owner comes from the token balances the node recorded for the source account
//! (`preTokenBalances`, then `postTokenBalances`), so a transfer signed by a delegate still
//! counts as coming from the account's owner; only when the node recorded no balance for it
//! do we fall back to the instruction's signing authority.

use gpufed_settlement::Commitment;
use gpufed_settlement::stake::{DepositTx, TokenMove};
use serde_json::Value;

use crate::error::ChainError;
use crate::programs;
use crate::rpc::Rpc;

const METHOD: &str = "getTransaction";

fn decode_err(message: impl Into<String>) -> ChainError {
    ChainError::Decode {
        method: METHOD,
        message: message.into(),
    }
}

/// The account keys of the message (jsonParsed objects or plain strings), in index order.
fn account_keys(tx: &Value) -> Vec<String> {
    tx["transaction"]["message"]["accountKeys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["pubkey"].as_str().or_else(|| k.as_str()).map(str::to_string))
        .collect()
}

/// `(mint, owner)` the node recorded for the account at `index`, pre balances first.
fn token_balance_of(meta: &Value, index: usize) -> (Option<String>, Option<String>) {
    let mut mint = None;
    let mut owner = None;
    for list in ["preTokenBalances", "postTokenBalances"] {
        for b in meta[list].as_array().into_iter().flatten() {
            if b["accountIndex"].as_u64() != Some(index as u64) {
                continue;
            }
            if mint.is_none() {
                mint = b["mint"].as_str().map(str::to_string);
            }
            if owner.is_none() {
                owner = b["owner"].as_str().map(str::to_string);
            }
        }
    }
    (mint, owner)
}

/// Outer instructions, then every inner instruction, of a jsonParsed `getTransaction`.
pub(crate) fn all_instructions(tx: &Value) -> impl Iterator<Item = &Value> {
    let outer = tx["transaction"]["message"]["instructions"]
        .as_array()
        .into_iter()
        .flatten();
    let inner = tx["meta"]["innerInstructions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["instructions"].as_array().into_iter().flatten());
    outer.chain(inner)
}

fn parse_amount(v: &Value) -> Result<u64, ChainError> {
    let text = v
        .as_str()
        .ok_or_else(|| decode_err(format!("token amount {v} is not a string")))?;
    text.parse()
        .map_err(|e| decode_err(format!("token amount {text:?}: {e}")))
}

/// One SPL Token `transfer` / `transferChecked` as a [`TokenMove`]; `None` for any other
/// instruction.
fn token_move(ix: &Value, keys: &[String], meta: &Value) -> Result<Option<TokenMove>, ChainError> {
    if ix["programId"].as_str() != Some(programs::TOKEN.to_string().as_str()) {
        return Ok(None);
    }
    let parsed = &ix["parsed"];
    let kind = parsed["type"].as_str().unwrap_or_default();
    if kind != "transfer" && kind != "transferChecked" {
        return Ok(None);
    }
    let info = &parsed["info"];
    let field = |name: &str| {
        info[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| decode_err(format!("{kind} without {name}")))
    };
    let source = field("source")?;
    let to = field("destination")?;
    let amount = match kind {
        "transferChecked" => parse_amount(&info["tokenAmount"]["amount"])?,
        _ => parse_amount(&info["amount"])?,
    };
    let index_of = |acct: &str| keys.iter().position(|k| k == acct);
    let (src_mint, src_owner) = index_of(&source).map_or((None, None), |i| token_balance_of(meta, i));
    let (dst_mint, _) = index_of(&to).map_or((None, None), |i| token_balance_of(meta, i));
    let mint = info["mint"]
        .as_str()
        .map(str::to_string)
        .or(src_mint)
        .or(dst_mint)
        .ok_or_else(|| decode_err(format!("no mint known for the {kind} from {source}")))?;
    let from_owner = src_owner
        .or_else(|| info["authority"].as_str().map(str::to_string))
        .or_else(|| info["multisigAuthority"].as_str().map(str::to_string))
        .ok_or_else(|| decode_err(format!("no owner known for the {kind} from {source}")))?;
    Ok(Some(TokenMove {
        mint,
        from_owner,
        to,
        amount,
    }))
}

/// Whether `s` is a transaction signature: base58 of 64 bytes. (The RPC node answers a
/// malformed one with an error, never with "unknown", so callers check it first.)
pub fn is_signature(s: &str) -> bool {
    bs58::decode(s).into_vec().is_ok_and(|b| b.len() == 64)
}

/// Parses a `getTransaction` (jsonParsed) answer read at `commitment`. Pure.
pub fn parse_deposit(tx: &Value, commitment: Commitment) -> Result<DepositTx, ChainError> {
    let meta = &tx["meta"];
    if !meta.is_object() {
        return Err(decode_err("transaction without meta"));
    }
    if !tx["transaction"]["message"].is_object() {
        return Err(decode_err(
            "transaction without a parsed message (not jsonParsed?)",
        ));
    }
    let error = (!meta["err"].is_null()).then(|| meta["err"].to_string());
    let keys = account_keys(tx);
    let mut moves = Vec::new();
    for ix in all_instructions(tx) {
        if let Some(m) = token_move(ix, &keys, meta)? {
            moves.push(m);
        }
    }
    Ok(DepositTx {
        commitment,
        error,
        moves,
    })
}

/// Fetches a deposit: the finalized transaction if it is finalized; else, when the node
/// knows the signature at a lower commitment, a placeholder marked with that commitment
/// (below `Finalized`, no moves) so the machine waits for it without running its
/// not-found grace period; `None` only when the node does not know the signature.
///
/// The signature status decides "known": `getTransaction` at `confirmed` answers `null`
/// for part of the time between confirmation and finalization (seen on agave 3.1).
pub async fn fetch_deposit(rpc: &Rpc, signature: &str) -> Result<Option<DepositTx>, ChainError> {
    if let Some(tx) = rpc.transaction(signature, Commitment::Finalized).await? {
        return parse_deposit(&tx, Commitment::Finalized).map(Some);
    }
    Ok(rpc.signature_status(signature).await?.map(|st| DepositTx {
        // Finalized between the two calls: still wait for getTransaction to show it.
        commitment: st.commitment.min(Commitment::Confirmed),
        error: st.error,
        moves: Vec::new(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINT: &str = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin";
    const VAULT: &str = "5Q544fKrFoe6tsEbD7S8EmxGTJYAKtTVhAW5Q5pge4j1";
    const STAKER: &str = "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH";
    const DELEGATE: &str = "DRpbCBMxVnDK7maPM5tGv6MvB3v1sRMC86PZ8okm21hy";

    fn fixture(name: &str) -> Value {
        let text = match name {
            "transfer_checked" => include_str!("fixtures/deposit_transfer_checked.json"),
            "transfer_inner" => include_str!("fixtures/deposit_transfer_inner.json"),
            "failed" => include_str!("fixtures/deposit_failed.json"),
            _ => unreachable!(),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn signatures_are_base58_of_64_bytes() {
        let sig = fixture("transfer_checked")["transaction"]["signatures"][0]
            .as_str()
            .unwrap()
            .to_string();
        assert!(is_signature(&sig));
        assert!(!is_signature(MINT), "a public key is 32 bytes");
        assert!(!is_signature("0OIl"), "not base58");
    }

    #[test]
    fn transfer_checked_into_the_vault() {
        let d = parse_deposit(&fixture("transfer_checked"), Commitment::Finalized).unwrap();
        assert_eq!(d.commitment, Commitment::Finalized);
        assert_eq!(d.error, None);
        assert_eq!(
            d.moves,
            vec![TokenMove {
                mint: MINT.into(),
                from_owner: STAKER.into(),
                to: VAULT.into(),
                amount: 250_000_000,
            }]
        );
    }

    #[test]
    fn inner_transfer_takes_mint_and_owner_from_token_balances() {
        // A program CPI'd a plain `transfer` (no mint in the instruction) signed by a
        // delegate: the mint and the true owner come from the recorded token balances.
        let d = parse_deposit(&fixture("transfer_inner"), Commitment::Confirmed).unwrap();
        assert_eq!(d.commitment, Commitment::Confirmed);
        assert_eq!(d.moves.len(), 2, "{:?}", d.moves);
        assert_eq!(
            d.moves[1],
            TokenMove {
                mint: MINT.into(),
                from_owner: STAKER.into(),
                to: VAULT.into(),
                amount: 7,
            }
        );
        // The outer one moved between accounts the node has no balances for: authority.
        assert_eq!(d.moves[0].from_owner, DELEGATE);
        assert_eq!(d.moves[0].mint, MINT);
    }

    #[test]
    fn failed_transaction_keeps_its_error() {
        let d = parse_deposit(&fixture("failed"), Commitment::Finalized).unwrap();
        assert!(
            d.error.as_deref().unwrap().contains("InstructionError"),
            "{:?}",
            d.error
        );
    }

    #[test]
    fn malformed_answers_are_decode_errors() {
        assert!(matches!(
            parse_deposit(&serde_json::json!({"slot": 1}), Commitment::Finalized),
            Err(ChainError::Decode { .. })
        ));
        let mut tx = fixture("transfer_checked");
        tx["transaction"]["message"]["instructions"][0]["parsed"]["info"]["tokenAmount"]["amount"] =
            serde_json::json!(12);
        assert!(matches!(
            parse_deposit(&tx, Commitment::Finalized),
            Err(ChainError::Decode { .. })
        ));
        // A plain transfer whose accounts have no recorded balances has no known mint.
        let mut tx = fixture("transfer_inner");
        tx["meta"]["preTokenBalances"] = serde_json::json!([]);
        tx["meta"]["postTokenBalances"] = serde_json::json!([]);
        assert!(parse_deposit(&tx, Commitment::Finalized).is_err());
    }

    #[test]
    fn other_programs_and_instructions_are_ignored() {
        let mut tx = fixture("transfer_checked");
        tx["transaction"]["message"]["instructions"][0]["programId"] =
            serde_json::json!("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
        assert!(
            parse_deposit(&tx, Commitment::Finalized)
                .unwrap()
                .moves
                .is_empty()
        );
        let mut tx = fixture("transfer_checked");
        tx["transaction"]["message"]["instructions"][0]["parsed"]["type"] =
            serde_json::json!("approveChecked");
        assert!(
            parse_deposit(&tx, Commitment::Finalized)
                .unwrap()
                .moves
                .is_empty()
        );
    }
}
