//! Go's duration syntax (`time.ParseDuration` and `Duration.String`), which Flux, Azure's
//! fluxConfigurations and the az CLI all use: `300ms`, `1.5h`, `2h45m`, `-90s`.
//!
//! A duration is a sequence of decimal numbers, each with an optional fraction and a unit
//! (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), with an optional leading sign. A bare `0` is the
//! only number allowed without a unit. Values are signed nanoseconds in an `i64`, as in Go.

use std::fmt;
use std::time::Duration;

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;

/// The largest magnitude Go accepts: `1 << 63` for a negative value, one less for a positive.
const MAGNITUDE_LIMIT: u64 = 1 << 63;

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not the shape of a duration at all (empty, a space, a bare number, a stray sign).
    #[error("not a duration")]
    Syntax,
    #[error("missing unit after {number}")]
    MissingUnit { number: String },
    #[error("unknown unit `{unit}`, valid units are ns, us (or µs), ms, s, m and h")]
    UnknownUnit { unit: String },
    #[error("out of range (at most 2562047h47m16.854775807s)")]
    Overflow,
    #[error("must be greater than zero")]
    NotPositive,
}

/// Parses a Go duration into signed nanoseconds, accepting exactly what Go accepts.
pub fn parse_nanos(text: &str) -> Result<i64, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(DurationError::Syntax);
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .position(|b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        let (number, after_number) = rest.split_at(number_len);
        let (whole, fraction) = match number.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (number, ""),
        };
        // At most one '.', and at least one digit on either side of it.
        if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
            return Err(DurationError::Syntax);
        }
        let unit_len = after_number
            .bytes()
            .position(|b| b.is_ascii_digit() || b == b'.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                number: number.to_owned(),
            });
        }
        let unit_nanos = unit_nanos(unit)?;
        let part = component_nanos(whole, fraction, unit_nanos)?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAGNITUDE_LIMIT)
            .ok_or(DurationError::Overflow)?;
        rest = after_unit;
    }
    if negative {
        // -(1 << 63) is i64::MIN, the one value whose magnitude does not fit positive.
        Ok((total as i64).wrapping_neg())
    } else if total >= MAGNITUDE_LIMIT {
        Err(DurationError::Overflow)
    } else {
        Ok(total as i64)
    }
}

/// Parses a Go duration that must be greater than zero (intervals, timeouts).
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    let nanos = parse_nanos(text)?;
    if nanos <= 0 {
        return Err(DurationError::NotPositive);
    }
    Ok(Duration::from_nanos(nanos as u64))
}

fn unit_nanos(unit: &str) -> Result<u64, DurationError> {
    Ok(match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek letter mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SECOND,
        "m" => NANOS_PER_MINUTE,
        "h" => NANOS_PER_HOUR,
        _ => {
            // A unit with blanks in it ("10 minutes") is not a typo'd unit but prose.
            if unit.chars().any(|c| !c.is_alphabetic()) {
                return Err(DurationError::Syntax);
            }
            return Err(DurationError::UnknownUnit {
                unit: unit.to_owned(),
            });
        }
    })
}

/// `whole.fraction` times `unit`, truncated to whole nanoseconds.
fn component_nanos(whole: &str, fraction: &str, unit: u64) -> Result<u64, DurationError> {
    let mut value: u64 = 0;
    for digit in whole.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit - b'0')))
            .filter(|v| *v <= MAGNITUDE_LIMIT)
            .ok_or(DurationError::Overflow)?;
    }
    let mut nanos = value
        .checked_mul(unit)
        .filter(|v| *v <= MAGNITUDE_LIMIT)
        .ok_or(DurationError::Overflow)?;
    // Digits past the 18th are below a nanosecond even for hours; drop them like Go does.
    let kept = &fraction[..fraction.len().min(18)];
    if !kept.is_empty() {
        let numerator: u128 = kept.parse().map_err(|_| DurationError::Syntax)?;
        let scale = 10u128.pow(kept.len() as u32);
        let extra = numerator * u128::from(unit) / scale;
        nanos = u64::try_from(extra)
            .ok()
            .and_then(|extra| nanos.checked_add(extra))
            .filter(|v| *v <= MAGNITUDE_LIMIT)
            .ok_or(DurationError::Overflow)?;
    }
    Ok(nanos)
}

/// Formats like Go's `Duration.String`: `10m0s`, `1h30m0s`, `1.5s`, `300ms`, `0s`.
pub fn format(duration: Duration) -> String {
    GoDuration(duration).to_string()
}

/// Displays a [`Duration`] in Go's format, for messages and status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < u128::from(NANOS_PER_MICRO) {
            return write!(f, "{nanos}ns");
        }
        if nanos < u128::from(NANOS_PER_MILLI) {
            write_decimal(f, nanos, 3)?;
            return f.write_str("µs");
        }
        if nanos < u128::from(NANOS_PER_SECOND) {
            write_decimal(f, nanos, 6)?;
            return f.write_str("ms");
        }
        let seconds = nanos / u128::from(NANOS_PER_SECOND);
        let hours = seconds / 3600;
        let minutes = seconds / 60 % 60;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if seconds >= 60 {
            write!(f, "{minutes}m")?;
        }
        let sub_minute = nanos % (60 * u128::from(NANOS_PER_SECOND));
        write_decimal(f, sub_minute, 9)?;
        f.write_str("s")
    }
}

/// Writes `value / 10^decimals` with trailing zeros of the fraction removed.
fn write_decimal(f: &mut fmt::Formatter<'_>, value: u128, decimals: u32) -> fmt::Result {
    let scale = 10u128.pow(decimals);
    let (whole, fraction) = (value / scale, value % scale);
    write!(f, "{whole}")?;
    if fraction != 0 {
        let digits = format!("{fraction:0width$}", width = decimals as usize);
        write!(f, ".{}", digits.trim_end_matches('0'))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn parses_what_go_parses() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0s", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600_000_000),
            ("5.s", 5 * S),
            (".5s", S / 2),
            ("1.004s", S + 4_000_000),
            ("1.0040s", S + 4_000_000),
            ("100.00100s", 100 * S + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("300ms", 300_000_000),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("1.5h", 5400 * S),
            ("3h30m", (3 * 3600 + 30 * 60) * S),
            ("2h45m", (2 * 3600 + 45 * 60) * S),
            ("10.5s4m", 4 * 60 * S + 10 * S + S / 2),
            ("-2m3.4s", -(2 * 60 * S + 3 * S + 400_000_000)),
            (
                "1h2m3s4ms5us6ns",
                3600 * S + 2 * 60 * S + 3 * S + 4_000_000 + 5_000 + 6,
            ),
            ("39h9m14.425s", (39 * 3600 + 9 * 60 + 14) * S + 425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("0.100000000000000000000h", 6 * 60 * S),
            ("0.830103483285477580700h", 2988372539827),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse_nanos(text), Ok(*nanos), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        let syntax = [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d2",
            "1.2.3s",
            "10 minutes",
        ];
        for text in syntax {
            assert!(parse_nanos(text).is_err(), "{text:?} should be rejected");
        }
        assert_eq!(parse_nanos(""), Err(DurationError::Syntax));
        assert_eq!(parse_nanos("10 minutes"), Err(DurationError::Syntax));
        assert_eq!(parse_nanos(" 10m"), Err(DurationError::Syntax));
        assert_eq!(
            parse_nanos("3"),
            Err(DurationError::MissingUnit { number: "3".into() })
        );
        assert_eq!(
            parse_nanos("10min"),
            Err(DurationError::UnknownUnit { unit: "min".into() })
        );
        assert_eq!(
            parse_nanos("1d"),
            Err(DurationError::UnknownUnit { unit: "d".into() })
        );
        for text in [
            "9223372036854775808ns",
            "9223372036854775s808ms",
            "-9223372036854775809ns",
            "3000000h",
            "9223372036854775807h",
            "0.9223372036854775808s9223372036854775807ns",
        ] {
            assert_eq!(parse_nanos(text), Err(DurationError::Overflow), "{text}");
        }
    }

    #[test]
    fn positive_durations_only() {
        assert_eq!(parse_positive("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_positive("0"), Err(DurationError::NotPositive));
        assert_eq!(parse_positive("0s"), Err(DurationError::NotPositive));
        assert_eq!(parse_positive("-1s"), Err(DurationError::NotPositive));
        assert_eq!(parse_positive("1ns"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (300_000_000, "300ms"),
            (3_300_000_000, "3.3s"),
            (4 * 60 * S as u64 + 5 * S as u64, "4m5s"),
            (4 * 60 * S as u64 + 5_001_000_000, "4m5.001s"),
            (
                5 * 3600 * S as u64 + 6 * 60 * S as u64 + 7_001_000_000,
                "5h6m7.001s",
            ),
            (8 * 60 * S as u64 + 1, "8m0.000000001s"),
            (600 * S as u64, "10m0s"),
            (3600 * S as u64, "1h0m0s"),
            (i64::MAX as u64, "2562047h47m16.854775807s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(format(Duration::from_nanos(*nanos)), *text);
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["10m0s", "1h30m0s", "1.5s", "300ms", "2h45m0s", "1.1µs"] {
            let nanos = parse_nanos(text).unwrap();
            assert_eq!(format(Duration::from_nanos(nanos as u64)), text);
        }
    }
}
