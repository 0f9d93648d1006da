//! The load shape: stages (`D:RATE`), and when the k-th request of a plan is due.
//!
//! Each stage ramps the rate linearly from the previous stage's rate (0 before the first) to its
//! own RATE over its duration, so the number of requests due by time `t` is the area under that
//! piecewise-linear curve. The k-th request is due when that area reaches k: counts are exact
//! whatever the shape, and the requests of a ramp thin out or crowd in as the rate does.

use crate::config::units::parse_duration;
use std::time::Duration;

/// Highest rate a stage may ask for, requests per second: past it a typo is likelier than a plan.
pub const MAX_RATE_PER_SEC: f64 = 1_000_000.0;

/// One stage: ramp linearly to `rate` requests/s over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub rate: f64,
}

impl Stage {
    /// A stage with a positive duration and a rate in `0..=MAX_RATE_PER_SEC`.
    pub fn new(duration: Duration, rate: f64) -> Result<Stage, String> {
        if duration.is_zero() {
            return Err("a stage's duration must be greater than 0".to_string());
        }
        if !rate.is_finite() || !(0.0..=MAX_RATE_PER_SEC).contains(&rate) {
            return Err(format!(
                "rate {rate} is out of range (requests per second, 0 to {MAX_RATE_PER_SEC})"
            ));
        }
        Ok(Stage { duration, rate })
    }
}

/// Parses `D:RATE[,D:RATE…]`, e.g. `30s:100,1m:100,30s:0`; D takes ms, s, m, h.
pub fn parse_stage_list(text: &str) -> Result<Vec<Stage>, String> {
    if text.trim().is_empty() {
        return Err("no stage given (expected D:RATE[,D:RATE…], e.g. 30s:100,1m:100)".to_string());
    }
    text.split(',').map(parse_stage).collect()
}

fn parse_stage(text: &str) -> Result<Stage, String> {
    let text = text.trim();
    let Some((duration, rate)) = text.split_once(':') else {
        return Err(format!(
            "stage \"{text}\": expected DURATION:RATE, e.g. 30s:100"
        ));
    };
    let duration = parse_duration(duration).map_err(|e| format!("stage \"{text}\": {e}"))?;
    let rate = rate
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("stage \"{text}\": rate \"{rate}\" is not a number"))?;
    Stage::new(duration, rate).map_err(|e| format!("stage \"{text}\": {e}"))
}

/// One stage placed on the plan's time line.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start_secs: f64,
    secs: f64,
    from_rate: f64,
    to_rate: f64,
    /// Requests due before this segment starts.
    due_before: f64,
}

impl Segment {
    fn slope(&self) -> f64 {
        (self.to_rate - self.from_rate) / self.secs
    }

    fn due_within(&self) -> f64 {
        (self.from_rate + self.to_rate) / 2.0 * self.secs
    }

    /// Seconds into the segment at which `n` of its requests are due: solves
    /// `from·t + slope·t²/2 = n`, written so that it stays exact when the slope is 0.
    fn time_of(&self, n: f64) -> f64 {
        let half_slope = self.slope() / 2.0;
        let root = (self.from_rate * self.from_rate + 4.0 * half_slope * n).max(0.0);
        let denominator = self.from_rate + root.sqrt();
        if denominator <= 0.0 {
            return self.secs;
        }
        (2.0 * n / denominator).min(self.secs)
    }
}

/// The whole plan's rate curve.
#[derive(Debug, Clone)]
pub struct Shape {
    segments: Vec<Segment>,
}

/// Tolerance on accumulated floating-point error when counting requests.
const COUNT_EPSILON: f64 = 1e-6;

impl Shape {
    pub fn new(stages: &[Stage]) -> Shape {
        let mut segments = Vec::with_capacity(stages.len());
        let (mut start_secs, mut due_before, mut from_rate) = (0.0, 0.0, 0.0);
        for stage in stages {
            let segment = Segment {
                start_secs,
                secs: stage.duration.as_secs_f64(),
                from_rate,
                to_rate: stage.rate,
                due_before,
            };
            start_secs += segment.secs;
            due_before += segment.due_within();
            from_rate = stage.rate;
            segments.push(segment);
        }
        Shape { segments }
    }

    /// The plan's length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.segments.last().map_or(0.0, |s| s.start_secs + s.secs))
    }

    /// Requests the plan sends in all.
    pub fn total_requests(&self) -> u64 {
        self.due_by_index_end(self.segments.len())
    }

    /// Requests due within stage `index`.
    pub fn stage_requests(&self, index: usize) -> u64 {
        self.due_by_index_end(index + 1) - self.due_by_index_end(index)
    }

    fn due_by_index_end(&self, stages: usize) -> u64 {
        let due = match stages.checked_sub(1).and_then(|i| self.segments.get(i)) {
            Some(segment) => segment.due_before + segment.due_within(),
            None => 0.0,
        };
        (due + COUNT_EPSILON).floor() as u64
    }

    /// When the k-th request (1-based) is due, counted from the plan's start.
    pub fn due_at(&self, k: u64) -> Duration {
        let k = k as f64;
        let segment = self
            .segments
            .iter()
            .rev()
            .find(|s| s.due_before < k - COUNT_EPSILON)
            .or(self.segments.first());
        let Some(segment) = segment else {
            return Duration::ZERO;
        };
        let within = segment.time_of(k - segment.due_before);
        Duration::from_secs_f64(segment.start_secs + within)
    }

    /// The stage running at `offset` from the start (the last one at and past the end).
    pub fn stage_at(&self, offset: Duration) -> usize {
        let secs = offset.as_secs_f64();
        self.segments
            .iter()
            .rposition(|s| s.start_secs <= secs)
            .unwrap_or(0)
    }

    /// Requests due between `from` and `to` (fractional: the asked count over a window).
    pub fn due_between(&self, from: Duration, to: Duration) -> f64 {
        self.due_by(to) - self.due_by(from)
    }

    fn due_by(&self, offset: Duration) -> f64 {
        let Some(segment) = self.segments.get(self.stage_at(offset)) else {
            return 0.0;
        };
        let t = (offset.as_secs_f64() - segment.start_secs).clamp(0.0, segment.secs);
        segment.due_before + segment.from_rate * t + segment.slope() * t * t / 2.0
    }

    /// The rate at which stage `index` starts (the previous stage's target).
    pub fn stage_start_rate(&self, index: usize) -> f64 {
        self.segments.get(index).map_or(0.0, |s| s.from_rate)
    }

    /// When stage `index` starts, from the plan's start.
    pub fn stage_start(&self, index: usize) -> Duration {
        Duration::from_secs_f64(self.segments.get(index).map_or(0.0, |s| s.start_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Shape {
        Shape::new(&parse_stage_list(text).unwrap())
    }

    #[test]
    fn a_stage_list_reads_durations_with_units_and_decimal_rates() {
        let stages = parse_stage_list("30s:100, 1m:2.5,500ms:0").unwrap();
        assert_eq!(
            stages,
            vec![
                Stage::new(Duration::from_secs(30), 100.0).unwrap(),
                Stage::new(Duration::from_secs(60), 2.5).unwrap(),
                Stage::new(Duration::from_millis(500), 0.0).unwrap(),
            ]
        );
    }

    #[test]
    fn malformed_stages_are_refused_with_the_offending_text() {
        for bad in [
            "", "30s", "30s:", ":100", "30:100", "30s:abc", "30s:-1", "0s:100", "30s:100,",
            "30x:5", "1s:1e9",
        ] {
            let error = parse_stage_list(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(parse_stage_list("30s:abc").unwrap_err().contains("30s:abc"));
    }

    #[test]
    fn a_ramp_steady_ramp_down_plan_sends_the_area_under_its_curve() {
        let plan = shape("1s:100,3s:100,1s:0");
        assert_eq!(plan.total_requests(), 400);
        assert_eq!(plan.stage_requests(0), 50);
        assert_eq!(plan.stage_requests(1), 300);
        assert_eq!(plan.stage_requests(2), 50);
        assert_eq!(plan.duration(), Duration::from_secs(5));
    }

    #[test]
    fn a_steady_stage_spaces_requests_evenly() {
        let plan = shape("2s:10");
        // Ramp from 0 to 10 over 2 s: 10 requests, the k-th at sqrt(2k/5) seconds.
        assert_eq!(plan.total_requests(), 10);
        let steady = shape("1s:0,1s:4,2s:4");
        let due: Vec<f64> = (3..=10).map(|k| steady.due_at(k).as_secs_f64()).collect();
        for (n, pair) in due.windows(2).enumerate() {
            assert!((pair[1] - pair[0] - 0.25).abs() < 1e-9, "gap {n}: {pair:?}");
        }
    }

    #[test]
    fn due_times_rise_and_end_within_the_plan() {
        let plan = shape("1s:100,3s:100,1s:0");
        let mut last = Duration::ZERO;
        for k in 1..=plan.total_requests() {
            let at = plan.due_at(k);
            assert!(at >= last, "request {k} due before request {}", k - 1);
            last = at;
        }
        assert!(last <= plan.duration());
        assert!((plan.due_at(50).as_secs_f64() - 1.0).abs() < 1e-9);
        // The ramp 0→100/s over 1 s has 50·t² requests due by t: the first at sqrt(1/50) s.
        assert!((plan.due_at(1).as_secs_f64() - (1.0f64 / 50.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn the_asked_counts_follow_the_ramps() {
        let plan = shape("10s:100,10s:100,10s:0");
        let second =
            |from: u64| plan.due_between(Duration::from_secs(from), Duration::from_secs(from + 1));
        assert!(
            (second(4) - 45.0).abs() < 1e-9,
            "the ramp up asks 45 in its fifth second"
        );
        assert!((second(15) - 100.0).abs() < 1e-9);
        assert!(
            (second(25) - 45.0).abs() < 1e-9,
            "the ramp down asks 45 at its middle"
        );
        assert_eq!(plan.stage_at(Duration::from_secs(25)), 2);
        assert!((plan.due_between(Duration::ZERO, Duration::from_secs(10)) - 500.0).abs() < 1e-9);
        assert_eq!(plan.stage_start_rate(2), 100.0);
    }
}
