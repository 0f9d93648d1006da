//! One run, in order: prepare the client, scrape Parapet's metrics, send every request when it
//! is due (`dispatch`), tick progress and scrape every second meanwhile, wait for the last
//! answers, scrape again.

use super::client::Client;
use super::cpu::{CpuMeter, CpuUse};
use super::dispatch;
use super::plan::{Plan, Target};
use super::progress::{Progress, TickView};
use super::record::{Recorder, Tallies};
use super::scrape;
use super::split::{Snapshot, SplitReport};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Parapet records a request's metrics just after the client has its last byte: wait this long
/// after the last answer before the final scrape, so that the last requests are in it.
const METRICS_SETTLE_MS: u64 = 200;
const TICK: Duration = Duration::from_secs(1);

/// Everything one run measured.
pub struct RunResult {
    pub tallies: Tallies,
    /// When Ctrl-C stopped the sending, from the start.
    pub interrupted: Option<Duration>,
    pub cpu: Option<CpuUse>,
    pub split: Option<SplitReport>,
    pub split_timeline: Vec<SecondSplit>,
    pub scrape_failures: u64,
    pub started_unix_secs: u64,
}

/// Parapet's view of one second, from two consecutive scrapes.
#[derive(Debug, Clone, Serialize)]
pub struct SecondSplit {
    /// Seconds since the start (the end of the second).
    pub t: u64,
    pub requests: u64,
    pub total_p95_ms: Option<f64>,
    pub upstream_p95_ms: Option<f64>,
    pub proxy_p95_ms: Option<f64>,
}

impl SecondSplit {
    fn new(t: u64, delta: &Snapshot) -> SecondSplit {
        let total = delta.all_routes();
        let p95_ms =
            |buckets: &super::split::Buckets| buckets.percentile(95.0).map(|e| e.seconds * 1000.0);
        let total_p95_ms = p95_ms(&total);
        let upstream_p95_ms = p95_ms(&delta.all_servers());
        SecondSplit {
            t,
            requests: total.count as u64,
            total_p95_ms,
            upstream_p95_ms,
            proxy_p95_ms: total_p95_ms
                .zip(upstream_p95_ms)
                .map(|(t, u)| (t - u).max(0.0)),
        }
    }
}

/// Runs the plan. An error here means the run could not start (bad target, admin unreachable).
pub async fn execute(plan: &Plan) -> Result<RunResult, String> {
    let client = Arc::new(Client::new(plan).await?);
    let before = match &plan.admin {
        Some(admin) => Some(
            snapshot(admin)
                .await
                .map_err(|e| format!("--admin {}: {e}", admin.url))?,
        ),
        None => None,
    };
    let started_unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cpu = CpuMeter::start();
    let recorder = Arc::new(Recorder::new(
        Instant::now(),
        plan.shape.clone(),
        plan.stages.len(),
    ));
    let (stop_watch, stopped) = oneshot::channel();
    let watcher = tokio::spawn(watch(
        plan.clone(),
        Arc::clone(&recorder),
        before.clone(),
        stopped,
    ));
    let interrupted = dispatch::send_all(plan, &client, &recorder).await;
    let _ = stop_watch.send(());
    let watched = watcher.await.unwrap_or_default();
    let tallies = recorder.snapshot();
    let split = match (&plan.admin, &before) {
        (Some(admin), Some(before)) => final_split(admin, before).await,
        _ => None,
    };
    Ok(RunResult {
        interrupted,
        cpu: cpu.finish(tallies.total.finished),
        scrape_failures: watched.scrape_failures
            + u64::from(plan.admin.is_some() && split.is_none()),
        tallies,
        split,
        split_timeline: watched.timeline,
        started_unix_secs,
    })
}

async fn snapshot(admin: &Target) -> Result<Snapshot, String> {
    scrape::fetch(admin)
        .await
        .map(|text| Snapshot::parse(&text))
}

async fn final_split(admin: &Target, before: &Snapshot) -> Option<SplitReport> {
    tokio::time::sleep(Duration::from_millis(METRICS_SETTLE_MS)).await;
    let after = snapshot(admin).await.ok()?;
    Some(SplitReport::new(&after.since(before)))
}

#[derive(Default)]
struct Watched {
    timeline: Vec<SecondSplit>,
    scrape_failures: u64,
}

/// Every second until stopped: scrape Parapet (with --admin) and show progress.
async fn watch(
    plan: Plan,
    recorder: Arc<Recorder>,
    mut previous: Option<Snapshot>,
    mut stopped: oneshot::Receiver<()>,
) -> Watched {
    let progress = Progress::new(&plan);
    let mut watched = Watched::default();
    let mut ticks = tokio::time::interval_at((recorder.start() + TICK).into(), TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stopped => break,
        }
        let elapsed = recorder.start().elapsed();
        let second = scrape_second(&plan, elapsed, &mut previous, &mut watched).await;
        progress.tick(&tick_view(&plan, &recorder, elapsed, second));
    }
    progress.finish();
    watched
}

/// Scrapes once (with --admin) and notes Parapet's view of the second just past.
async fn scrape_second(
    plan: &Plan,
    elapsed: Duration,
    previous: &mut Option<Snapshot>,
    watched: &mut Watched,
) -> Option<SecondSplit> {
    let (admin, before) = (plan.admin.as_ref()?, previous.as_ref()?);
    match snapshot(admin).await {
        Ok(now) => {
            let second = SecondSplit::new(elapsed.as_secs(), &now.since(before));
            watched.timeline.push(second.clone());
            *previous = Some(now);
            Some(second)
        }
        Err(_) => {
            watched.scrape_failures += 1;
            None
        }
    }
}

fn tick_view(
    plan: &Plan,
    recorder: &Recorder,
    elapsed: Duration,
    split: Option<SecondSplit>,
) -> TickView {
    let stage = plan.shape.stage_at(elapsed);
    let last_second = (elapsed.as_secs() as usize).saturating_sub(1);
    let in_flight = recorder.in_flight();
    recorder.with(|tallies| {
        let stage_tally = tallies.stages.get(stage);
        TickView {
            elapsed,
            stage,
            asked_rate: plan
                .shape
                .due_between(elapsed.saturating_sub(TICK), elapsed)
                .max(0.0),
            sent_last_second: tallies.seconds.get(last_second).map_or(0, |s| s.sent),
            stage_p95_ms: stage_tally.and_then(|t| t.latency_ms(95.0)),
            stage_finished: stage_tally.map_or(0, |t| t.finished),
            stage_errors: stage_tally.map_or(0, |t| t.errors),
            in_flight,
            split_p95_ms: split.and_then(|s| s.upstream_p95_ms.zip(s.proxy_p95_ms)),
        }
    })
}
