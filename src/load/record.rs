//! What the run measured, as requests finish: HDR latency histograms (from when each request was
//! due) for the whole run, each stage and each second; counts, error kinds and late sends.

use super::client::{Answer, Failure};
use super::stages::Shape;
use super::threshold::Measurements;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A request that left this much after it was due counts as a missed send slot: the generator
/// (or its connection limit) could not keep the asked rate. Timer wake-ups alone stay well under.
pub const LATE_SEND_TOLERANCE_MS: u64 = 10;
/// Significant digits of the run and stage histograms (0.1 % resolution).
const RUN_HISTOGRAM_DIGITS: u8 = 3;
/// Significant digits of the per-second histograms (1 % resolution; there may be thousands).
const SECOND_HISTOGRAM_DIGITS: u8 = 2;

/// How one request went.
pub struct Outcome {
    /// When the plan said it should be sent; latency counts from here.
    pub due: Instant,
    /// When it got a connection and left; `None` if it timed out before.
    pub sent_at: Option<Instant>,
    pub finished: Instant,
    pub result: Result<Answer, Failure>,
}

impl Outcome {
    fn is_error(&self) -> bool {
        match &self.result {
            Ok(answer) => !(200..400).contains(&answer.status),
            Err(_) => true,
        }
    }

    /// Latency counts for every response, and for timeouts (at least the timeout, from when
    /// the request was due); a refused connection has no latency worth the name.
    fn latency(&self) -> Option<Duration> {
        match &self.result {
            Ok(_) | Err(Failure::Timeout) => {
                Some(self.finished.saturating_duration_since(self.due))
            }
            Err(_) => None,
        }
    }

    fn error_kind(&self) -> Option<String> {
        match &self.result {
            Ok(answer) if self.is_error() => Some(format!("status {}", answer.status)),
            Ok(_) => None,
            Err(failure) => Some(failure.kind()),
        }
    }
}

fn histogram(digits: u8) -> Histogram<u64> {
    Histogram::new(digits).expect("1 to 5 significant digits is a valid histogram")
}

fn record_micros(histogram: &mut Histogram<u64>, duration: Duration) {
    let micros = (duration.as_micros() as u64).max(1);
    // The histograms grow to the largest value recorded; only a value past what a usize can
    // index fails to fit, and it is then counted at the largest the histogram holds.
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}

/// Counts and latencies of a set of requests (the run, a stage).
#[derive(Debug, Clone)]
pub struct Tally {
    pub latency_us: Histogram<u64>,
    /// Requests finished (answered, failed or timed out).
    pub finished: u64,
    /// Requests that got a complete response, whatever its status.
    pub answered: u64,
    pub errors: u64,
    pub body_bytes: u64,
}

impl Tally {
    fn new(digits: u8) -> Tally {
        Tally {
            latency_us: histogram(digits),
            finished: 0,
            answered: 0,
            errors: 0,
            body_bytes: 0,
        }
    }

    fn add(&mut self, outcome: &Outcome) {
        self.finished += 1;
        if let Ok(answer) = &outcome.result {
            self.answered += 1;
            self.body_bytes += answer.body_bytes;
        }
        if outcome.is_error() {
            self.errors += 1;
        }
        if let Some(latency) = outcome.latency() {
            record_micros(&mut self.latency_us, latency);
        }
    }

    /// Latency at `percentile` (0–100) in milliseconds.
    pub fn latency_ms(&self, percentile: f64) -> Option<f64> {
        (!self.latency_us.is_empty())
            .then(|| self.latency_us.value_at_quantile(percentile / 100.0) as f64 / 1000.0)
    }

    pub fn error_percent(&self) -> Option<f64> {
        (self.finished > 0).then(|| self.errors as f64 * 100.0 / self.finished as f64)
    }
}

/// The run's tally, judged over the plan's duration.
pub struct RunTally<'a> {
    pub tally: &'a Tally,
    pub plan_secs: f64,
}

impl Measurements for RunTally<'_> {
    fn latency_ms(&self, percentile: f64) -> Option<f64> {
        self.tally.latency_ms(percentile)
    }

    fn error_percent(&self) -> Option<f64> {
        self.tally.error_percent()
    }

    fn rps(&self) -> f64 {
        self.tally.answered as f64 / self.plan_secs.max(f64::EPSILON)
    }
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Latencies of the requests due in this second.
    pub due: Tally,
    /// Requests that left in this second.
    pub sent: u64,
    /// Requests that finished in this second, and how many of those failed.
    pub finished: u64,
    pub failed: u64,
}

impl Second {
    fn new() -> Second {
        Second {
            due: Tally::new(SECOND_HISTOGRAM_DIGITS),
            sent: 0,
            finished: 0,
            failed: 0,
        }
    }
}

/// Everything measured so far.
#[derive(Debug, Clone)]
pub struct Tallies {
    pub total: Tally,
    pub stages: Vec<Tally>,
    pub seconds: Vec<Second>,
    /// Requests that left while each stage was running (late ones count where they left).
    pub stage_sent: Vec<u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Requests that left more than [`LATE_SEND_TOLERANCE_MS`] after they were due.
    pub missed_send_slots: u64,
    /// How late requests left (µs): the generator's own share of the latency it reports.
    pub send_lag_us: Histogram<u64>,
}

/// Collects outcomes from every request task.
pub struct Recorder {
    start: Instant,
    shape: Shape,
    dispatched: AtomicU64,
    tallies: parking_lot::Mutex<Tallies>,
}

impl Recorder {
    pub fn new(start: Instant, shape: Shape, stages: usize) -> Recorder {
        let seconds = shape.duration().as_secs() as usize + 1;
        Recorder {
            start,
            shape,
            dispatched: AtomicU64::new(0),
            tallies: parking_lot::Mutex::new(Tallies {
                total: Tally::new(RUN_HISTOGRAM_DIGITS),
                stages: (0..stages)
                    .map(|_| Tally::new(RUN_HISTOGRAM_DIGITS))
                    .collect(),
                seconds: (0..seconds).map(|_| Second::new()).collect(),
                stage_sent: vec![0; stages],
                error_kinds: BTreeMap::new(),
                missed_send_slots: 0,
                send_lag_us: histogram(RUN_HISTOGRAM_DIGITS),
            }),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Notes that a request was handed to a task (for the in-flight count).
    pub fn dispatched(&self) {
        self.dispatched.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        let finished = self.tallies.lock().total.finished;
        self.dispatched
            .load(Ordering::Relaxed)
            .saturating_sub(finished)
    }

    pub fn record(&self, outcome: Outcome) {
        let due_offset = outcome.due.saturating_duration_since(self.start);
        let stage = self.shape.stage_at(due_offset);
        let lag = outcome
            .sent_at
            .map(|sent| sent.saturating_duration_since(outcome.due));
        let kind = outcome.error_kind();
        let mut tallies = self.tallies.lock();
        tallies.total.add(&outcome);
        if let Some(tally) = tallies.stages.get_mut(stage) {
            tally.add(&outcome);
        }
        self.second(&mut tallies, outcome.due).due.add(&outcome);
        if let Some(sent) = outcome.sent_at {
            self.second(&mut tallies, sent).sent += 1;
            let stage_then = self
                .shape
                .stage_at(sent.saturating_duration_since(self.start));
            if let Some(count) = tallies.stage_sent.get_mut(stage_then) {
                *count += 1;
            }
        }
        let finished = self.second(&mut tallies, outcome.finished);
        finished.finished += 1;
        finished.failed += u64::from(kind.is_some());
        if let Some(kind) = kind {
            *tallies.error_kinds.entry(kind).or_default() += 1;
        }
        let lag = lag.unwrap_or(outcome.finished.saturating_duration_since(outcome.due));
        record_micros(&mut tallies.send_lag_us, lag);
        if lag > Duration::from_millis(LATE_SEND_TOLERANCE_MS) {
            tallies.missed_send_slots += 1;
        }
    }

    fn second<'a>(&self, tallies: &'a mut Tallies, at: Instant) -> &'a mut Second {
        let index = at.saturating_duration_since(self.start).as_secs() as usize;
        if tallies.seconds.len() <= index {
            tallies.seconds.resize_with(index + 1, Second::new);
        }
        &mut tallies.seconds[index]
    }

    /// A copy of everything measured so far.
    pub fn snapshot(&self) -> Tallies {
        self.tallies.lock().clone()
    }

    /// Reads the tallies in place, for the progress display.
    pub fn with<T>(&self, read: impl FnOnce(&Tallies) -> T) -> T {
        read(&self.tallies.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stages::parse_stage_list;

    fn outcome(start: Instant, due_ms: u64, took_ms: u64, status: u16) -> Outcome {
        let due = start + Duration::from_millis(due_ms);
        Outcome {
            due,
            sent_at: Some(due),
            finished: due + Duration::from_millis(took_ms),
            result: Ok(Answer {
                status,
                body_bytes: 10,
            }),
        }
    }

    #[test]
    fn latency_counts_from_when_the_request_was_due_not_when_it_left() {
        let start = Instant::now();
        let shape = Shape::new(&parse_stage_list("1s:10,1s:10").unwrap());
        let recorder = Recorder::new(start, shape, 2);
        let mut late = outcome(start, 100, 50, 200);
        late.sent_at = Some(late.due + Duration::from_millis(40));
        late.finished = late.due + Duration::from_millis(90);
        recorder.record(late);
        recorder.record(outcome(start, 1500, 20, 503));
        let tallies = recorder.snapshot();
        assert_eq!(tallies.total.finished, 2);
        assert_eq!(tallies.total.errors, 1);
        assert_eq!(tallies.stages[0].finished, 1);
        assert_eq!(tallies.stages[1].errors, 1);
        assert_eq!(tallies.missed_send_slots, 1);
        assert_eq!(tallies.error_kinds.get("status 503"), Some(&1));
        let p100 = tallies.stages[0].latency_ms(100.0).unwrap();
        assert!((p100 - 90.0).abs() < 0.1, "{p100}");
        assert_eq!(tallies.seconds[1].finished, 1);
    }

    #[test]
    fn a_refused_connection_is_an_error_without_a_latency() {
        let start = Instant::now();
        let recorder = Recorder::new(start, Shape::new(&parse_stage_list("1s:1").unwrap()), 1);
        let mut refused = outcome(start, 0, 1, 0);
        refused.result = Err(Failure::Connect("connection refused".to_string()));
        recorder.record(refused);
        let tallies = recorder.snapshot();
        assert_eq!(tallies.total.errors, 1);
        assert!(tallies.total.latency_ms(50.0).is_none());
        assert_eq!(tallies.total.error_percent(), Some(100.0));
    }
}
