//! What a tenant's escrow lets the settlement authority spend.
//!
//! A batch moves tokens out of each tenant's escrow with `TransferChecked` signed by the
//! settlement authority as the account's *delegate*, so what it can move is the smaller of
//! the balance and the delegated amount — and nothing when the tenant revoked the
//! delegation, delegated to someone else, or the account is frozen or of another mint.
//! Checking the balance alone planned batches that failed on chain (the fee paid) and put
//! the tenant's records back first in the queue, where they failed the next batch, and
//! every other tenant's records in it, again.

use serde_json::Value;

use crate::error::ChainError;
use crate::pubkey::Pubkey;
use crate::rpc::{Rpc, commitment_str};
use gpufed_settlement::Commitment;

/// What `authority` may move out of the token account `info` describes (the `parsed.info`
/// of a `jsonParsed` SPL token account), for `mint`.
pub fn spendable(info: &Value, authority: &Pubkey, mint: &Pubkey) -> Result<u64, String> {
    let amount = |v: &Value, what: &str| -> Result<u64, String> {
        v["amount"]
            .as_str()
            .ok_or_else(|| format!("no {what} amount"))?
            .parse::<u64>()
            .map_err(|e| format!("{what} amount: {e}"))
    };
    let balance = amount(&info["tokenAmount"], "token")?;
    let key = |field: &str| info[field].as_str().map(Pubkey::parse).transpose();
    let owner = key("owner").map_err(|e| e.to_string())?;
    let delegate = key("delegate").map_err(|e| e.to_string())?;
    if key("mint").map_err(|e| e.to_string())? != Some(*mint) || info["state"].as_str() != Some("initialized")
    {
        return Ok(0);
    }
    if owner == Some(*authority) {
        return Ok(balance);
    }
    if delegate != Some(*authority) {
        return Ok(0);
    }
    Ok(balance.min(amount(&info["delegatedAmount"], "delegated")?))
}

impl Rpc {
    /// [`spendable`] of the token account `account` at `c`; `None` when it does not
    /// exist or is not a token account.
    pub async fn escrow_spendable(
        &self,
        account: &Pubkey,
        authority: &Pubkey,
        mint: &Pubkey,
        c: Commitment,
    ) -> Result<Option<u64>, ChainError> {
        const M: &str = "getAccountInfo";
        let v = self
            .call(
                M,
                serde_json::json!([account.to_string(), {"encoding": "jsonParsed", "commitment": commitment_str(c)}]),
            )
            .await?;
        let info = &v["value"]["data"]["parsed"]["info"];
        if v["value"].is_null() || info.is_null() {
            return Ok(None);
        }
        spendable(info, authority, mint)
            .map(Some)
            .map_err(|message| ChainError::Decode { method: M, message })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pubkey::Keypair;

    fn account(
        owner: &Pubkey,
        mint: &Pubkey,
        balance: u64,
        delegate: Option<(&Pubkey, u64)>,
        state: &str,
    ) -> Value {
        let mut v = json!({
            "mint": mint.to_string(), "owner": owner.to_string(), "state": state,
            "tokenAmount": {"amount": balance.to_string(), "decimals": 6},
        });
        if let Some((d, n)) = delegate {
            v["delegate"] = json!(d.to_string());
            v["delegatedAmount"] = json!({"amount": n.to_string(), "decimals": 6});
        }
        v
    }

    #[test]
    fn the_authority_may_spend_what_is_delegated_to_it_and_no_more() {
        let (tenant, authority, mint) = (
            Keypair::generate().pubkey(),
            Keypair::generate().pubkey(),
            Keypair::generate().pubkey(),
        );
        let other = Keypair::generate().pubkey();
        let ok = |v: Value| spendable(&v, &authority, &mint).unwrap();
        // Delegated beyond the balance: the balance; below it: the allowance left.
        assert_eq!(
            ok(account(
                &tenant,
                &mint,
                500,
                Some((&authority, u64::MAX)),
                "initialized"
            )),
            500
        );
        assert_eq!(
            ok(account(
                &tenant,
                &mint,
                500,
                Some((&authority, 120)),
                "initialized"
            )),
            120
        );
        // Revoked, delegated elsewhere, frozen, another mint: nothing.
        assert_eq!(ok(account(&tenant, &mint, 500, None, "initialized")), 0);
        assert_eq!(
            ok(account(&tenant, &mint, 500, Some((&other, 500)), "initialized")),
            0
        );
        assert_eq!(
            ok(account(&tenant, &mint, 500, Some((&authority, 500)), "frozen")),
            0
        );
        assert_eq!(
            ok(account(
                &tenant,
                &other,
                500,
                Some((&authority, 500)),
                "initialized"
            )),
            0
        );
        // An account the authority owns itself: all of it.
        assert_eq!(ok(account(&authority, &mint, 500, None, "initialized")), 500);
        // Not a token account's fields: a clear error, not a guess.
        assert!(spendable(&json!({"owner": tenant.to_string()}), &authority, &mint).is_err());
    }
}
