//! Whether a provider's payout token account can receive the settlement token.
//!
//! Why it is checked before planning: a batch pays every (tenant, provider) pair in it with
//! one transaction, so one transfer into an account that does not exist, holds another mint,
//! is frozen, or is not a token account at all fails the whole transaction on chain (the fee
//! paid) and returns every record in it, of every pair, to the front of the queue, where
//! the next batch takes them and fails again. The operator creates missing payout accounts,
//! but the chain can refuse that (the authority short of SOL for the rent, an account at
//! the address already of another owner or mint): such a provider's records must wait,
//! with the reason, until its account is fixed, while the other pairs settle.

use serde_json::{Value, json};

use crate::error::ChainError;
use crate::programs;
use crate::pubkey::Pubkey;
use crate::rpc::{Rpc, commitment_str};
use gpufed_settlement::Commitment;

/// Most accounts `getMultipleAccounts` takes in one call.
const MAX_KEYS_PER_CALL: usize = 100;

/// Why the account `account` (one `value` of a `jsonParsed` `getMultipleAccounts` or
/// `getAccountInfo` answer; `null` when there is none) cannot receive `mint` for `wallet`;
/// `None` when it can.
pub fn payout_problem(account: &Pubkey, value: &Value, wallet: &Pubkey, mint: &Pubkey) -> Option<String> {
    if value.is_null() {
        return Some(format!(
            "payout token account {account} of wallet {wallet} does not exist (creating it failed or was not tried yet)"
        ));
    }
    let program = value["owner"].as_str().unwrap_or_default();
    if program != programs::TOKEN.to_string() {
        return Some(format!(
            "payout account {account} is not an SPL Token account (owned by program {program:?})"
        ));
    }
    let parsed = &value["data"]["parsed"];
    if parsed["type"].as_str() != Some("account") {
        return Some(format!("payout account {account} is not a token account"));
    }
    let info = &parsed["info"];
    let key = |field: &str| info[field].as_str().and_then(|s| Pubkey::parse(s).ok());
    match key("mint") {
        Some(m) if m == *mint => {}
        other => {
            return Some(format!(
                "payout account {account} holds mint {}, not the settlement mint {mint}",
                other.map_or_else(|| "?".to_string(), |m| m.to_string())
            ));
        }
    }
    // Paid into, the tokens would be another party's: refused, not guessed.
    match key("owner") {
        Some(o) if o == *wallet => {}
        other => {
            return Some(format!(
                "payout account {account} belongs to {}, not to the provider's payout wallet {wallet}",
                other.map_or_else(|| "?".to_string(), |o| o.to_string())
            ));
        }
    }
    match info["state"].as_str() {
        Some("initialized") => None,
        other => Some(format!(
            "payout account {account} is {}, so it cannot receive tokens",
            other.unwrap_or("in an unknown state")
        )),
    }
}

impl Rpc {
    /// `getMultipleAccounts` (`jsonParsed`) at `c`: one value per key, in order, `null`
    /// where there is no account.
    pub async fn accounts_parsed(&self, keys: &[Pubkey], c: Commitment) -> Result<Vec<Value>, ChainError> {
        const M: &str = "getMultipleAccounts";
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_KEYS_PER_CALL) {
            let addresses: Vec<String> = chunk.iter().map(Pubkey::to_string).collect();
            let v = self
                .call(
                    M,
                    json!([addresses, {"encoding": "jsonParsed", "commitment": commitment_str(c)}]),
                )
                .await?;
            let values = v["value"]
                .as_array()
                .filter(|a| a.len() == chunk.len())
                .ok_or_else(|| ChainError::Decode {
                    method: M,
                    message: format!("expected {} account values", chunk.len()),
                })?;
            out.extend(values.iter().cloned());
        }
        Ok(out)
    }
}

/// A `jsonParsed` SPL token account as a node describes it (tests).
#[cfg(test)]
pub(crate) fn token_account_json(mint: &Pubkey, owner: &Pubkey, amount: u64, state: &str) -> Value {
    json!({
        "owner": programs::TOKEN.to_string(),
        "lamports": 2_039_280,
        "executable": false,
        "data": {"program": "spl-token", "space": 165, "parsed": {"type": "account", "info": {
            "mint": mint.to_string(), "owner": owner.to_string(), "state": state,
            "tokenAmount": {"amount": amount.to_string(), "decimals": 6},
        }}},
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pubkey::Keypair;

    #[test]
    fn only_an_initialized_token_account_of_the_mint_and_the_wallet_receives() {
        let (acct, wallet, mint, other) = (
            Keypair::generate().pubkey(),
            Keypair::generate().pubkey(),
            Keypair::generate().pubkey(),
            Keypair::generate().pubkey(),
        );
        let check = |v: &Value| payout_problem(&acct, v, &wallet, &mint);
        assert_eq!(check(&token_account_json(&mint, &wallet, 0, "initialized")), None);
        let why = |v: &Value| check(v).unwrap();
        assert!(why(&Value::Null).contains("does not exist"));
        assert!(
            why(&token_account_json(&other, &wallet, 0, "initialized")).contains("not the settlement mint")
        );
        assert!(
            why(&token_account_json(&mint, &other, 0, "initialized"))
                .contains("not to the provider's payout wallet")
        );
        assert!(why(&token_account_json(&mint, &wallet, 0, "frozen")).contains("frozen"));
        let mut system = token_account_json(&mint, &wallet, 0, "initialized");
        system["owner"] = json!(programs::SYSTEM.to_string());
        assert!(why(&system).contains("not an SPL Token account"));
        let mut mint_account = token_account_json(&mint, &wallet, 0, "initialized");
        mint_account["data"]["parsed"]["type"] = json!("mint");
        assert!(why(&mint_account).contains("not a token account"));
    }
}
