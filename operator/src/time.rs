//! Wall-clock helpers. Status timestamps are whole seconds in RFC 3339, so writing the
//! same state twice writes the same bytes.

use k8s_openapi::jiff::Timestamp;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    Timestamp::now().as_second()
}

/// Milliseconds since the Unix epoch: the verifier's clock. A challenge's round trip is
/// judged against a band in milliseconds, so whole seconds would hand a node up to a
/// second of slack the band never granted (and cost an honest one as much).
pub fn now_millis() -> u64 {
    u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0)
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

    #[test]
    fn the_verifiers_clock_has_milliseconds() {
        // Two readings in one second differ in their milliseconds; whole seconds ×1000
        // would always end in 000.
        let seen: std::collections::BTreeSet<u64> = (0..200)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_micros(1500));
                super::now_millis() % 1000
            })
            .collect();
        assert!(seen.len() > 50, "milliseconds seen: {seen:?}");
        let (s, ms) = (super::now(), super::now_millis());
        assert!(
            ms / 1000 >= u64::try_from(s).expect("after 1970"),
            "{ms} ms vs {s} s"
        );
    }
}
