//! Settlement in the operator: metering → journal (ConfigMaps) → batches on Solana, and
//! each job's `status.billing`.
//!
//! One task, active only while this process holds the Lease. Each round:
//! observe (jobs, providers, tenants' escrow annotations) → meter (pure, [`meter`]) →
//! append to the journal (persisted before anything else) → one settler round (the pure
//! machine's actions against the RPC node) → billing status of jobs whose numbers moved.
//! The chain being down only grows the backlog; jobs never wait on any of this.

pub mod billing;
pub mod guard;
mod memory;
pub mod meter;
mod payouts;
mod retain;
pub mod store;
pub mod store_parts;
mod surface;
mod unmetered;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpufed_chain::{ChainError, Keypair, Pubkey, Rpc, SettlementAccounts, Settler, SettlerConfig};
use gpufed_settlement::{Commitment, MachineConfig, PlanConfig};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::context::Context;
use meter::{MeterConfig, from_base_units, job_records};
use store::ConfigMapStore;

/// Namespace annotation naming the tenant's escrow token account (delegated to the
/// settlement authority).
pub const ESCROW_ANNOTATION: &str = "gpufed.io/escrow-account";

/// Settlement settings (from flags).
#[derive(Debug, Clone)]
pub struct SettlementConfig {
    /// Solana JSON-RPC URL.
    pub rpc_url: String,
    /// Settlement authority keypair file (mounted read-only from a Secret).
    pub keypair: PathBuf,
    /// Mint of the settlement token.
    pub mint: String,
    /// Decimals of the mint, if given (else recorded in the journal, else from the chain).
    pub mint_decimals: Option<u8>,
    /// Commitment at which a batch counts as settled.
    pub commitment: Commitment,
    /// Period of settlement rounds.
    pub interval: Duration,
    /// Smallest live metering slice.
    pub meter_slice: Duration,
    /// Live metering lag behind the provider heartbeat.
    pub meter_lag: Duration,
    /// Namespace of the journal ConfigMaps.
    pub namespace: String,
    /// Hold new jobs of tenants that cannot be charged (else only report them).
    pub hold_on_shortfall: bool,
}

/// Runs settlement until shutdown; idles while not leader. What paces payout-account creations and Events is kept across terms
/// ([`memory::Memory`]): a term ended by a round error is followed by another within
/// seconds.
pub async fn run(ctx: Arc<Context>, cfg: SettlementConfig, shutdown: watch::Receiver<bool>) {
    let memory = Arc::new(tokio::sync::Mutex::new(memory::Memory::default()));
    crate::lease::per_term(&ctx.leadership, "settlement", shutdown, |mut rx, term| {
        let (ctx, cfg, memory) = (ctx.clone(), cfg.clone(), memory.clone());
        async move {
            let result = memory::with_memory(&memory, async |m: &mut memory::Memory| {
                session(&ctx, &cfg, &mut rx, term, m).await
            })
            .await;
            if let Err(e) = &result {
                ctx.set_settlement_paused(Some(e.to_string()));
            }
            result
        }
    })
    .await;
}

/// One leadership term: open the journal (resolving what was in flight), then rounds.
async fn session(
    ctx: &Context,
    cfg: &SettlementConfig,
    shutdown: &mut watch::Receiver<bool>,
    term: u64,
    memory: &mut memory::Memory,
) -> Result<(), ChainError> {
    let authority = Keypair::read(&cfg.keypair)?;
    let mint = Pubkey::parse(&cfg.mint)?;
    let rpc = Rpc::new(&cfg.rpc_url, Duration::from_secs(10))?;
    let store = ConfigMapStore::new(ctx.hub.clone(), &cfg.namespace);
    // Metering needs only the mint's decimals, not the chain: with them known (flag, or
    // recorded in the journal by an earlier term) a term starts while the RPC node is
    // down, so usage keeps being journaled (and deletions waiting on it finish); the
    // decimals are checked against the chain once it answers.
    let known = match cfg.mint_decimals {
        Some(d) => Some(d),
        None => store.recorded_decimals(&cfg.mint).await?,
    };
    let (decimals, mut checked) = match known {
        Some(d) => (d, false),
        None => (rpc.mint_decimals(&mint).await?, true),
    };
    let decimals = usable_decimals(&mint, decimals)?;
    let store = store.with_mint(&cfg.mint, decimals);
    let checker = rpc.clone();
    info!(authority = %authority.pubkey(), %mint, decimals, checked, rpc = %cfg.rpc_url, "settlement starting");
    let settler_cfg = SettlerConfig {
        plan: PlanConfig {
            // Keeps the header ConfigMap (4 batches of record ids) under 1 MiB.
            max_records_per_batch: 2048,
            ..Default::default()
        },
        machine: MachineConfig {
            commitment: cfg.commitment,
            poll_ms: 1_000,
            ..Default::default()
        },
        accounts: SettlementAccounts {
            mint,
            decimals,
            ..Default::default()
        },
    };
    let mut settler = Settler::open(rpc, authority, store, settler_cfg).await?;
    let meter_cfg = MeterConfig {
        slice: cfg.meter_slice.as_secs().max(1),
        lag: cfg.meter_lag.as_secs(),
        decimals,
    };
    let mut retainer = retain::Retainer::new(gpufed_settlement::Retention::default());
    while ctx.leadership.holds(term) && !*shutdown.borrow() {
        if !checked {
            checked = check_decimals(&checker, &mint, decimals).await?;
        }
        round(
            ctx,
            &mut settler,
            &meter_cfg,
            memory,
            &mut retainer,
            cfg.hold_on_shortfall,
        )
        .await?;
        ctx.set_settlement_paused(None);
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(cfg.interval) => {}
        }
    }
    Ok(())
}

/// Fewest decimals of a settlement mint: prices carry up to 6 decimal places (micro-units
/// per GPU-hour), and a record's amount follows from its price in base units, so a mint
/// with fewer would cut every price before it is multiplied (1.5 per GPU-hour billed as
/// 1 in a mint of 0 decimals, 0.5 as nothing at all).
pub const MIN_MINT_DECIMALS: u8 = 6;
/// Most decimals of a settlement mint (beyond them a u64 amount holds less than 19 tokens).
pub const MAX_MINT_DECIMALS: u8 = 18;

/// `decimals`, if settlement can bill exactly in a mint with them; a clear error otherwise.
pub fn usable_decimals(mint: &Pubkey, decimals: u8) -> Result<u8, ChainError> {
    if (MIN_MINT_DECIMALS..=MAX_MINT_DECIMALS).contains(&decimals) {
        return Ok(decimals);
    }
    Err(ChainError::Config(format!(
        "settlement mint {mint} has {decimals} decimals: prices are billed exactly only in a mint of          {MIN_MINT_DECIMALS} to {MAX_MINT_DECIMALS} decimals (prices carry up to 6 decimal places)"
    )))
}

/// Whether the chain confirmed the decimals metering uses (`false`: not reachable yet);
/// a different answer stops settlement, since every amount would be off by powers of ten.
async fn check_decimals(rpc: &Rpc, mint: &Pubkey, decimals: u8) -> Result<bool, ChainError> {
    match rpc.mint_decimals(mint).await {
        Ok(d) if d == decimals => Ok(true),
        Ok(d) => Err(ChainError::Config(format!(
            "mint {mint} has {d} decimals on chain, but the journal meters in {decimals} \
             (--settlement-mint-decimals or the journal's {} annotation)",
            store::DECIMALS_ANNOTATION
        ))),
        Err(e) if e.is_transient() => Ok(false),
        Err(e) => Err(e),
    }
}

async fn round(
    ctx: &Context,
    settler: &mut Settler<ConfigMapStore>,
    meter_cfg: &MeterConfig,
    memory: &mut memory::Memory,
    retainer: &mut retain::Retainer,
    hold: bool,
) -> Result<(), ChainError> {
    let now = crate::time::now();
    let jobs = ctx.jobs.state();
    let providers = ctx.providers.state();
    // Each provider's last heartbeat, looked up once per job below.
    let heartbeats: BTreeMap<String, Option<i64>> = providers
        .iter()
        .map(|p| {
            let last = p
                .status
                .as_ref()
                .and_then(|s| s.last_heartbeat_time.as_deref())
                .and_then(crate::time::parse);
            (p.name_any(), last)
        })
        .collect();
    let heartbeat = |name: &str| heartbeats.get(name).copied().flatten();
    // Meter, then persist, before anything else.
    let meterable: Vec<_> = jobs
        .iter()
        .filter(|j| !j.metadata.uid.as_deref().is_some_and(|uid| retainer.forgot(uid)))
        .cloned()
        .collect();
    let records: Vec<_> = meterable
        .iter()
        .flat_map(|j| job_records(j, settler.journal(), heartbeat, now, meter_cfg))
        .collect();
    // job_records yields only what the journal lacks, so these are all new.
    let metered: u64 = records.iter().map(|r| r.gpu_seconds).sum();
    if settler.append(records).await? > 0 {
        ctx.metrics.metered_gpu_seconds_total.inc_by(metered);
    }
    // What the journal still lacks and cannot be metered, with the heartbeats and clock it
    // was metered with (a refused live slice included), told on its job.
    unmetered::tell(
        ctx,
        &mut memory.unmetered_told,
        settler.journal(),
        &meterable,
        heartbeat,
        now,
        meter_cfg,
    );

    let mut accounts = settler_accounts(ctx, settler, &providers).await;
    payouts::ensure_payouts(
        settler,
        &mut accounts,
        &mut memory.payouts,
        crate::time::now_millis(),
    )
    .await;
    settler.set_accounts(accounts);
    let report = settler.round().await?;
    // An account found or created earlier and reported unpaid now (closed by its owner,
    // typically) is looked up again, and created again if missing: paced, and at most
    // `payouts::MAX_LOSSES` times ([`payouts`]).
    payouts::after_round(settler, &mut memory.payouts, &report);
    let m = &ctx.metrics;
    match (&report.paused, m.settlement_paused.get()) {
        (Some(why), 0) => error!(reason = %why, "settlement waits"),
        (None, 1) => info!("settlement resumes: the RPC node keeps transaction history"),
        _ => {}
    }
    surface::record(m, &report);
    // The settler logged each provider's reason when it changed; the Event outlives it.
    let reasons = memory.payouts.reasons(&report, &settler.config().accounts);
    surface::tell_payouts(ctx, &mut memory.payouts_told, &report, &reasons, &providers);
    let live: BTreeSet<&str> = jobs.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();
    let pruned = retainer.run(ctx, settler, &live).await?;
    m.settlement_pruned_records_total.inc_by(pruned as u64);
    guard_tenants(ctx, settler.journal()).await;
    let mut held = BTreeMap::new();
    for s in &report.shortfalls {
        warn!(tenant = %s.tenant, needed = s.needed, available = s.available,
              "escrow cannot cover the next batch; tenant's records wait");
        held.insert(
            s.tenant.clone(),
            format!(
                "escrow of namespace {} lets the settlement authority spend {} but its unsettled usage needs {}",
                s.tenant,
                from_base_units(s.available, meter_cfg.decimals),
                from_base_units(s.needed, meter_cfg.decimals)
            ),
        );
    }
    for t in settler.journal().pending_iter().map(|r| &r.tenant) {
        if !accounts_escrow(settler, t) {
            held.entry(t.clone()).or_insert_with(|| {
                format!(
                    "namespace {t} has no valid {ESCROW_ANNOTATION} annotation: its usage cannot be charged"
                )
            });
        }
    }
    if hold && let Ok(mut h) = ctx.held_tenants.write() {
        *h = held;
    }
    billing::update_billing(ctx, settler.journal(), &jobs, meter_cfg.decimals).await;
    Ok(())
}

/// Escrows from namespace annotations (tenants with unsettled records), payout wallets
/// from the providers' specs.
async fn settler_accounts(
    ctx: &Context,
    settler: &Settler<ConfigMapStore>,
    providers: &[Arc<gpufed_api::GpuProvider>],
) -> SettlementAccounts {
    let mut accounts = SettlementAccounts {
        mint: settler_mint(settler),
        decimals: settler_decimals(settler),
        ..Default::default()
    };
    let tenants = tenants_to_pay(settler.journal());
    let namespaces: Api<Namespace> = Api::all(ctx.hub.clone());
    for t in tenants {
        let escrow = match namespaces.get_opt(&t).await {
            Ok(Some(ns)) => ns.annotations().get(ESCROW_ANNOTATION).cloned(),
            Ok(None) => None,
            Err(e) => {
                warn!(tenant = %t, error = %e, "cannot read tenant namespace");
                None
            }
        };
        match escrow.as_deref().map(Pubkey::parse) {
            Some(Ok(k)) => {
                accounts.escrows.insert(t, k);
            }
            Some(Err(e)) => warn!(tenant = %t, error = %e, "invalid {ESCROW_ANNOTATION} annotation"),
            None => warn!(tenant = %t, "namespace has no {ESCROW_ANNOTATION} annotation; its usage waits"),
        }
    }
    for p in providers {
        match Pubkey::parse(&p.spec.payout_wallet) {
            Ok(w) => {
                accounts.payout_wallets.insert(p.name_any(), w);
            }
            Err(e) => warn!(provider = %p.name_any(), error = %e, "invalid payout wallet"),
        }
    }
    accounts
}

/// Tenants whose escrows a transaction may still draw: those of records not in a batch
/// yet, and those of batches in flight — a batch lost with a dropped slot is re-signed
/// (after its blockhash expired) with the same transfers, possibly by an operator started
/// after all of that tenant's records were batched.
fn tenants_to_pay(journal: &gpufed_settlement::Journal) -> BTreeSet<String> {
    let pending = journal.pending_iter().map(|r| r.tenant.clone());
    let in_flight = journal
        .in_flight()
        .flat_map(|b| b.transfers.iter().map(|t| t.tenant.clone()));
    pending.chain(in_flight).collect()
}

/// Keeps [`guard::FINALIZER`] on exactly the namespaces that hold ComputeJobs or usage
/// not settled yet. Only from complete caches: a namespace missing from a cache still
/// being listed would be released while it has jobs. The jobs are read after the
/// namespaces (not the round's snapshot, taken before its chain calls): a job created
/// since is seen, so its namespace is not released under it.
async fn guard_tenants(ctx: &Context, journal: &gpufed_settlement::Journal) {
    if !(ctx.jobs_synced.is_synced() && ctx.namespaces_synced.is_synced()) {
        return;
    }
    let namespaces = ctx.namespaces.state();
    let billable = billable_tenants(journal, &ctx.jobs.state());
    let changes = guard::plan(namespaces.iter().map(Arc::as_ref), &billable);
    guard::apply(&ctx.hub, &changes).await;
}

/// Namespaces that may still be billed: those with ComputeJobs (their next usage, or the
/// final usage of one being deleted, is metered later) and those of [`tenants_to_pay`].
fn billable_tenants(
    journal: &gpufed_settlement::Journal,
    jobs: &[Arc<gpufed_api::ComputeJob>],
) -> BTreeSet<String> {
    let mut out = tenants_to_pay(journal);
    out.extend(jobs.iter().filter_map(|j| j.namespace()));
    out
}

fn accounts_escrow(s: &Settler<ConfigMapStore>, tenant: &str) -> bool {
    s.config().accounts.escrows.contains_key(tenant)
}

fn settler_mint(s: &Settler<ConfigMapStore>) -> Pubkey {
    s.config().accounts.mint
}

fn settler_decimals(s: &Settler<ConfigMapStore>) -> u8 {
    s.config().accounts.decimals
}

#[cfg(test)]
#[path = "tenant_tests.rs"]
mod tenant_tests;
