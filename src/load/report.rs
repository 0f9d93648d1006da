//! The report of a run: one serializable structure that the summary table, the JSON file and
//! the HTML page are all written from.

use super::cpu::CpuUse;
use super::format::{format_duration, format_ms};
use super::plan::Plan;
use super::record::{RunTally, Tallies, Tally, LATE_SEND_TOLERANCE_MS};
use super::run::{RunResult, SecondSplit};
use super::split::SplitReport;
use super::threshold::Verdict;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Share of requests that may leave late before the generator is called out as the limit.
const MISSED_SLOTS_WARN_PERCENT: f64 = 1.0;
/// Generator CPU use, percent of all cores, past which it may be the limit.
const CPU_WARN_PERCENT_OF_ALL_CORES: f64 = 80.0;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub parapet_version: &'static str,
    pub started_unix_secs: u64,
    pub plan: PlanReport,
    pub stages: Vec<StageReport>,
    pub total: StageReport,
    /// Failed requests by kind: `status NNN`, `timeout`, `connect: …`, `tls: …`, `closed…`.
    pub error_kinds: BTreeMap<String, u64>,
    pub thresholds: Vec<Verdict>,
    /// Set when Ctrl-C stopped the run this many seconds in; such a run does not pass.
    pub interrupted_after_secs: Option<f64>,
    /// Every request sent failed (refused, timed out, or an error status): such a run does not
    /// pass, thresholds or not.
    pub all_failed: bool,
    /// True when every threshold holds, the run was not interrupted and not every request
    /// failed.
    pub passed: bool,
    pub generator: GeneratorReport,
    /// Parapet's own view (with --admin).
    pub split: Option<SplitReport>,
    pub timeline: Vec<SecondReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub source: String,
    pub url: String,
    pub method: String,
    pub protocol: &'static str,
    pub connections: usize,
    pub timeout_ms: u64,
    /// `name: value`, as sent besides Host and User-Agent.
    pub headers: Vec<String>,
    pub body_bytes: usize,
    pub stages: Vec<StagePlan>,
    pub thresholds: Vec<String>,
    pub admin: Option<String>,
    pub requests: u64,
    pub duration_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    pub duration_secs: f64,
    pub rate: f64,
}

/// Latency in milliseconds, from when each request was due.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl LatencyReport {
    fn of(tally: &Tally) -> LatencyReport {
        let mean = (!tally.latency_us.is_empty()).then(|| tally.latency_us.mean() / 1000.0);
        LatencyReport {
            p50: tally.latency_ms(50.0),
            p90: tally.latency_ms(90.0),
            p95: tally.latency_ms(95.0),
            p99: tally.latency_ms(99.0),
            p99_9: tally.latency_ms(99.9),
            max: tally.latency_ms(100.0),
            mean,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub name: String,
    pub from_rate: f64,
    pub to_rate: f64,
    pub duration_secs: f64,
    /// Requests the plan asked for in this stage.
    pub asked: u64,
    /// Requests that left while this stage ran.
    pub sent: u64,
    /// Of the stage's requests: finished at all, got a response, failed.
    pub finished: u64,
    pub answered: u64,
    pub errors: u64,
    pub error_percent: Option<f64>,
    pub asked_rps: f64,
    /// `sent / duration`.
    pub achieved_rps: f64,
    pub body_bytes: u64,
    pub latency_ms: LatencyReport,
}

impl StageReport {
    /// `100/s for 1m` (steady) or `100→500/s in 30s` (a ramp).
    pub fn shape(&self) -> String {
        let duration = format_duration(self.duration_secs);
        match self.from_rate == self.to_rate {
            true => format!("{:.0}/s for {duration}", self.to_rate),
            false => format!("{:.0}→{:.0}/s in {duration}", self.from_rate, self.to_rate),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GeneratorReport {
    pub cpu: Option<CpuUse>,
    pub missed_send_slots: u64,
    pub late_send_tolerance_ms: u64,
    /// How late requests left after they were due: p50, p99, max (ms). This part of the
    /// reported latency is the generator's, not the server's.
    pub send_lag_ms: [f64; 3],
    pub scrape_failures: u64,
    /// Set when the generator may have held the load back; read the figures with it in mind.
    pub warnings: Vec<String>,
}

impl GeneratorReport {
    /// The generator's CPU use, as a sentence.
    pub fn cpu_text(&self) -> String {
        self.cpu.as_ref().map_or("CPU unknown".to_string(), |cpu| {
            format!(
                "CPU {:.2}s over {:.1}s ({:.0}% of one core; {} cores), {:.0}µs per request",
                cpu.cpu_seconds,
                cpu.wall_seconds,
                cpu.percent_of_one_core,
                cpu.cores,
                cpu.cpu_us_per_request
            )
        })
    }

    /// How late requests left, as a sentence.
    pub fn lag_text(&self) -> String {
        let [p50, p99, max] = self.send_lag_ms.map(format_ms);
        format!(
            "requests left after they were due by p50 {p50}, p99 {p99}, max {max}; missed send slots (> {} ms late): {}",
            self.late_send_tolerance_ms, self.missed_send_slots
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SecondReport {
    /// Seconds since the start.
    pub t: u64,
    pub asked: f64,
    pub sent: u64,
    pub finished: u64,
    pub failed: u64,
    /// Of the requests due in this second.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Parapet's view of this second (with --admin).
    pub parapet: Option<SecondSplit>,
}

impl Report {
    pub fn new(plan: &Plan, run: RunResult) -> Report {
        let tallies = &run.tallies;
        let plan_secs = plan.shape.duration().as_secs_f64();
        let thresholds: Vec<Verdict> = plan
            .thresholds
            .iter()
            .map(|t| {
                t.judge(&RunTally {
                    tally: &tallies.total,
                    plan_secs,
                })
            })
            .collect();
        let total = total_report(plan, tallies);
        let client = &total.latency_ms;
        let client_ms = |percentile: f64| match percentile {
            50.0 => client.p50,
            95.0 => client.p95,
            99.0 => client.p99,
            _ => None,
        };
        let generator = generator_report(&run);
        let split = run.split.map(|split| split.capped_by_client(client_ms));
        let stages = (0..plan.stages.len())
            .map(|index| stage_report(plan, tallies, index))
            .collect();
        let total = total_report(plan, tallies);
        let all_failed = total.finished > 0 && total.errors == total.finished;
        Report {
            parapet_version: env!("CARGO_PKG_VERSION"),
            started_unix_secs: run.started_unix_secs,
            plan: plan_report(plan),
            stages,
            total,
            error_kinds: tallies.error_kinds.clone(),
            interrupted_after_secs: run.interrupted.map(|d| d.as_secs_f64()),
            all_failed,
            passed: run.interrupted.is_none() && !all_failed && thresholds.iter().all(|v| v.passed),
            thresholds,
            generator,
            timeline: timeline(plan, tallies, &run.split_timeline),
            split,
        }
    }
}

fn plan_report(plan: &Plan) -> PlanReport {
    PlanReport {
        source: plan.source.clone(),
        url: plan.url.url.clone(),
        method: plan.method.to_string(),
        protocol: plan.protocol.as_str(),
        connections: plan.connections,
        timeout_ms: plan.timeout.as_millis() as u64,
        headers: plan
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
            .collect(),
        body_bytes: plan.body.len(),
        stages: plan
            .stages
            .iter()
            .map(|s| StagePlan {
                duration_secs: s.duration.as_secs_f64(),
                rate: s.rate,
            })
            .collect(),
        thresholds: plan.thresholds.iter().map(|t| t.text.clone()).collect(),
        admin: plan.admin.as_ref().map(|a| a.url.clone()),
        requests: plan.shape.total_requests(),
        duration_secs: plan.shape.duration().as_secs_f64(),
    }
}

fn tally_report(name: String, tally: &Tally, asked: u64, sent: u64, secs: f64) -> StageReport {
    let secs = secs.max(f64::EPSILON);
    StageReport {
        name,
        from_rate: 0.0,
        to_rate: 0.0,
        duration_secs: secs,
        asked,
        sent,
        finished: tally.finished,
        answered: tally.answered,
        errors: tally.errors,
        error_percent: tally.error_percent(),
        asked_rps: asked as f64 / secs,
        achieved_rps: sent as f64 / secs,
        body_bytes: tally.body_bytes,
        latency_ms: LatencyReport::of(tally),
    }
}

fn stage_report(plan: &Plan, tallies: &Tallies, index: usize) -> StageReport {
    let stage = plan.stages[index];
    let tally = &tallies.stages[index];
    let sent = tallies.stage_sent.get(index).copied().unwrap_or(0);
    StageReport {
        from_rate: plan.shape.stage_start_rate(index),
        to_rate: stage.rate,
        ..tally_report(
            format!("{}", index + 1),
            tally,
            plan.shape.stage_requests(index),
            sent,
            stage.duration.as_secs_f64(),
        )
    }
}

fn total_report(plan: &Plan, tallies: &Tallies) -> StageReport {
    let sent = tallies.stage_sent.iter().sum();
    tally_report(
        "total".to_string(),
        &tallies.total,
        plan.shape.total_requests(),
        sent,
        plan.shape.duration().as_secs_f64(),
    )
}

fn generator_report(run: &RunResult) -> GeneratorReport {
    let tallies = &run.tallies;
    let mut warnings = Vec::new();
    let finished = tallies.total.finished.max(1) as f64;
    let missed_percent = tallies.missed_send_slots as f64 * 100.0 / finished;
    if missed_percent > MISSED_SLOTS_WARN_PERCENT {
        warnings.push(format!(
            "{} requests ({missed_percent:.1}%) left more than {LATE_SEND_TOLERANCE_MS} ms after they were due (max {:.0} ms): the generator or its --connections limit could not keep the asked rate; their latency counts from when they were due",
            tallies.missed_send_slots,
            tallies.send_lag_us.max() as f64 / 1000.0
        ));
    }
    if let Some(cpu) = &run.cpu {
        let of_all_cores = cpu.percent_of_one_core / cpu.cores.max(1) as f64;
        if of_all_cores > CPU_WARN_PERCENT_OF_ALL_CORES {
            warnings.push(format!(
                "the generator used {of_all_cores:.0}% of all {} cores: it may have been the limit",
                cpu.cores
            ));
        }
    }
    if run.scrape_failures > 0 {
        warnings.push(format!(
            "{} scrapes of Parapet's /metrics failed",
            run.scrape_failures
        ));
    }
    GeneratorReport {
        cpu: run.cpu.clone(),
        missed_send_slots: tallies.missed_send_slots,
        late_send_tolerance_ms: LATE_SEND_TOLERANCE_MS,
        send_lag_ms: [50.0, 99.0, 100.0]
            .map(|p| tallies.send_lag_us.value_at_quantile(p / 100.0) as f64 / 1000.0),
        scrape_failures: run.scrape_failures,
        warnings,
    }
}

fn timeline(plan: &Plan, tallies: &Tallies, split: &[SecondSplit]) -> Vec<SecondReport> {
    tallies
        .seconds
        .iter()
        .enumerate()
        .map(|(t, second)| {
            let from = Duration::from_secs(t as u64);
            SecondReport {
                t: t as u64,
                asked: plan.shape.due_between(from, from + Duration::from_secs(1)),
                sent: second.sent,
                finished: second.finished,
                failed: second.failed,
                p50_ms: second.due.latency_ms(50.0),
                p95_ms: second.due.latency_ms(95.0),
                p99_ms: second.due.latency_ms(99.0),
                // A scrape at the end of second t+1 covers second t.
                parapet: split.iter().find(|s| s.t == t as u64 + 1).cloned(),
            }
        })
        .collect()
}
