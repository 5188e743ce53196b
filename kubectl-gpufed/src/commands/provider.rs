//! I/O of `provider cordon|uncordon|drain` (the pure part: [`crate::drain`]).

use super::follow::{Step, follow};
use super::{emit, timeout_flag};
use crate::cli::{DrainArgs, Global};
use crate::drain;
use crate::error::{Error, Result};
use crate::output::{Format, document};
use crate::session::Session;

/// `provider cordon|uncordon`: patches the spec, prints kubectl's line (or the object).
pub(super) async fn spec_cmd(g: &Global, action: drain::Action, provider: &str) -> Result<()> {
    let session = Session::connect(g).await?;
    let patched = session.patch_provider(provider, &action.patch()).await?;
    match g.output {
        Format::Table => emit(&action.done_line(provider)),
        f => emit(&document(&patched, f)?),
    }
}

/// `provider drain`: sets `spec.drain`, then (unless `--wait=false`) prints each new
/// state line until the operator reports the provider drained, the drain is undone, or
/// `--timeout` passes.
pub(super) async fn drain_cmd(g: &Global, args: &DrainArgs) -> Result<()> {
    if g.output != Format::Table {
        return Err(Error::Flag {
            flag: "--output".into(),
            message: "provider drain prints progress lines only (read the object with kubectl get -o json)"
                .into(),
        });
    }
    let timeout = timeout_flag(args.timeout.as_deref())?;
    let patch = drain::drain_patch(args.deadline.as_deref())?;
    let session = Session::connect(g).await?;
    let name = args.provider.as_str();
    session.patch_provider(name, &patch).await?;
    emit(&drain::Action::Drain.done_line(name))?;
    if !args.wait {
        return Ok(());
    }
    follow(
        || session.provider(name),
        |p| match drain::state(&p) {
            drain::State::Drained(line) => Step::Done(line),
            drain::State::Cancelled => Step::Fail(Error::DrainCancelled {
                provider: name.to_owned(),
            }),
            drain::State::Draining(line) => Step::Line(line),
        },
        false,
        timeout,
        |seconds, last| Error::DrainTimeout {
            provider: name.to_owned(),
            seconds,
            last,
        },
    )
    .await
}
