//! How the load reports write times and durations for people.

/// Milliseconds with a precision that suits their size: `850µs`, `2.48ms`, `301.5ms`, `1.20s`.
pub fn format_ms(ms: f64) -> String {
    match ms {
        ms if ms < 1.0 => format!("{:.0}µs", ms * 1000.0),
        ms if ms < 10.0 => format!("{ms:.2}ms"),
        ms if ms < 1000.0 => format!("{ms:.1}ms"),
        ms => format!("{:.2}s", ms / 1000.0),
    }
}

/// A stage's length as written in plans: `500ms`, `30s`, `1m30s`, `2h`.
pub fn format_duration(secs: f64) -> String {
    let millis = (secs * 1000.0).round() as u64;
    if millis == 0 {
        return "0s".to_string();
    }
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let (hours, minutes, seconds) = (millis / 3_600_000, millis / 60_000 % 60, millis / 1000 % 60);
    [(hours, "h"), (minutes, "m"), (seconds, "s")]
        .iter()
        .filter(|(value, _)| *value > 0)
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_three_significant_digits_or_so() {
        assert_eq!(format_ms(0.85), "850µs");
        assert_eq!(format_ms(2.481), "2.48ms");
        assert_eq!(format_ms(301.54), "301.5ms");
        assert_eq!(format_ms(1200.0), "1.20s");
    }

    #[test]
    fn durations_read_like_stage_strings() {
        assert_eq!(format_duration(0.0), "0s");
        assert_eq!(format_duration(0.001), "1ms");
        assert_eq!(format_duration(30.0), "30s");
        assert_eq!(format_duration(90.0), "1m30s");
        assert_eq!(format_duration(7200.0), "2h");
    }
}
