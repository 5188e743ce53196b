//! Wall-clock helpers. Status timestamps are whole seconds in RFC 3339, so writing the
//! same state twice writes the same bytes.

use k8s_openapi::jiff::Timestamp;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    Timestamp::now().as_second()
}

/// RFC 3339 text of a Unix second (`2026-11-25T12:00:00Z`).
pub fn format(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Parses RFC 3339 text into Unix seconds.
pub fn parse(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_whole_seconds() {
        assert_eq!(super::format(1_764_072_000), "2025-11-25T12:00:00Z");
        assert_eq!(super::parse("2025-11-25T12:00:00Z"), Some(1_764_072_000));
        assert_eq!(super::parse("yesterday"), None);
    }
}
