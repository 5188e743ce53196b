//! I/O of `rollout status|restart|history|undo` (the pure parts: [`crate::rollout`],
//! [`crate::history`]).

use super::follow::{Step, follow};
use super::{emit, timeout_flag};
use crate::cli::{Global, RolloutCommand, RolloutHistoryArgs, RolloutStatusArgs, RolloutUndoArgs};
use crate::error::{Error, Result};
use crate::history::{self, Undo};
use crate::output::{Format, document, list, now};
use crate::rollout;
use crate::session::Session;

/// Rollbacks tried before giving up on a service that keeps changing.
const UNDO_TRIES: u32 = 3;

/// Runs one `rollout` subcommand.
pub(super) async fn run(g: &Global, command: RolloutCommand) -> Result<()> {
    match command {
        RolloutCommand::Status(args) => status_cmd(g, &args).await,
        RolloutCommand::Restart { service } => {
            let session = Session::connect(g).await?;
            let patch = rollout::restart_patch(&gpufed_operator::time::format(now()));
            let patched = session.patch_service(&service, &patch).await?;
            match g.output {
                Format::Table => emit(&format!("computeservice.gpufed.io/{service} restarted\n")),
                f => emit(&document(&patched, f)?),
            }
        }
        RolloutCommand::Pause { service } => pause_cmd(g, &service, true).await,
        RolloutCommand::Resume { service } => pause_cmd(g, &service, false).await,
        RolloutCommand::History(args) => history_cmd(g, &args).await,
        RolloutCommand::Undo(args) => undo_cmd(g, &args).await,
    }
}

/// `rollout status`: the state line, once or each time it changes, until the rollout is
/// done (`Ok`), stuck or past `--timeout` (errors).
async fn status_cmd(g: &Global, args: &RolloutStatusArgs) -> Result<()> {
    if g.output != Format::Table {
        return Err(Error::Flag {
            flag: "--output".into(),
            message: "rollout status prints progress lines only (read the object with kubectl get -o json)"
                .into(),
        });
    }
    let timeout = timeout_flag(args.timeout.as_deref())?;
    let session = Session::connect(g).await?;
    let service = format!("{}/{}", session.namespace, args.service);
    follow(
        || session.service(&args.service),
        |svc| match rollout::state(&svc) {
            rollout::State::Done(line) => Step::Done(line),
            rollout::State::Stuck { reason, message } => Step::Fail(Error::RolloutStuck {
                service: service.clone(),
                reason,
                message,
            }),
            rollout::State::Waiting(line) => Step::Line(line),
        },
        !args.watch,
        timeout,
        |seconds, last| Error::RolloutTimeout {
            service: service.clone(),
            seconds,
            last,
        },
    )
    .await
}

/// `rollout pause|resume`: sets `spec.paused`; refused (exit 1) when it already is so,
/// as kubectl refuses for a Deployment.
async fn pause_cmd(g: &Global, service: &str, paused: bool) -> Result<()> {
    let session = Session::connect(g).await?;
    if session.service(service).await?.spec.paused == paused {
        return Err(Error::PauseUnchanged {
            service: format!("{}/{service}", session.namespace),
            paused,
        });
    }
    let patched = session
        .patch_service(service, &rollout::pause_patch(paused))
        .await?;
    let done = if paused { "paused" } else { "resumed" };
    match g.output {
        Format::Table => emit(&format!("computeservice.gpufed.io/{service} {done}\n")),
        f => emit(&document(&patched, f)?),
    }
}

/// `rollout history`: the table of revisions, one revision's template with
/// `--revision`; with `-o json|yaml`, the [`history::Entry`]s (not the ControllerRevisions):
/// a kubectl-style `List` of them, or the one of `--revision`.
async fn history_cmd(g: &Global, args: &RolloutHistoryArgs) -> Result<()> {
    let session = Session::connect(g).await?;
    let svc = session.service(&args.service).await?;
    let revisions = session.service_revisions(&args.service).await?;
    let entries = history::entries(&svc, &revisions);
    if let Some(n) = args.revision {
        let e = history::pick(&args.service, &entries, n)?;
        let body = serde_json::json!({ "spec": e.template });
        return match g.output {
            Format::Table => {
                let yaml = document(&body, Format::Yaml)?;
                emit(&format!(
                    "computeservice.gpufed.io/{} with revision #{n}\n{yaml}",
                    args.service
                ))
            }
            f => emit(&document(e, f)?),
        };
    }
    match g.output {
        Format::Table => emit(&history::render(&args.service, &entries, now())),
        f => emit(&document(&list(&entries)?, f)?),
    }
}

/// `rollout undo`: the rollback patch, guarded by the service's resourceVersion; read
/// and planned again when the service changed meanwhile.
async fn undo_cmd(g: &Global, args: &RolloutUndoArgs) -> Result<()> {
    let session = Session::connect(g).await?;
    let to = (args.to_revision != 0).then_some(args.to_revision);
    for _ in 0..UNDO_TRIES {
        let svc = session.service(&args.service).await?;
        let revisions = session.service_revisions(&args.service).await?;
        let entries = history::entries(&svc, &revisions);
        let (patched, line) = match history::undo(&svc, &entries, to)? {
            Undo::AlreadyCurrent { to } => (
                svc,
                format!("skipped rollback (current template already matches revision {to})"),
            ),
            Undo::Patch { to, patch } => match session.json_patch_service(&args.service, &patch).await {
                Ok(patched) => (patched, format!("rolled back to revision {to}")),
                // A failed `test` of the resourceVersion is a plain 422, as a template the
                // schema refuses: read again to tell them apart.
                Err(Error::Api { what, message, code }) if matches!(code, Some(409 | 422)) => {
                    let now = session.service(&args.service).await?;
                    if !history::undo_conflict(code, &message, &svc, &now) {
                        return Err(Error::Api { what, message, code });
                    }
                    tracing::debug!(error = %message, "the service changed while rolling back; again");
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        return match g.output {
            Format::Table => emit(&format!("computeservice.gpufed.io/{} {line}\n", args.service)),
            f => emit(&document(&patched, f)?),
        };
    }
    Err(Error::UndoConflict {
        service: format!("{}/{}", session.namespace, args.service),
        tries: UNDO_TRIES,
    })
}
