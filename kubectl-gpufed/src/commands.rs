//! I/O: each subcommand reads from the hub, renders with the pure modules, and writes to
//! stdout (results) or stderr (progress, notes).

use std::io::Write;

use gpufed_api::pull::BootstrapToken;

use crate::cli::{BillArgs, Cli, Command, Global, ProviderCommand, SubmitArgs, TokenArgs};
use crate::error::{Error, Result};
use crate::output::{Format, document, list, now};
use crate::session::Session;
use crate::{bill, drain, jobs, onchain, providers, submit, token, usage, verify, why};

#[path = "commands/follow.rs"]
mod follow;
use follow::timeout_flag;
#[path = "commands/provider.rs"]
mod provider;
#[path = "commands/rollout.rs"]
mod rollout;

/// `provider token` draws a new token when its id is taken, this many times at most.
const TOKEN_DRAWS: u32 = 3;

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output(e.to_string())),
        _ => Ok(()),
    }
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Submit(args) => submit_cmd(g, &args).await,
        Command::Providers => {
            let session = Session::connect(g).await?;
            let items = session.providers().await?;
            match g.output {
                Format::Table if items.is_empty() => {
                    eprintln!("No GpuProviders found.");
                    Ok(())
                }
                Format::Table => emit(&providers::table(&items, now()).render()),
                f => emit(&document(&list(&items)?, f)?),
            }
        }
        Command::Jobs { all_namespaces } => {
            let session = Session::connect(g).await?;
            let items = session.list_jobs(all_namespaces).await?;
            match g.output {
                Format::Table if items.is_empty() => {
                    let scope = if all_namespaces {
                        "any namespace".to_owned()
                    } else {
                        format!("namespace {}", session.namespace)
                    };
                    eprintln!("No ComputeJobs found in {scope}.");
                    Ok(())
                }
                Format::Table => emit(&jobs::table(&items, all_namespaces, now()).render()),
                f => emit(&document(&list(&items)?, f)?),
            }
        }
        Command::Why { job } => {
            let session = Session::connect(g).await?;
            let job = session.job(&job).await?;
            // Providers matter only to a job that waits. A tenant may read its jobs but not
            // the cluster-scoped providers: say so, and still show the job's conditions.
            let report = match why::explain(&job, &[], now()) {
                r if !r.waiting => r,
                _ => match session.providers().await {
                    Ok(providers) => {
                        let labels = session
                            .namespace_labels(job.metadata.namespace.as_deref().unwrap_or_default())
                            .await;
                        why::explain_with_labels(&job, &providers, labels.as_ref(), now())
                    }
                    Err(e @ (Error::Api { .. } | Error::CrdsMissing { .. })) => {
                        why::explain_without_providers(&job, e.to_string())
                    }
                    Err(e) => return Err(e),
                },
            };
            match g.output {
                Format::Table => emit(&why::render(&report)),
                f => emit(&document(&report, f)?),
            }
        }
        Command::Usage(args) => {
            let session = Session::connect(g).await?;
            let items = session.list_jobs(args.all_namespaces).await?;
            let report = usage::report(&items, args.by);
            match g.output {
                Format::Table => emit(&usage::render(&report)),
                f => emit(&document(&report, f)?),
            }
        }
        Command::Bill(args) if args.verify => verify_cmd(g, &args).await,
        Command::Bill(args) => {
            let session = Session::connect(g).await?;
            let report = bill::bill(&session.job(&args.job).await?);
            match g.output {
                Format::Table => emit(&bill::render(&report)),
                f => emit(&document(&report, f)?),
            }
        }
        Command::Provider {
            command: ProviderCommand::Token(args),
        } => token_cmd(g, &args).await,
        Command::Provider {
            command: ProviderCommand::Cordon { provider },
        } => provider::spec_cmd(g, drain::Action::Cordon, &provider).await,
        Command::Provider {
            command: ProviderCommand::Uncordon { provider },
        } => provider::spec_cmd(g, drain::Action::Uncordon, &provider).await,
        Command::Provider {
            command: ProviderCommand::Drain(args),
        } => provider::drain_cmd(g, &args).await,
        Command::Rollout { command } => rollout::run(g, command).await,
    }
}

/// `provider token`: a bootstrap token for a pull-mode provider's agent (its Secret in
/// `kube-system`), or with `--revoke` the deletion of every token issued for it (which
/// needs no GpuProvider: a deleted provider's tokens can be revoked too).
async fn token_cmd(g: &Global, args: &TokenArgs) -> Result<()> {
    let provider = args.provider.as_str();
    let agent_namespace = gpufed_api::pull::agent_namespace(provider);
    if args.revoke {
        let session = Session::connect(g).await?;
        let secrets = session
            .delete_token_secrets(&token::revoke_selector(provider))
            .await?;
        let revoked = token::Revoked {
            provider: provider.to_owned(),
            agent_namespace,
            revoked: secrets.len(),
            secrets,
        };
        return match g.output {
            Format::Table => emit(&token::render_revoked(&revoked)),
            f => emit(&document(&revoked, f)?),
        };
    }
    let ttl = token::ttl_seconds(&args.ttl)?;
    let session = Session::connect(g).await?;
    token::check_pull_mode(&session.provider(provider).await?)?;
    let expiration = token::expiration(now(), ttl)?;
    let mut draws = 0;
    let bootstrap = loop {
        let candidate = BootstrapToken::from_random(&rand::random());
        let manifest = candidate.secret_manifest(provider, &expiration);
        if session.create_token_secret(&manifest).await? {
            break candidate;
        }
        draws += 1;
        if draws == TOKEN_DRAWS {
            return Err(Error::Api {
                what: format!("creating a bootstrap token secret in {}", token::TOKEN_NAMESPACE),
                message: format!("{TOKEN_DRAWS} random token ids were all taken"),
                code: None,
            });
        }
    };
    let issued = token::Issued {
        provider: provider.to_owned(),
        token: bootstrap.bearer(),
        expiration,
        hub_server: token::hub_server(&session.server),
        agent_namespace,
    };
    match g.output {
        Format::Table => {
            let kubeconfig = g.kubeconfig.as_ref().map(|p| p.to_string_lossy().into_owned());
            let ca = token::ca_command(kubeconfig.as_deref(), g.context.as_deref());
            emit(&token::render(&issued, ttl, &ca))
        }
        f => emit(&document(&issued, f)?),
    }
}

/// `bill --verify`: prints the report, then fails if a settled record failed verification.
async fn verify_cmd(g: &Global, args: &BillArgs) -> Result<()> {
    // clap enforces it; kept for callers that build the arguments themselves.
    let Some(url) = args.solana_rpc.as_deref() else {
        return Err(Error::Flag {
            flag: "--solana-rpc".into(),
            message: "--verify needs the Solana RPC URL to verify against".into(),
        });
    };
    let session = Session::connect(g).await?;
    let report = onchain::verify(&session, url, &args.operator_namespace, &args.job).await?;
    match g.output {
        Format::Table => emit(&verify::render(&report))?,
        f => emit(&document(&report, f)?)?,
    }
    report.failure().map_or(Ok(()), Err)
}

async fn submit_cmd(g: &Global, args: &SubmitArgs) -> Result<()> {
    let timeout = timeout_flag(args.timeout.as_deref())?;
    if args.dry_run {
        // A manifest needs no server: without a usable kubeconfig, `-n` or `default`.
        let namespace = match Session::connect(g).await {
            Ok(s) => s.namespace,
            Err(_) => g.namespace.clone().unwrap_or_else(|| "default".into()),
        };
        let job = submit::build(args, &namespace)?;
        return emit(&document(&job, g.output)?);
    }
    let session = Session::connect(g).await?;
    let job = submit::build(args, &session.namespace)?;
    let applied = session.apply_job(&job).await?;
    match g.output {
        Format::Table => emit(&format!(
            "computejob.gpufed.io/{} submitted in namespace {}\n",
            args.name, session.namespace
        ))?,
        f => emit(&document(&applied, f)?)?,
    }
    if args.wait {
        // With -o json|yaml stdout holds exactly the document; the outcome goes to stderr.
        follow::wait(&session, &args.name, timeout, g.output != Format::Table).await?;
    }
    Ok(())
}
