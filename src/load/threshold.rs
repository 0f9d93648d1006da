//! Thresholds (`p95<200ms`, `errors<0.1%`, `rps>450`): parsing, and judging a run by them.

use super::format::format_ms;
use serde::Serialize;
use std::fmt;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// Client-side latency at this percentile (0 < p ≤ 100), in milliseconds.
    Percentile(f64),
    /// Failed requests (non-2xx/3xx statuses and transport errors), percent of those sent.
    Errors,
    /// Responses per second over the plan's duration.
    Rps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Comparison::Less => measured < limit,
            Comparison::LessOrEqual => measured <= limit,
            Comparison::Greater => measured > limit,
            Comparison::GreaterOrEqual => measured >= limit,
        }
    }
}

/// One threshold as written, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    pub metric: Metric,
    pub comparison: Comparison,
    /// In the metric's unit: milliseconds, percent or requests per second.
    pub limit: f64,
}

/// The measured side of a run, as the thresholds read it.
pub trait Measurements {
    /// Latency at `percentile` (0 < p ≤ 100) in milliseconds; `None` when nothing was measured.
    fn latency_ms(&self, percentile: f64) -> Option<f64>;
    fn error_percent(&self) -> Option<f64>;
    fn rps(&self) -> f64;
}

/// A threshold judged against a run.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub threshold: String,
    /// In the metric's unit (ms, %, req/s); `None` when there was nothing to measure.
    pub measured: Option<f64>,
    pub measured_text: String,
    pub passed: bool,
}

impl Threshold {
    /// Parses `METRIC OP VALUE`: METRIC is `pNN` (e.g. p50, p95, p99.9), `errors` or `rps`; OP is
    /// `<`, `<=`, `>` or `>=`; VALUE is a duration (`200ms`, `1.5s`, `800us`) for percentiles,
    /// a percentage (`0.1%`) for errors, a number of requests per second for rps.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact.find(['<', '>']).ok_or_else(|| {
            format!("threshold \"{text}\": expected METRIC<VALUE or METRIC>VALUE, e.g. p95<200ms")
        })?;
        let (name, rest) = compact.split_at(at);
        let (comparison, value) = split_comparison(rest);
        let metric = parse_metric(name).map_err(|e| format!("threshold \"{text}\": {e}"))?;
        let limit = parse_limit(metric, value).map_err(|e| format!("threshold \"{text}\": {e}"))?;
        Ok(Threshold {
            text: compact,
            metric,
            comparison,
            limit,
        })
    }

    /// Judges the threshold; a metric with nothing measured fails.
    pub fn judge(&self, run: &impl Measurements) -> Verdict {
        let measured = match self.metric {
            Metric::Percentile(p) => run.latency_ms(p),
            Metric::Errors => run.error_percent(),
            Metric::Rps => Some(run.rps()),
        };
        Verdict {
            threshold: self.text.clone(),
            measured,
            measured_text: measured.map_or_else(
                || "nothing measured".to_string(),
                |value| self.metric.format(value),
            ),
            passed: measured.is_some_and(|value| self.comparison.holds(value, self.limit)),
        }
    }
}

impl Metric {
    /// A value in this metric's unit, for people.
    pub fn format(self, value: f64) -> String {
        match self {
            Metric::Percentile(_) => format_ms(value),
            Metric::Errors => format!("{value:.3}%"),
            Metric::Rps => format!("{value:.1} req/s"),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn split_comparison(rest: &str) -> (Comparison, &str) {
    for (operator, comparison) in [
        ("<=", Comparison::LessOrEqual),
        (">=", Comparison::GreaterOrEqual),
        ("<", Comparison::Less),
        (">", Comparison::Greater),
    ] {
        if let Some(value) = rest.strip_prefix(operator) {
            return (comparison, value);
        }
    }
    (Comparison::Less, rest)
}

fn parse_metric(name: &str) -> Result<Metric, String> {
    match name {
        "errors" => Ok(Metric::Errors),
        "rps" => Ok(Metric::Rps),
        _ => {
            let percentile = name
                .strip_prefix('p')
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| {
                    format!("unknown metric \"{name}\" (use p50, p95, p99, p99.9…, errors, rps)")
                })?;
            Ok(Metric::Percentile(percentile))
        }
    }
}

fn parse_limit(metric: Metric, value: &str) -> Result<f64, String> {
    let limit = match metric {
        Metric::Percentile(_) => parse_duration_ms(value)?,
        Metric::Errors => value
            .strip_suffix('%')
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| format!("\"{value}\" is not a percentage (e.g. 0.1%)"))?,
        Metric::Rps => value
            .strip_suffix("/s")
            .unwrap_or(value)
            .parse::<f64>()
            .map_err(|_| format!("\"{value}\" is not a number of requests per second"))?,
    };
    if !limit.is_finite() || limit < 0.0 {
        return Err(format!("\"{value}\" must be a number ≥ 0"));
    }
    Ok(limit)
}

/// `200ms`, `1.5s`, `800us` (or `µs`) as milliseconds.
fn parse_duration_ms(value: &str) -> Result<f64, String> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("\"{value}\" is not a duration (e.g. 200ms, 1.5s)"))?;
    let ms_per_unit = match unit {
        "us" | "µs" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        _ => return Err(format!("\"{value}\": use a unit of us, ms or s")),
    };
    Ok(number * ms_per_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Run {
        p95_ms: f64,
        errors: f64,
        rps: f64,
    }

    impl Measurements for Run {
        fn latency_ms(&self, _: f64) -> Option<f64> {
            Some(self.p95_ms)
        }
        fn error_percent(&self) -> Option<f64> {
            Some(self.errors)
        }
        fn rps(&self) -> f64 {
            self.rps
        }
    }

    #[test]
    fn thresholds_read_percentiles_errors_and_rates() {
        let p95 = Threshold::parse("p95 < 200ms").unwrap();
        assert_eq!(p95.metric, Metric::Percentile(95.0));
        assert_eq!(p95.comparison, Comparison::Less);
        assert_eq!(p95.limit, 200.0);
        assert_eq!(p95.text, "p95<200ms");
        assert_eq!(Threshold::parse("p99.9<=1.5s").unwrap().limit, 1500.0);
        assert_eq!(Threshold::parse("p50<800us").unwrap().limit, 0.8);
        let errors = Threshold::parse("errors<0.1%").unwrap();
        assert_eq!((errors.metric, errors.limit), (Metric::Errors, 0.1));
        let rps = Threshold::parse("rps>=450/s").unwrap();
        assert_eq!(
            (rps.metric, rps.comparison, rps.limit),
            (Metric::Rps, Comparison::GreaterOrEqual, 450.0)
        );
    }

    #[test]
    fn malformed_thresholds_are_refused_naming_the_text() {
        for bad in [
            "p95",
            "p95<",
            "p95<200",
            "p95<200m",
            "p0<1s",
            "p101<1s",
            "q95<1s",
            "errors<0.1",
            "rps>fast",
            "p95<-1ms",
            "<200ms",
        ] {
            let error = Threshold::parse(bad).expect_err(bad);
            assert!(error.contains(bad.trim()), "{bad}: {error}");
        }
    }

    #[test]
    fn a_verdict_carries_the_measured_value() {
        let run = Run {
            p95_ms: 301.5,
            errors: 0.0,
            rps: 99.0,
        };
        let failed = Threshold::parse("p95<200ms").unwrap().judge(&run);
        assert!(!failed.passed);
        assert_eq!(failed.measured_text, "301.5ms");
        assert!(Threshold::parse("errors<0.1%").unwrap().judge(&run).passed);
        assert!(!Threshold::parse("rps>100").unwrap().judge(&run).passed);
    }
}
