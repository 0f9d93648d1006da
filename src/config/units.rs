//! Parsing of the human-written units in the config: durations ("250ms", "30s", "365d") and
//! sizes ("64KiB", "16MiB").

use std::time::Duration;

/// Why a duration or size is not understood; the message names the text and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid value \"{0}\": expected a whole number and a unit")]
    NotANumber(String),
    #[error("invalid duration \"{0}\": add a unit (ms, s, m, h, d)")]
    DurationWithoutUnit(String),
    #[error("invalid duration \"{text}\": unknown unit \"{unit}\" (use ms, s, m, h, d)")]
    UnknownDurationUnit { text: String, unit: String },
    #[error("invalid duration \"{0}\": too large")]
    DurationTooLarge(String),
    #[error("invalid size \"{text}\": unknown unit \"{unit}\" (use B, KiB, MiB, GiB, KB, MB, GB)")]
    UnknownSizeUnit { text: String, unit: String },
    #[error("invalid size \"{0}\": too large")]
    SizeTooLarge(String),
}

/// Parses a duration written as a whole number and a unit: ms, s, m, h or d.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split_number(text)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(UnitError::DurationWithoutUnit(text.to_string())),
        _ => {
            return Err(UnitError::UnknownDurationUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| UnitError::DurationTooLarge(text.to_string()))
}

/// Parses a size written as a whole number and a unit: B, KiB, MiB, GiB (powers of 1024) or
/// KB, MB, GB (powers of 1000); digits alone are bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(text)?;
    let bytes_per_unit: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(UnitError::UnknownSizeUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    number
        .checked_mul(bytes_per_unit)
        .ok_or_else(|| UnitError::SizeTooLarge(text.to_string()))
}

fn split_number(text: &str) -> Result<(u64, &str), UnitError> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let number = digits
        .parse::<u64>()
        .map_err(|_| UnitError::NotANumber(text.to_string()))?;
    Ok((number, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("365d"), Ok(Duration::from_secs(365 * 86400)));
    }

    #[test]
    fn durations_without_a_known_unit_are_rejected() {
        assert!(parse_duration("1x")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_duration("10")
            .unwrap_err()
            .to_string()
            .contains("add a unit"));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes_use_binary_and_decimal_units() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("12 parsecs").is_err());
    }
}
