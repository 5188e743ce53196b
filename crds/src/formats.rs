//! Parsers for the string formats of the specs. The CRD schema already checks the
//! patterns; these turn the strings into numbers for the operator and the placement
//! engine, and refuse what the schema cannot (overflow, zero where it matters).

/// Base units (10^-6) per whole token: amounts and prices have 6 fractional digits.
pub const MICROS_PER_TOKEN: u64 = 1_000_000;

/// A string in a spec that does not have the expected format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not a decimal with at most 6 fractional digits.
    #[error("{0:?} is not a decimal amount with at most 6 fractional digits (e.g. \"2.50\")")]
    Decimal(String),
    /// Not a duration like `90s`, `1h30m`.
    #[error("{0:?} is not a duration made of hours, minutes and seconds (e.g. \"1h30m\")")]
    Duration(String),
    /// Not a memory quantity like `80Gi`.
    #[error("{0:?} is not a memory quantity in Mi, Gi or Ti (e.g. \"80Gi\")")]
    Memory(String),
    /// Not a compute capability like `9.0`.
    #[error("{0:?} is not a compute capability major.minor (e.g. \"9.0\")")]
    ComputeCapability(String),
    /// Not a non-negative Kubernetes quantity like `500m` or `1.5Gi` (its first 64
    /// characters).
    #[error("{0:?} is not a non-negative Kubernetes quantity (e.g. \"500m\", \"1.5Gi\")")]
    Quantity(String),
}

/// Parses a decimal token amount (e.g. `2.50`) into base units (2_500_000).
pub fn parse_decimal(s: &str) -> Result<u64, FormatError> {
    let err = || FormatError::Decimal(s.to_owned());
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (s.contains('.') && !digits(frac)) || frac.len() > 6 {
        return Err(err());
    }
    let whole: u64 = whole.parse().map_err(|_| err())?;
    let frac_micros: u64 = if frac.is_empty() {
        0
    } else {
        let scale = 10u64.pow(6 - frac.len() as u32);
        frac.parse::<u64>().map_err(|_| err())? * scale
    };
    whole
        .checked_mul(MICROS_PER_TOKEN)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(err)
}

/// Formats base units as the shortest decimal string that parses back to them.
pub fn format_decimal(micros: u64) -> String {
    let whole = micros / MICROS_PER_TOKEN;
    let frac = micros % MICROS_PER_TOKEN;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Parses a duration such as `36h`, `1h30m` or `90s` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, FormatError> {
    let err = || FormatError::Duration(s.to_owned());
    if s.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_unit = 0u8; // enforces h, then m, then s
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (rank, factor) = match c {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return Err(err()),
        };
        if number.is_empty() || rank <= last_unit {
            return Err(err());
        }
        let n: u64 = number.parse().map_err(|_| err())?;
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        number.clear();
        last_unit = rank;
    }
    if !number.is_empty() {
        return Err(err());
    }
    Ok(total)
}

/// Parses a memory quantity into MiB: binary `Mi`/`Gi`/`Ti`, or decimal `M`/`G`/`T`
/// (rounded down to whole MiB).
pub fn parse_memory_mib(s: &str) -> Result<u64, FormatError> {
    let err = || FormatError::Memory(s.to_owned());
    const MIB: u128 = 1 << 20;
    let units: [(&str, u128); 6] = [
        ("Mi", MIB),
        ("Gi", MIB << 10),
        ("Ti", MIB << 20),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (num, bytes_per_unit) = units
        .iter()
        .find_map(|(suffix, factor)| s.strip_suffix(suffix).map(|n| (n, *factor)))
        .ok_or_else(err)?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: u128 = num.parse().map_err(|_| err())?;
    u64::try_from(n.checked_mul(bytes_per_unit).ok_or_else(err)? / MIB).map_err(|_| err())
}

// Kubernetes resource quantities of any form (`500m`, `1.5Gi`, `1e3`), exact, for the
// CPU and memory of member nodes and pods; `parse_memory_mib` above reads the spec's
// GPU memory only.
mod quantity;
pub use quantity::{Quantity, Rounding, parse_quantity};

/// Parses a compute capability `major.minor` (e.g. `8.6`): exactly what
/// `COMPUTE_CAPABILITY_PATTERN` admits, 1–2 ASCII digits, a dot, one digit. The operator
/// writes what it parses from a node's label back into the provider's status, where the
/// API server checks that pattern: `100.0` or `+9.0` read as valid here would have every
/// later status write refused.
pub fn parse_compute_capability(s: &str) -> Result<(u8, u8), FormatError> {
    let err = || FormatError::ComputeCapability(s.to_owned());
    let (major, minor) = s.split_once('.').ok_or_else(err)?;
    let digits =
        |p: &str, most: usize| (1..=most).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(major, 2) || !digits(minor, 1) {
        return Err(err());
    }
    Ok((
        major.parse().map_err(|_| err())?,
        minor.parse().map_err(|_| err())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("2.50"), Ok(2_500_000));
        assert_eq!(parse_decimal("0.000001"), Ok(1));
        assert_eq!(parse_decimal("12"), Ok(12_000_000));
        for bad in [
            "",
            ".5",
            "1.",
            "1.1234567",
            "-1",
            "1e3",
            "1,5",
            "99999999999999999999",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn decimals_round_trip() {
        for micros in [0, 1, 10, 2_500_000, 1_000_000, 123_456_789] {
            assert_eq!(parse_decimal(&format_decimal(micros)), Ok(micros));
        }
        assert_eq!(format_decimal(2_500_000), "2.5");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("36h"), Ok(36 * 3600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("90s"), Ok(90));
        for bad in ["", "h", "1d", "30m1h", "1h1h", "5", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn memory_and_capability() {
        assert_eq!(parse_memory_mib("80Gi"), Ok(81920));
        assert_eq!(parse_memory_mib("512Mi"), Ok(512));
        assert_eq!(
            parse_memory_mib("80G"),
            Ok(76_293),
            "decimal GB, as vendors count"
        );
        assert!(
            parse_memory_mib("80G").unwrap_or(u64::MAX) <= 81_559,
            "an 80 GB H100 qualifies"
        );
        assert!(parse_memory_mib("80GB").is_err());
        assert_eq!(parse_compute_capability("9.0"), Ok((9, 0)));
        assert!(parse_compute_capability("9").is_err());
        assert!(parse_compute_capability("8.10").is_err());
        assert_eq!(parse_compute_capability("12.0"), Ok((12, 0)));
        // What COMPUTE_CAPABILITY_PATTERN refuses is refused here too: the parsed value is
        // written back into a provider's status.
        for bad in [
            "100.0", "+9.0", "009.0", "9.+0", ".0", "9.", "-1.0", " 9.0", "9.0 ", "٩.0",
        ] {
            assert!(parse_compute_capability(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn every_sum_of_costs_fits_the_status_pattern() {
        let status =
            regex::Regex::new(crate::common::STATUS_DECIMAL_PATTERN).unwrap_or_else(|e| panic!("{e}"));
        for micros in [0, 1, 2_500_000, 999_999_999_999_999_999, u64::MAX] {
            let text = format_decimal(micros);
            assert!(status.is_match(&text), "{text}");
        }
        // Whole units of any u64 (a mint's base units formatted without decimals).
        assert!(status.is_match(&u64::MAX.to_string()));
        assert!(!status.is_match("1.1234567") && !status.is_match("01") && !status.is_match("-1"));
    }
}
