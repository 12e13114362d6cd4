//! The move throttle's rate (`strata cluster rebalance --throttle RATE`,
//! `strata partition reassign ... --throttle RATE`): its text form, its
//! bounds and how it is shown. The cluster keeps one rate in its metadata
//! state; every node paces what it sends to the replicas joining a
//! partition with it (strata-server's `network::throttle`).

use std::fmt;
use std::str::FromStr;

use crate::limits::MIN_MOVE_THROTTLE_BYTES_PER_SEC;

/// A setting of the move throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleRate {
    /// Moves copy as fast as the disks and the network allow.
    Off,
    /// Each node sends at most this many bytes per second to the replicas
    /// joining the partitions it leads.
    BytesPerSec(u64),
}

/// Why a rate was refused; the message says what to give instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleRateError {
    #[error(
        "'{0}' is not a rate: give bytes per second as a number with an optional unit (B, KiB, MiB, GiB, KB, MB, \
         GB; e.g. 20MiB, 500KiB), or off"
    )]
    NotARate(String),
    #[error("'{0}' is too large a rate; give at most 16 EiB per second")]
    TooLarge(String),
    #[error(
        "a throttle of {} is below the lowest, {}: a move would wait longer for one message than an attempt \
         lasts; give a higher rate, or off",
        show_rate(*.0),
        show_rate(MIN_MOVE_THROTTLE_BYTES_PER_SEC)
    )]
    TooLow(u64),
}

impl ThrottleRate {
    /// The rate as the metadata state stores it: `None` when off.
    pub fn bytes_per_sec(self) -> Option<u64> {
        match self {
            ThrottleRate::Off => None,
            ThrottleRate::BytesPerSec(rate) => Some(rate),
        }
    }

    /// A rate as the metadata state stores it (`None`: off), checked.
    pub fn from_stored(bytes_per_sec: Option<u64>) -> Result<ThrottleRate, ThrottleRateError> {
        match bytes_per_sec {
            None => Ok(ThrottleRate::Off),
            Some(rate) => check(rate),
        }
    }
}

/// Checks a rate against the bounds; 0 is not a rate (off is `None`).
fn check(bytes_per_sec: u64) -> Result<ThrottleRate, ThrottleRateError> {
    if bytes_per_sec < MIN_MOVE_THROTTLE_BYTES_PER_SEC {
        return Err(ThrottleRateError::TooLow(bytes_per_sec));
    }
    Ok(ThrottleRate::BytesPerSec(bytes_per_sec))
}

/// `off` or `0` turn the throttle off; otherwise a number of bytes per
/// second with an optional unit and `/s` (`20MiB`, `20 MiB/s`, `500KiB`,
/// `10MB`, `1048576`). Units are case-sensitive, so that `Mb` (megabits)
/// is refused rather than read as megabytes.
impl FromStr for ThrottleRate {
    type Err = ThrottleRateError;

    fn from_str(text: &str) -> Result<ThrottleRate, ThrottleRateError> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("off") {
            return Ok(ThrottleRate::Off);
        }
        let not_a_rate = || ThrottleRateError::NotARate(text.to_string());
        let body = trimmed.strip_suffix("/s").unwrap_or(trimmed);
        let split = body.find(|c: char| !c.is_ascii_digit()).unwrap_or(body.len());
        let (number, unit) = body.split_at(split);
        let number: u64 = match number.parse() {
            Ok(number) => number,
            // Only digits: too many of them for a u64.
            Err(_) if !number.is_empty() => return Err(ThrottleRateError::TooLarge(text.to_string())),
            Err(_) => return Err(not_a_rate()),
        };
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(not_a_rate()),
        };
        let rate = number.checked_mul(scale).ok_or_else(|| ThrottleRateError::TooLarge(text.to_string()))?;
        if rate == 0 {
            return Ok(ThrottleRate::Off);
        }
        check(rate)
    }
}

impl fmt::Display for ThrottleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThrottleRate::Off => f.write_str("off"),
            ThrottleRate::BytesPerSec(rate) => f.write_str(&show_rate(*rate)),
        }
    }
}

/// A rate for people: `20 MiB/s`, `1.5 MiB/s`, `500 KiB/s`, `1000 B/s`.
pub fn show_rate(bytes_per_sec: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes_per_sec >= size {
            let whole = bytes_per_sec / size;
            let tenths = (bytes_per_sec % size) * 10 / size;
            return if tenths == 0 { format!("{whole} {unit}/s") } else { format!("{whole}.{tenths} {unit}/s") };
        }
    }
    format!("{bytes_per_sec} B/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ThrottleRate, ThrottleRateError> {
        text.parse()
    }

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse("20MiB"), Ok(ThrottleRate::BytesPerSec(20 << 20)));
        assert_eq!(parse(" 20 MiB/s "), Ok(ThrottleRate::BytesPerSec(20 << 20)));
        assert_eq!(parse("500KiB"), Ok(ThrottleRate::BytesPerSec(500 << 10)));
        assert_eq!(parse("1GiB/s"), Ok(ThrottleRate::BytesPerSec(1 << 30)));
        assert_eq!(parse("10MB"), Ok(ThrottleRate::BytesPerSec(10_000_000)));
        assert_eq!(parse("1000KB"), Ok(ThrottleRate::BytesPerSec(1_000_000)));
        assert_eq!(parse("1048576"), Ok(ThrottleRate::BytesPerSec(1 << 20)));
        assert_eq!(parse("1048576B"), Ok(ThrottleRate::BytesPerSec(1 << 20)));
    }

    #[test]
    fn off_and_zero_clear_the_throttle() {
        for text in ["off", "OFF", "0", "0MiB", "0 B/s"] {
            assert_eq!(parse(text), Ok(ThrottleRate::Off), "{text}");
        }
        assert_eq!(ThrottleRate::Off.bytes_per_sec(), None);
        assert_eq!(ThrottleRate::BytesPerSec(7 << 20).bytes_per_sec(), Some(7 << 20));
    }

    #[test]
    fn bad_rates_are_refused_with_what_to_give() {
        for text in ["", "fast", "20Mb", "20mib", "20 MiB per second", "-5MiB", "1.5MiB", "MiB", "20MiB/h"] {
            let error = parse(text).unwrap_err();
            assert_eq!(error, ThrottleRateError::NotARate(text.into()), "{text}");
            assert!(error.to_string().contains("e.g. 20MiB"), "{error}");
        }
        let error = parse("100KiB").unwrap_err();
        assert_eq!(error, ThrottleRateError::TooLow(100 << 10));
        assert!(error.to_string().contains("below the lowest, 256 KiB/s"), "{error}");
        assert!(parse("255KiB").is_err());
        assert_eq!(parse("256KiB"), Ok(ThrottleRate::BytesPerSec(MIN_MOVE_THROTTLE_BYTES_PER_SEC)));
        assert_eq!(parse("20000000000GiB"), Err(ThrottleRateError::TooLarge("20000000000GiB".into())));
        assert_eq!(parse("99999999999999999999"), Err(ThrottleRateError::TooLarge("99999999999999999999".into())));
    }

    #[test]
    fn stored_rates_are_checked_like_typed_ones() {
        assert_eq!(ThrottleRate::from_stored(None), Ok(ThrottleRate::Off));
        assert_eq!(ThrottleRate::from_stored(Some(1 << 20)), Ok(ThrottleRate::BytesPerSec(1 << 20)));
        assert_eq!(ThrottleRate::from_stored(Some(0)), Err(ThrottleRateError::TooLow(0)));
    }

    #[test]
    fn rates_show_in_binary_units() {
        assert_eq!(show_rate(20 << 20), "20 MiB/s");
        assert_eq!(show_rate(3 << 19), "1.5 MiB/s");
        assert_eq!(show_rate(500 << 10), "500 KiB/s");
        assert_eq!(show_rate(1 << 30), "1 GiB/s");
        assert_eq!(show_rate(999), "999 B/s");
        assert_eq!(ThrottleRate::Off.to_string(), "off");
        assert_eq!(ThrottleRate::BytesPerSec(20 << 20).to_string(), "20 MiB/s");
        // What is shown parses back to the same rate when it is whole.
        assert_eq!(parse(&show_rate(20 << 20)), Ok(ThrottleRate::BytesPerSec(20 << 20)));
    }
}
