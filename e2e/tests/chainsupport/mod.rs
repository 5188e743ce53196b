//! A real local Solana test validator with a settlement token, tenants' escrows (delegated
//! to the settlement authority) and providers' payout accounts, plus metered records.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_chain::store::MemoryStore;
use gpufed_chain::{Keypair, Pubkey, Rpc, SettlementAccounts, Settler, SettlerConfig, setup};
use gpufed_e2e::Validator;
use gpufed_settlement::{AttemptMeter, Commitment, JobRef, MachineConfig, UsageRecord};

/// Decimals of the test token (like USDC).
pub const DECIMALS: u8 = 6;
/// 2.5 tokens per GPU-hour, in base units.
pub const PRICE: u64 = 2_500_000;

pub struct Chain {
    pub validator: Validator,
    pub rpc: Rpc,
    /// Settlement authority: fee payer, escrow delegate and (in tests) mint authority.
    pub authority: Keypair,
    pub accounts: SettlementAccounts,
    _dir: tempfile::TempDir,
}

impl Drop for Chain {
    fn drop(&mut self) {
        // A failing test keeps its ledger and validator logs: a chain that misbehaved after
        // a restart can only be explained from them.
        let failing = std::thread::panicking();
        if failing || std::env::var_os("GPUFED_KEEP_CHAIN_DIR").is_some() {
            self.validator.stop();
            if let Ok(fresh) = tempfile::tempdir() {
                let keep = std::mem::replace(&mut self._dir, fresh).keep();
                if failing {
                    eprintln!("chain dir kept (test failed): {}", keep.display());
                }
            }
        }
    }
}

impl Chain {
    /// Starts a validator and creates the token, one funded escrow per tenant and one
    /// payout wallet (with its associated token account) per provider.
    pub async fn start(tenants: &[&str], providers: &[&str], escrow_amount: u64) -> Chain {
        let dir = tempfile::tempdir().expect("tempdir");
        if std::env::var_os("GPUFED_KEEP_CHAIN_DIR").is_some() {
            // For a recorded run: the ledger and `validator.out` stay for reading afterwards.
            eprintln!("chain dir (kept): {}", dir.path().display());
        }
        let validator = Validator::start(dir.path()).await.expect("validator starts");
        let rpc = Rpc::new(&validator.rpc_url(), Duration::from_secs(10)).expect("rpc");
        let authority = Keypair::generate();
        setup::airdrop(&rpc, &authority.pubkey(), 100_000_000_000)
            .await
            .expect("airdrop");
        let mint = setup::create_mint(&rpc, &authority, &authority.pubkey(), DECIMALS)
            .await
            .expect("mint");
        let mut escrows = BTreeMap::new();
        for t in tenants {
            let owner = Keypair::generate();
            let escrow = setup::create_escrow(
                &rpc,
                &authority,
                &mint,
                &authority,
                DECIMALS,
                &owner,
                &authority.pubkey(),
                escrow_amount,
                u64::MAX,
            )
            .await
            .expect("escrow");
            escrows.insert(t.to_string(), escrow);
        }
        let mut payout_wallets = BTreeMap::new();
        for p in providers {
            let wallet = Keypair::generate().pubkey();
            // The associated token program checks the address we derived ourselves.
            setup::ensure_associated_account(&rpc, &authority, &wallet, &mint)
                .await
                .expect("payout account");
            payout_wallets.insert(p.to_string(), wallet);
        }
        // Settlement reads escrow balances at finalized commitment: wait until they are,
        // so the first batch is not held for a balance that is merely not final yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        for acct in escrows.values() {
            while rpc
                .token_balance(acct, Commitment::Finalized)
                .await
                .ok()
                .flatten()
                != Some(escrow_amount)
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "escrow {acct} never finalized"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let accounts = SettlementAccounts {
            mint,
            decimals: DECIMALS,
            escrows,
            payout_wallets,
            compute_unit_price: 0,
        };
        Chain {
            validator,
            rpc,
            authority,
            accounts,
            _dir: dir,
        }
    }

    /// Settlement at finalized commitment, polling fast.
    pub fn settler_config(&self) -> SettlerConfig {
        SettlerConfig {
            plan: Default::default(),
            machine: MachineConfig {
                poll_ms: 500,
                query_timeout_ms: 10_000,
                ..Default::default()
            },
            accounts: self.accounts.clone(),
        }
    }

    /// A settler on `store` with [`Self::settler_config`] (a "process" of the tests).
    pub async fn settler(&self, store: MemoryStore) -> Settler<MemoryStore> {
        Settler::open(self.rpc.clone(), self.authority(), store, self.settler_config())
            .await
            .expect("settler opens")
    }

    /// A copy of the authority keypair (the settler owns its own).
    pub fn authority(&self) -> Keypair {
        Keypair::from_json(&self.authority.to_json()).expect("keypair")
    }

    pub async fn payout_balance(&self, provider: &str) -> u64 {
        let acct = self.accounts.payout_account(provider).expect("provider");
        self.rpc
            .token_balance(&acct, Commitment::Finalized)
            .await
            .expect("balance")
            .unwrap_or(0)
    }

    pub async fn escrow_balance(&self, tenant: &str) -> u64 {
        let acct: Pubkey = self.accounts.escrows[tenant];
        self.rpc
            .token_balance(&acct, Commitment::Finalized)
            .await
            .expect("balance")
            .unwrap_or(0)
    }

    /// Successful transactions that touched a provider's payout account.
    pub async fn payout_transactions(&self, provider: &str) -> usize {
        let acct = self.accounts.payout_account(provider).expect("provider");
        let sigs = self
            .rpc
            .signatures_for_address(&acct, Commitment::Finalized)
            .await
            .expect("signatures");
        sigs.iter().filter(|(_, ok)| *ok).count()
    }
}

/// `jobs` jobs per (tenant, provider) pair, each metered in `slices` one-minute slices of
/// 8 GPUs, starting at `t0`.
pub fn records(
    tag: &str,
    tenants: &[&str],
    providers: &[&str],
    jobs: usize,
    slices: u64,
    t0: u64,
) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    for t in tenants {
        for p in providers {
            for j in 0..jobs {
                let job = JobRef {
                    namespace: t.to_string(),
                    name: format!("{tag}-{p}-{j}"),
                    uid: format!("{tag}-{t}-{p}-{j}"),
                };
                let mut meter = AttemptMeter::new(job, 1, p.to_string(), t.to_string(), PRICE);
                for s in 0..slices {
                    let start = t0 + s * 60;
                    out.push(meter.record(start, start + 60, 8).expect("record"));
                }
            }
        }
    }
    out
}

/// Sum of amounts by a key.
pub fn sum_by(records: &[UsageRecord], key: impl Fn(&UsageRecord) -> &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(key(r).to_string()).or_default() += r.amount;
    }
    m
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,gpufed_chain=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Stake set-up: wallets holding the token, plain token accounts, transfers.
impl Chain {
    /// A wallet with SOL for fees and `tokens` base units in its associated token account.
    pub async fn funded_wallet(&self, tokens: u64) -> (Keypair, Pubkey) {
        let wallet = Keypair::generate();
        setup::airdrop(&self.rpc, &wallet.pubkey(), 1_000_000_000)
            .await
            .expect("airdrop");
        let ata = setup::ensure_associated_account(
            &self.rpc,
            &self.authority,
            &wallet.pubkey(),
            &self.accounts.mint,
        )
        .await
        .expect("associated account");
        if tokens > 0 {
            setup::mint_to(
                &self.rpc,
                &self.authority,
                &self.accounts.mint,
                &self.authority,
                &ata,
                tokens,
                DECIMALS,
            )
            .await
            .expect("mint");
        }
        (wallet, ata)
    }

    /// A plain token account of the mint owned by `owner` (a vault, a treasury).
    pub async fn token_account(&self, owner: &Pubkey) -> Pubkey {
        setup::create_token_account(&self.rpc, &self.authority, &self.accounts.mint, owner)
            .await
            .expect("token account")
    }

    /// `TransferChecked` of `amount` from `from`'s associated account to `to`, signed and
    /// paid by `from`; returns the signature once confirmed.
    pub async fn transfer(&self, from: &Keypair, to: &Pubkey, amount: u64) -> String {
        let mint = self.accounts.mint;
        let source = gpufed_chain::programs::associated_token_address(&from.pubkey(), &mint);
        let ix = gpufed_chain::programs::transfer_checked(source, mint, *to, from.pubkey(), amount, DECIMALS);
        setup::send_and_confirm(&self.rpc, &[ix], &[from])
            .await
            .expect("transfer")
    }

    /// A token account's balance at `c` (0 when it does not exist).
    pub async fn balance(&self, account: &Pubkey, c: Commitment) -> u64 {
        self.rpc
            .token_balance(account, c)
            .await
            .expect("balance")
            .unwrap_or(0)
    }
}

/// A stake vault owned by a fresh stake authority, and a treasury for slashes.
pub struct StakeSetup {
    pub authority: Keypair,
    pub vault: Pubkey,
    pub treasury: Pubkey,
}

impl Chain {
    /// Creates the stake authority (with SOL for fees), its vault and a treasury.
    pub async fn stake_setup(&self) -> StakeSetup {
        let authority = Keypair::generate();
        setup::airdrop(&self.rpc, &authority.pubkey(), 2_000_000_000)
            .await
            .expect("airdrop");
        let vault = self.token_account(&authority.pubkey()).await;
        let treasury = self.token_account(&Keypair::generate().pubkey()).await;
        StakeSetup {
            authority,
            vault,
            treasury,
        }
    }

    /// The operator flags that turn on settlement and the Stake controller for `s`, with
    /// both keypairs written into `dir`; `extra` flags follow.
    pub fn stake_flags(&self, s: &StakeSetup, dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
        let settlement_key = dir.join("settlement.json");
        std::fs::write(&settlement_key, self.authority().to_json()).expect("settlement key");
        let stake_key = dir.join("stake.json");
        std::fs::write(&stake_key, s.authority.to_json()).expect("stake key");
        let mint = self.accounts.mint.to_string();
        [
            "--solana-rpc",
            &self.validator.rpc_url(),
            "--settlement-keypair",
            &settlement_key.display().to_string(),
            "--settlement-mint",
            &mint,
            "--settlement-interval",
            "1s",
            "--stake-mint",
            &mint,
            "--stake-vault",
            &s.vault.to_string(),
            "--stake-authority-keypair",
            &stake_key.display().to_string(),
            "--stake-treasury",
            &s.treasury.to_string(),
        ]
        .iter()
        .chain(extra)
        .map(|f| f.to_string())
        .collect()
    }
}

/// Creates a Stake for `provider` in the hub.
pub async fn create_stake(
    hub: &kube::Client,
    name: &str,
    provider: &str,
    amount: &str,
    signature: &str,
    staker: &Pubkey,
) {
    let stake: gpufed_api::Stake = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Stake",
        "metadata": {"name": name},
        "spec": {"provider": provider, "amount": amount, "depositSignature": signature,
                 "stakerWallet": staker.to_string()}
    }))
    .expect("stake manifest");
    kube::Api::<gpufed_api::Stake>::all(hub.clone())
        .create(&kube::api::PostParams::default(), &stake)
        .await
        .expect("stake created");
}
