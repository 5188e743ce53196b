//! Pure output helpers: output formats, aligned tables, kubectl-style ages, and JSON /
//! YAML documents. No I/O.

use std::borrow::Cow;

use serde::Serialize;

use crate::error::{Error, Result};

/// Output format of the read commands (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for humans.
    #[default]
    Table,
    /// JSON: a kubectl-style `List` of the objects (`providers`, `jobs`) or the report.
    Json,
    /// YAML, same content as JSON.
    Yaml,
}

/// What a cell shows when there is nothing to show.
pub const NONE: &str = "-";

/// A table: a header row and data rows, rendered with columns aligned like kubectl's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// Column headers (upper case by convention).
    pub headers: Vec<String>,
    /// Rows; each has as many cells as there are headers.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers and no rows.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Renders the table, three spaces between columns, no trailing spaces, one line per
    /// row, ending in a newline. Control characters in cells are escaped ([`one_line`]).
    pub fn render(&self) -> String {
        let lines: Vec<Vec<Cow<'_, str>>> = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|row| row.iter().map(|cell| one_line(cell)).collect())
            .collect();
        let mut widths: Vec<usize> = Vec::new();
        for row in &lines {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(slot) => *slot = (*slot).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut out = String::new();
        for row in &lines {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("   ");
                }
                line.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `cell` on one line: control characters escaped as Rust writes them (`\n`, `\t`,
/// `\u{1b}`). Cells carry free text from the cluster — a change-cause annotation, a
/// condition's message — whose newline would split a row, and whose escape sequences
/// would drive the terminal.
fn one_line(cell: &str) -> Cow<'_, str> {
    if !cell.chars().any(char::is_control) {
        return Cow::Borrowed(cell);
    }
    let mut out = String::with_capacity(cell.len() + 8);
    for c in cell.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// kubectl's human-readable duration (`apimachinery/pkg/util/duration.HumanDuration`):
/// `45s`, `3m20s`, `95m`, `5h4m`, `30h`, `3d2h`, `40d`, `2y10d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        with(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        with(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        with(d, "d", h % 24, "h")
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        with(d / 365, "y", d % 365, "d")
    } else {
        format!("{}y", d / 365)
    }
}

/// Parses RFC 3339 text into Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Age of an RFC 3339 instant at `now` (Unix seconds), or [`NONE`].
pub fn age_of(time: Option<&str>, now: i64) -> String {
    time.and_then(parse_time)
        .map_or_else(|| NONE.to_owned(), |t| human_duration(now - t))
}

/// Age of an object's creation timestamp at `now`.
pub fn age_of_meta(meta: &kube::api::ObjectMeta, now: i64) -> String {
    meta.creation_timestamp
        .as_ref()
        .map_or_else(|| NONE.to_owned(), |t| human_duration(now - t.0.as_second()))
}

/// Wall-clock now, in Unix seconds.
pub fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// `value` as pretty JSON or YAML, ending in a newline. `Table` is answered as YAML
/// (for manifests, which have no table form).
pub fn document<T: Serialize + ?Sized>(value: &T, format: Format) -> Result<String> {
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Output(e.to_string())),
        Format::Yaml | Format::Table => {
            serde_yaml::to_string(value).map_err(|e| Error::Output(e.to_string()))
        }
    }
}

/// A kubectl-style `List` of objects (what `kubectl get -o json` prints for several).
pub fn list<T: Serialize>(items: &[T]) -> Result<serde_json::Value> {
    let items = items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Output(e.to_string()))?;
    Ok(serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    }))
}

/// Groups the digits of a count in thousands (`86400` → `86,400`).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&["NAME", "PHASE"]);
        t.push(vec!["a-long-name".into(), "Running".into()]);
        t.push(vec!["b".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "NAME          PHASE\na-long-name   Running\nb             -\n"
        );
    }

    #[test]
    fn control_characters_stay_in_their_cell() {
        let mut t = Table::new(&["REVISION", "CHANGE-CAUSE"]);
        t.push(vec!["1".into(), "a\nb".into()]);
        let text = t.render();
        assert_eq!(text.lines().count(), 2, "header and one row: {text:?}");
        assert_eq!(text, "REVISION   CHANGE-CAUSE\n1          a\\nb\n");
        // Tabs, carriage returns and terminal escapes too; other text is left alone.
        let mut t = Table::new(&["MESSAGE", "X"]);
        t.push(vec!["\t\r\u{1b}[31mred é".into(), "y".into()]);
        assert_eq!(
            t.render(),
            "MESSAGE               X\n\\t\\r\\u{1b}[31mred é   y\n"
        );
    }

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (200, "3m20s"),
            (300, "5m"),
            (95 * 60, "95m"),
            (5 * 3600 + 4 * 60, "5h4m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 2 * 3600, "3d2h"),
            (40 * 86_400, "40d"),
            (740 * 86_400, "2y10d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (secs, text) in cases {
            assert_eq!(human_duration(secs), text, "{secs}s");
        }
    }

    #[test]
    fn ages_and_counts() {
        let t = parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(age_of(Some("2026-01-01T00:00:00Z"), t + 90), "90s");
        assert_eq!(age_of(None, t), NONE);
        assert_eq!(age_of(Some("yesterday"), t), NONE);
        assert_eq!(thousands(86_400), "86,400");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn documents() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(document(&v, Format::Json).unwrap(), "{\n  \"a\": 1\n}\n");
        assert_eq!(document(&v, Format::Yaml).unwrap(), "a: 1\n");
        let l = list(&[v]).unwrap();
        assert_eq!(l["kind"], "List");
        assert_eq!(l["items"][0]["a"], 1);
    }
}
