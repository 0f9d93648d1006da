//! The human-written units in the config: durations ("250ms", "30s", "365d") and sizes
//! ("64KiB", "16MiB"), parsed, and written back the way a config file would spell them.

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

/// A duration in the largest unit that keeps it whole ("90s", "5m", "365d"; "0s" for zero),
/// so that [`parse_duration`] reads it back exactly (below a millisecond is dropped).
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(u128, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    UNITS
        .iter()
        .find(|(per_unit, _)| millis.is_multiple_of(*per_unit))
        .map_or_else(
            || format!("{millis}ms"),
            |(per_unit, unit)| format!("{}{unit}", millis / per_unit),
        )
}

/// A size in the largest binary unit that keeps it whole ("64KiB", "1GiB"), or its number of
/// bytes when no unit does, so that [`parse_size`] reads it back exactly.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(per_unit, _)| bytes != 0 && bytes.is_multiple_of(*per_unit))
        .map_or_else(
            || bytes.to_string(),
            |(per_unit, unit)| format!("{}{unit}", bytes / per_unit),
        )
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
    fn durations_and_sizes_are_written_back_as_a_file_spells_them() {
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(365 * 86400)), "365d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_size(64 << 10), "64KiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1500), "1500");
        assert_eq!(format_size(0), "0");
        for text in ["1s", "75s", "5m", "2h", "10d", "1ms"] {
            let duration = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        for bytes in [0, 1, 1024, 1536, 16 << 20, 8 << 30] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
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
