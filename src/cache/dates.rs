//! HTTP dates as a cache reads them (RFC 9110 §5.6.7): IMF-fixdate, the obsolete RFC 850 form
//! and asctime, with day and month names and `GMT` matched case-insensitively. Pure, no
//! allocation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const SHORT_DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
/// RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is in the past century.
const TWO_DIGIT_YEAR_WINDOW: i64 = 50;

/// The time an HTTP date names; `None` for anything that is not one of the three forms.
/// `now` resolves the century of an RFC 850 two-digit year.
pub fn parse(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim();
    imf_fixdate(text)
        .or_else(|| rfc850(text, now))
        .or_else(|| asctime(text))
        .and_then(to_system_time)
}

/// A civil date and time, as parsed.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(text: &str) -> Option<Civil> {
    let (day_name, rest) = text.split_once(", ")?;
    one_of(day_name, &SHORT_DAYS)?;
    let mut parts = rest.split(' ');
    let day = number(parts.next()?, 2)?;
    let month = month(parts.next()?)?;
    let year = number(parts.next()?, 4)?;
    let (hour, minute, second) = time_of_day(parts.next()?)?;
    gmt(parts.next()?)?;
    parts.next().is_none().then_some(())?;
    civil(year, month, day, hour, minute, second)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850(text: &str, now: SystemTime) -> Option<Civil> {
    let (day_name, rest) = text.split_once(", ")?;
    one_of(day_name, &LONG_DAYS)?;
    let mut parts = rest.split(' ');
    let mut date = parts.next()?.split('-');
    let day = number(date.next()?, 2)?;
    let month = month(date.next()?)?;
    let short_year = number(date.next()?, 2)?;
    date.next().is_none().then_some(())?;
    let (hour, minute, second) = time_of_day(parts.next()?)?;
    gmt(parts.next()?)?;
    parts.next().is_none().then_some(())?;
    civil(full_year(short_year, now), month, day, hour, minute, second)
}

/// `Sun Nov  6 08:49:37 1994` (a one-digit day is padded with a space)
fn asctime(text: &str) -> Option<Civil> {
    let mut parts = text.split(' ').filter(|p| !p.is_empty());
    one_of(parts.next()?, &SHORT_DAYS)?;
    let month = month(parts.next()?)?;
    let day_text = parts.next()?;
    (1..=2).contains(&day_text.len()).then_some(())?;
    let day = number_any(day_text)?;
    let (hour, minute, second) = time_of_day(parts.next()?)?;
    let year = number(parts.next()?, 4)?;
    parts.next().is_none().then_some(())?;
    civil(year, month, day, hour, minute, second)
}

fn civil(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> Option<Civil> {
    let valid = (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 61;
    valid.then_some(Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

fn one_of(text: &str, names: &[&str]) -> Option<usize> {
    names.iter().position(|n| n.eq_ignore_ascii_case(text))
}

fn month(text: &str) -> Option<i64> {
    one_of(text, &MONTHS).map(|index| index as i64 + 1)
}

fn gmt(text: &str) -> Option<()> {
    text.eq_ignore_ascii_case("GMT").then_some(())
}

/// Exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<i64> {
    (text.len() == digits).then_some(())?;
    number_any(text)
}

fn number_any(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `08:49:37`
fn time_of_day(text: &str) -> Option<(i64, i64, i64)> {
    let mut parts = text.split(':');
    let hour = number(parts.next()?, 2)?;
    let minute = number(parts.next()?, 2)?;
    let second = number(parts.next()?, 2)?;
    parts.next().is_none().then_some((hour, minute, second))
}

fn full_year(short_year: i64, now: SystemTime) -> i64 {
    let this_year = year_of(now);
    let candidate = this_year - this_year.rem_euclid(100) + short_year;
    if candidate > this_year + TWO_DIGIT_YEAR_WINDOW {
        candidate - 100
    } else {
        candidate
    }
}

fn year_of(time: SystemTime) -> i64 {
    let days = match time.duration_since(UNIX_EPOCH) {
        Ok(since) => (since.as_secs() / 86_400) as i64,
        Err(before) => -((before.duration().as_secs() / 86_400) as i64) - 1,
    };
    // Civil year from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

fn to_system_time(c: Civil) -> Option<SystemTime> {
    // Days since 1970-01-01 from a civil date (H. Hinnant's algorithm).
    let y = if c.month <= 2 { c.year - 1 } else { c.year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (c.month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + c.day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + c.hour * 3600 + c.minute * 60 + c.second;
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06 08:49:37 UTC, the RFC's example.
    const EXAMPLE_SECS: u64 = 784_111_777;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn secs(text: &str) -> Option<u64> {
        parse(text, now()).map(|t| t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs())
    }

    #[test]
    fn the_three_forms_of_the_rfc_example_name_the_same_time() {
        assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), Some(EXAMPLE_SECS));
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), Some(EXAMPLE_SECS));
        assert_eq!(secs("Sun Nov  6 08:49:37 1994"), Some(EXAMPLE_SECS));
    }

    #[test]
    fn names_are_matched_whatever_their_case() {
        assert_eq!(secs("sUN, 06 nov 1994 08:49:37 gmt"), Some(EXAMPLE_SECS));
        assert_eq!(secs("SUNDAY, 06-NOV-94 08:49:37 GMT"), Some(EXAMPLE_SECS));
        assert_eq!(secs("sun nov  6 08:49:37 1994"), Some(EXAMPLE_SECS));
    }

    #[test]
    fn a_two_digit_year_more_than_fifty_years_ahead_is_in_the_past_century() {
        // now() is in 2027: "77" is 2077 (50 years ahead), "78" is 1978.
        assert_eq!(secs("Friday, 01-Jan-77 00:00:00 GMT"), Some(3_376_684_800));
        assert_eq!(secs("Sunday, 01-Jan-78 00:00:00 GMT"), Some(252_460_800));
    }

    #[test]
    fn anything_else_is_not_a_date() {
        for bad in [
            "0",
            "-1",
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
        ] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }
}
