//! Durations as an admin types them on the command line (`90s`, `30m`, `24h`,
//! `7d`) and as the CLI prints them back.
//!
//! master.lua gives durations as plain numbers of seconds; only the admin
//! commands (`worker-token --expires`, `--cert-validity`) need units, so this
//! stays a tiny parser instead of a dependency.

use std::time::Duration;

/// Why a duration was refused; each says what was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} has no unit: write e.g. 90s, 30m, 24h or 7d")]
    NoUnit(String),
    #[error("{0:?} does not start with a number (e.g. 24h)")]
    NoNumber(String),
    #[error("{text:?}: unknown unit {unit:?} (use s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?} is zero")]
    Zero(String),
    #[error("{0:?} is too long")]
    TooLong(String),
}

/// Parse `N` followed by one unit: `s`, `m`, `h` or `d` (e.g. `90s`, `24h`, `365d`).
/// A bare number is refused: it is too easy to mean days and get seconds.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| DurationError::NoUnit(text.to_string()))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| DurationError::NoNumber(text.to_string()))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    if number == 0 {
        return Err(DurationError::Zero(text.to_string()));
    }
    number
        .checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| DurationError::TooLong(text.to_string()))
}

/// The largest whole unit that divides `d` exactly: `86400 s` → `1d`, `90 s` → `90s`.
pub fn display(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, scale) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s >= scale && s.is_multiple_of(scale) {
            return format!("{}{unit}", s / scale);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_the_rest() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86400)));
        for bad in [
            "",
            "24",
            "h",
            "1w",
            "-1d",
            "0s",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(display(Duration::from_secs(365 * 86400)), "365d");
        assert_eq!(display(Duration::from_secs(90)), "90s");
        assert_eq!(display(Duration::from_secs(7200)), "2h");
    }
}
