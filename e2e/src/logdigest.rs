//! The error lines of a failed test's logs, printed with its failure: CI keeps only the test
//! output, not the run directory, and a timeout alone rarely says which component refused.

use std::path::{Path, PathBuf};

/// Most error lines shown per log file, and most characters per line.
const PER_FILE: usize = 8;
const LINE_CHARS: usize = 300;

/// Whether a log line reports an error: klog's `E1205 09:02:10.…` prefix (the Kubernetes
/// components) or a tracing `ERROR`/`WARN` level (our own processes, colored or not).
pub fn is_error_line(line: &str) -> bool {
    is_plain_error_line(&strip_ansi(line))
}

/// [`is_error_line`] of a line without color codes.
fn is_plain_error_line(line: &str) -> bool {
    // Said at every start of a controller-manager without a cloud: never the cause.
    if line.contains("no cloud provider provided") {
        return false;
    }
    let klog = line.len() > 5
        && line.starts_with('E')
        && line.as_bytes()[1..5].iter().all(u8::is_ascii_digit)
        && line.as_bytes()[5] == b' ';
    klog || line
        .split_whitespace()
        .take(3)
        .any(|w| w == "ERROR" || w == "WARN")
}

/// `line` without ANSI color codes; borrowed when it has none (most lines).
fn strip_ansi(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('\u{1b}') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The last `n` error lines of `text`, each without color codes and cut to
/// [`LINE_CHARS`] characters.
pub fn last_errors(text: &str, n: usize) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| is_plain_error_line(l))
        .map(|l| l.chars().take(LINE_CHARS).collect())
        .collect();
    let skip = lines.len().saturating_sub(n);
    lines.drain(..skip);
    lines
}

fn log_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            log_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
}

/// The last error lines of every `*.log` under `run_dir`, by file (files without any are
/// left out); empty when there are none.
pub fn digest(run_dir: &Path) -> String {
    let mut files = Vec::new();
    log_files(run_dir, &mut files);
    files.sort();
    let mut out = String::new();
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let errors = last_errors(&String::from_utf8_lossy(&bytes), PER_FILE);
        if errors.is_empty() {
            continue;
        }
        let name = file.strip_prefix(run_dir).unwrap_or(&file);
        out.push_str(&format!(
            "--- {} (last {} error lines)\n",
            name.display(),
            errors.len()
        ));
        for line in errors {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_errors_and_tracing_warnings_count_info_does_not() {
        assert!(is_error_line(
            "E1205 09:02:40.1 1 factory.go:337] Error scheduling default/one"
        ));
        assert!(!is_error_line("I1205 09:02:40.1 1 scheduler.go:604] bound"));
        assert!(!is_error_line(
            "E1205 11:59:10.1 1 core.go:92] Failed: no cloud provider provided"
        ));
        assert!(!is_error_line("Error: not a klog line"));
        assert!(is_error_line(
            "2026-12-05T09:02:10Z  WARN gpufed_e2e::nodesim: heartbeat failed"
        ));
        assert!(is_error_line(
            "\u{1b}[2m2026-12-05T09:02:10Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m gpufed_operator: boom"
        ));
        assert!(!is_error_line(
            "2026-12-05T09:02:10Z  INFO gpufed: said WARN later in the text"
        ));
    }

    #[test]
    fn keeps_the_last_n_cut_and_without_colors() {
        let long = format!("E0101 00:00:00.0 1 x.go:1] {}", "y".repeat(500));
        let text = format!("E0101 a\nI0101 b\nE0102 c\n{long}\n\u{1b}[31mERROR\u{1b}[0m d\n");
        let last = last_errors(&text, 3);
        assert_eq!(last.len(), 3);
        assert_eq!(last[0], "E0102 c");
        assert_eq!(last[1].chars().count(), LINE_CHARS);
        assert_eq!(last[2], "ERROR d");
        assert!(last_errors("I0101 fine\n", 3).is_empty());
    }

    #[test]
    fn digest_walks_the_run_dir_and_names_each_file() {
        let dir = std::env::temp_dir().join(format!("gpufed-digest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs")).expect("dir");
        std::fs::write(
            dir.join("logs/kube-scheduler.log"),
            "I0101 ok\nE0101 00:00:00 bind failed\n",
        )
        .expect("write");
        std::fs::write(dir.join("logs/kube-apiserver.log"), "I0101 quiet\n").expect("write");
        let d = digest(&dir);
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            d.contains("--- logs/kube-scheduler.log (last 1 error lines)\nE0101 00:00:00 bind failed\n"),
            "{d}"
        );
        assert!(!d.contains("kube-apiserver"), "{d}");
    }
}
