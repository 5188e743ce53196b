//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info,kube=warn`).
//!
//! Plain text for people, or with `--log-json` (the charts' default) JSON lines for log
//! pipelines: one object per line with `timestamp` (RFC 3339), `level`, `target`,
//! `fields` (the event's fields, `message` among them), and, inside a span, `span` (the
//! current one, its name and fields) and `spans` (root to current). The operator, the
//! pull-mode agent and the e2e operator process all start logging here.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter when `RUST_LOG` is unset: kube's own chatter only from warnings up.
const DEFAULT_FILTER: &str = "info,kube=warn";

/// Installs the global subscriber; plain text, or JSON lines when `json`.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = subscriber(json, filter, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing to `writer` (tests give it a buffer).
pub fn subscriber<W>(json: bool, filter: EnvFilter, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        // No ANSI colours: escape codes inside JSON strings only garble the pipeline.
        Box::new(
            builder
                .json()
                .with_ansi(false)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        )
    } else {
        Box::new(builder.finish())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::MakeWriter;

    /// A writer into a shared buffer, so the test reads what the subscriber wrote.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn capture(json: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let sub = super::subscriber(json, EnvFilter::new("debug"), buf.clone());
        tracing::subscriber::with_default(sub, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    fn log_some() {
        tracing::info!(provider = "p-1", gpus = 4, "placed");
        let span = tracing::info_span!("reconcile", job = "team-a/train");
        let _in = span.enter();
        tracing::warn!(error = "boom \"quoted\"", "a message\nover two lines");
        tracing::debug!("inside");
    }

    #[test]
    fn log_json_writes_one_json_object_per_line() {
        let out = capture(true, log_some);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "one line per event, newlines escaped:\n{out}");
        let objs: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        for o in &objs {
            assert!(o["timestamp"].as_str().is_some_and(|t| t.contains('T')), "{o}");
            assert_eq!(o["target"], "gpufed_operator::telemetry::tests", "{o}");
        }
        assert_eq!(objs[0]["level"], "INFO");
        assert_eq!(objs[0]["fields"]["message"], "placed");
        assert_eq!(objs[0]["fields"]["provider"], "p-1");
        assert_eq!(objs[0]["fields"]["gpus"], 4);
        assert!(objs[0].get("span").is_none(), "outside any span: {}", objs[0]);
        assert_eq!(objs[1]["level"], "WARN");
        assert_eq!(objs[1]["fields"]["message"], "a message\nover two lines");
        assert_eq!(objs[1]["fields"]["error"], "boom \"quoted\"");
        assert_eq!(objs[1]["span"]["name"], "reconcile");
        assert_eq!(objs[1]["span"]["job"], "team-a/train");
        assert_eq!(objs[1]["spans"][0]["name"], "reconcile");
        assert_eq!(objs[2]["level"], "DEBUG");
    }

    #[test]
    fn plain_text_is_not_json() {
        let out = capture(false, log_some);
        assert!(out.contains("placed") && out.contains("reconcile"), "{out}");
        assert!(
            out.lines().all(|l| serde_json::from_str::<Value>(l).is_err()),
            "{out}"
        );
    }
}
