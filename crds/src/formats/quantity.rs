//! Kubernetes resource quantities (`resource.Quantity`: `500m`, `1.5`, `64Gi`, `1e3`),
//! read exactly, with the rounding to whole units said at each use.
//!
//! The grammar is Kubernetes' own: a number (`1`, `1.5`, `1.`, `.5`, optionally signed)
//! then one suffix — decimal SI `n u m "" k M G T P E`, binary SI `Ki Mi Gi Ti Pi Ei`, or
//! a decimal exponent `e3` / `E-2`. A quantity comes from a member cluster (a pod's
//! requests, a node's allocatable), so anything that is not one, or is negative, is an
//! error to skip, never a panic; values too large for 128 bits saturate.

use super::FormatError;

/// Largest decimal exponent (after the suffix) read; a larger one is refused.
const MAX_EXPONENT: i64 = 1000;

/// Characters of a bad quantity kept in its error (a member may send megabytes).
const ERROR_CHARS: usize = 64;

/// Which way a quantity is rounded to whole units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Toward zero: what a capacity surely holds.
    Down,
    /// Away from zero: what a request surely asks (as Kubernetes' `MilliValue` and
    /// `Value` round).
    Up,
}

/// A non-negative quantity, exactly: `digits × 10^exp10 × 2^exp2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    digits: u128,
    exp10: i64,
    exp2: u32,
}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity {
        digits: 0,
        exp10: 0,
        exp2: 0,
    };

    /// The value times `num / den` as a whole number, rounded as `round` says. Saturates
    /// at `u128::MAX` when `value × num` (before the division) exceeds 128 bits — with
    /// `den` at most 2^20, as here, only for results beyond 2^108. Otherwise exact, except
    /// where a product would exceed 128 bits only for a long fraction (over ~35
    /// significant digits with a negative exponent): then its last digits are dropped
    /// first, rounded the same way, so the result stays on `round`'s side of the exact
    /// value.
    pub fn scaled(&self, num: u128, den: u128, round: Rounding) -> u128 {
        if self.digits == 0 || num == 0 {
            return 0;
        }
        let den = den.max(1);
        let mut digits = self.digits;
        let mut exp10 = self.exp10;
        loop {
            let up = u32::try_from(exp10.max(0)).unwrap_or(u32::MAX);
            let down = u32::try_from((-exp10).max(0)).unwrap_or(u32::MAX);
            let n = 10u128
                .checked_pow(up)
                .and_then(|p| digits.checked_mul(p))
                .and_then(|v| v.checked_mul(num))
                .and_then(|v| v.checked_mul(1u128.checked_shl(self.exp2)?));
            let d = 10u128.checked_pow(down).and_then(|p| den.checked_mul(p));
            match (n, d) {
                (Some(n), Some(d)) => {
                    let (q, r) = (n / d, n % d);
                    return if round == Rounding::Up && r != 0 { q + 1 } else { q };
                }
                // Beyond 128 bits without any division: saturate.
                (None, _) if down == 0 => return u128::MAX,
                // The divisor alone exceeds 128 bits, the dividend does not: below one.
                (Some(_), None) => {
                    return match round {
                        Rounding::Down => 0,
                        Rounding::Up => 1,
                    };
                }
                (None, _) => {
                    let (q, r) = (digits / 10, digits % 10);
                    digits = if round == Rounding::Up && r != 0 { q + 1 } else { q };
                    exp10 += 1;
                    if digits == 0 {
                        return 0;
                    }
                }
            }
        }
    }

    /// Thousandths (CPU millicores), rounded.
    pub fn millis(&self, round: Rounding) -> u128 {
        self.scaled(1000, 1, round)
    }

    /// Whole units (memory bytes), rounded.
    pub fn units(&self, round: Rounding) -> u128 {
        self.scaled(1, 1, round)
    }

    /// MiB of a memory quantity in bytes, rounded.
    pub fn mib(&self, round: Rounding) -> u128 {
        self.scaled(1, 1 << 20, round)
    }
}

/// The suffix's `(exp10, exp2)`, or `None` when it is not one.
fn suffix(s: &str) -> Option<(i64, u32)> {
    let known = match s {
        "" => Some((0, 0)),
        "n" => Some((-9, 0)),
        "u" => Some((-6, 0)),
        "m" => Some((-3, 0)),
        "k" => Some((3, 0)),
        "M" => Some((6, 0)),
        "G" => Some((9, 0)),
        "T" => Some((12, 0)),
        "P" => Some((15, 0)),
        "E" => Some((18, 0)),
        "Ki" => Some((0, 10)),
        "Mi" => Some((0, 20)),
        "Gi" => Some((0, 30)),
        "Ti" => Some((0, 40)),
        "Pi" => Some((0, 50)),
        "Ei" => Some((0, 60)),
        _ => None,
    };
    if known.is_some() {
        return known;
    }
    // A decimal exponent: `e` or `E`, an optional sign, digits.
    let exp = s.strip_prefix(['e', 'E'])?;
    let (negative, digits) = match exp.as_bytes().first()? {
        b'-' => (true, &exp[1..]),
        b'+' => (false, &exp[1..]),
        _ => (false, exp),
    };
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    (n <= MAX_EXPONENT).then_some((if negative { -n } else { n }, 0))
}

/// Parses a Kubernetes quantity. Negative quantities (other than zero) are refused:
/// requests and capacities never are.
pub fn parse_quantity(s: &str) -> Result<Quantity, FormatError> {
    let err = || FormatError::Quantity(s.chars().take(ERROR_CHARS).collect());
    // As Kubernetes reads it from JSON.
    let t = s.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let int_len = t.bytes().take_while(u8::is_ascii_digit).count();
    let (int, rest) = t.split_at(int_len);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            after.split_at(n)
        }
        None => ("", rest),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(err());
    }
    let (exp10, exp2) = suffix(rest).ok_or_else(err)?;
    // Trailing zeros of the fraction say nothing; leading zeros of the whole add nothing.
    let frac = frac.trim_end_matches('0');
    let mut digits: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(u128::from(b - b'0')))
            .ok_or_else(err)?;
    }
    if digits == 0 {
        return Ok(Quantity::ZERO);
    }
    if negative {
        return Err(err());
    }
    let mut q = Quantity {
        digits,
        exp10: exp10 - i64::try_from(frac.len()).map_err(|_| err())?,
        exp2,
    };
    while q.digits.is_multiple_of(10) {
        q.digits /= 10;
        q.exp10 += 1;
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::Rounding::{Down, Up};
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        parse_quantity(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn cpu_quantities_in_millicores() {
        for (s, millis) in [
            ("1", 1000),
            ("100m", 100),
            ("1.5", 1500),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("+2", 2000),
            ("64", 64_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e+3", 1_000_000),
            ("25e-1", 2500),
            ("1k", 1_000_000),
            ("250000u", 250),
            ("1.000", 1000),
            ("0", 0),
            ("-0", 0),
            ("000.000", 0),
            (" 2 ", 2000),
        ] {
            assert_eq!(q(s).millis(Down), millis, "{s}");
            assert_eq!(q(s).millis(Up), millis, "{s} is exact");
        }
        // Below a millicore: Kubernetes' MilliValue rounds a request up.
        assert_eq!((q("1n").millis(Down), q("1n").millis(Up)), (0, 1));
        assert_eq!((q("1500u").millis(Down), q("1500u").millis(Up)), (1, 2));
        assert_eq!((q("0.0001").millis(Down), q("0.0001").millis(Up)), (0, 1));
    }

    #[test]
    fn memory_quantities_in_bytes_and_mib() {
        assert_eq!(q("1Ki").units(Down), 1024);
        assert_eq!(q("128974848").units(Down), 128_974_848);
        assert_eq!(q("129e6").units(Down), 129_000_000);
        assert_eq!(q("129M").units(Down), 129_000_000);
        assert_eq!(q("123Mi").mib(Down), 123);
        assert_eq!(q("0.5Gi").mib(Down), 512);
        assert_eq!(q("1.5Gi").mib(Up), 1536);
        assert_eq!(q("512Gi").mib(Down), 512 * 1024);
        assert_eq!(q("1Ei").mib(Down), 1 << 40);
        assert_eq!(q("1E").units(Down), 10u128.pow(18));
        assert_eq!((q("1G").mib(Down), q("1G").mib(Up)), (953, 954));
        assert_eq!((q("1").mib(Down), q("1").mib(Up)), (0, 1));
        // A fraction of a byte, as `Value` rounds it.
        assert_eq!((q("1500m").units(Down), q("1500m").units(Up)), (1, 2));
        // The GPU memory parser agrees where both read.
        for s in ["80Gi", "512Mi", "80G", "2Ti", "1T"] {
            let old = crate::formats::parse_memory_mib(s).map(u128::from);
            assert_eq!(old, Ok(q(s).mib(Down)), "{s}");
        }
    }

    #[test]
    fn not_quantities_are_refused() {
        for bad in [
            "",
            " ",
            ".",
            "-1",
            "-0.5",
            "+",
            "1.2.3",
            "1Gb",
            "1gi",
            "e3",
            "1e",
            "1e+",
            "1e-",
            "Mi",
            "1 Gi",
            "1kk",
            "1e3Mi",
            "1Mi3",
            "0x10",
            "1,5",
            "1e1000000",
            "1e1001",
            "١",
            "1_000",
            // 39 nines: more significant digits than 128 bits hold.
            "999999999999999999999999999999999999999",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_quantity("1e1000").is_ok(), "the largest exponent read");
        let long = "9".repeat(10_000);
        let e = parse_quantity(&long).expect_err("too long");
        assert!(
            e.to_string().len() < 200,
            "the error quotes a bounded prefix: {e}"
        );
    }

    #[test]
    fn extremes_saturate_or_round_the_right_way() {
        assert_eq!(q("1e40").millis(Down), u128::MAX);
        assert_eq!(q("1e1000").units(Up), u128::MAX);
        assert_eq!(q("1Ei").scaled(u128::MAX, 1, Down), u128::MAX);
        assert_eq!((q("1e-1000").millis(Down), q("1e-1000").millis(Up)), (0, 1));
        assert_eq!((q("1e-40").millis(Down), q("1e-40").millis(Up)), (0, 1));
        // 37 significant digits × 1000 exceed 128 bits: digits are dropped, rounding
        // the same way (123456.789012… CPU).
        let long = q("123456789012345678901234567890123456.7e-30");
        assert_eq!((long.millis(Down), long.millis(Up)), (123_456_789, 123_456_790));
        let nines = q("99999999999999999999999999999999999999"); // 38 digits fit
        assert_eq!(nines.units(Down), 10u128.pow(38) - 1);
        assert_eq!(nines.millis(Up), u128::MAX);
        assert_eq!(Quantity::ZERO.millis(Up), 0);
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(
            s in prop_oneof![
                ".{0,40}",
                "[+-]?[0-9]{0,45}(\\.[0-9]{0,45})?([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,5})?",
            ],
            num in any::<u128>(),
            den in any::<u128>(),
        ) {
            if let Ok(q) = parse_quantity(&s) {
                prop_assert!(q.scaled(num, den, Down) <= q.scaled(num, den, Up), "{:?}", s);
                prop_assert!(q.millis(Down) <= q.millis(Up));
                prop_assert!(q.mib(Down) <= q.mib(Up));
            }
        }

        #[test]
        fn whole_numbers_with_any_suffix_read_exactly(
            n in 0u64..1_000_000_000_000,
            (suffix, factor) in prop::sample::select(vec![
                ("", 1u128), ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 10u128.pow(12)),
                ("P", 10u128.pow(15)), ("E", 10u128.pow(18)), ("Ki", 1 << 10), ("Mi", 1 << 20),
                ("Gi", 1 << 30), ("Ti", 1 << 40), ("Pi", 1 << 50), ("Ei", 1 << 60), ("e2", 100),
            ]),
        ) {
            let q = parse_quantity(&format!("{n}{suffix}")).expect("a quantity");
            let exact = u128::from(n) * factor;
            prop_assert_eq!(q.units(Down), exact);
            prop_assert_eq!(q.millis(Up), exact * 1000);
            prop_assert_eq!(q.mib(Down), exact >> 20);
            prop_assert_eq!(q.mib(Up), exact.div_ceil(1 << 20));
        }

        #[test]
        fn millis_read_exactly(n in 0u64..1_000_000_000) {
            let q = parse_quantity(&format!("{n}m")).expect("a quantity");
            prop_assert_eq!(q.millis(Down), u128::from(n));
            let whole = parse_quantity(&format!("{}.{:03}", n / 1000, n % 1000)).expect("a decimal");
            prop_assert_eq!(whole.millis(Down), u128::from(n));
        }
    }
}
