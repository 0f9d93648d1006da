//! The scheduler: each request leaves when the plan says it is due, in a task of its own, so a
//! slow answer never delays the next send (the open model), and its latency counts from when it
//! was due (coordinated omission corrected).
//!
//! The due times are kept by a thread of its own, not by the runtime's timer: the OS wakes a
//! sleeping thread within tens of microseconds of its deadline, where the timer wheel wakes a
//! task up to a millisecond late, and that lateness would be counted as the server's latency.

use super::client::{Client, Failure};
use super::plan::Plan;
use super::record::{Outcome, Recorder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Longest the scheduler sleeps before looking whether Ctrl-C asked it to stop.
const STOP_CHECK_MS: u64 = 100;

/// Sends every request of the plan when it is due and returns when all have finished. Ctrl-C
/// stops the sending; the requests already sent are waited for, and it returns when it came.
pub async fn send_all(
    plan: &Plan,
    client: &Arc<Client>,
    recorder: &Arc<Recorder>,
) -> Option<Duration> {
    // Each request task holds a sender; the channel closes when the last one has finished.
    let (finished, mut all_finished) = mpsc::channel::<()>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_interrupt = tokio::spawn(stop_on_ctrl_c(Arc::clone(&stop)));
    let scheduler = Scheduler {
        plan: plan.clone(),
        client: Arc::clone(client),
        recorder: Arc::clone(recorder),
        runtime: Handle::current(),
        stop,
    };
    let interrupted = tokio::task::spawn_blocking(move || scheduler.run(finished))
        .await
        .unwrap_or(None);
    stop_on_interrupt.abort();
    let _ = all_finished.recv().await;
    interrupted
}

async fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        stop.store(true, Ordering::Relaxed);
    }
}

struct Scheduler {
    plan: Plan,
    client: Arc<Client>,
    recorder: Arc<Recorder>,
    runtime: Handle,
    stop: Arc<AtomicBool>,
}

impl Scheduler {
    /// Hands each request to the runtime at its due time; `Some(when)` if stopped early.
    fn run(self, finished: mpsc::Sender<()>) -> Option<Duration> {
        let start = self.recorder.start();
        for k in 1..=self.plan.shape.total_requests() {
            let due = start + self.plan.shape.due_at(k);
            if !self.sleep_until(due) {
                return Some(start.elapsed());
            }
            self.recorder.dispatched();
            let (client, recorder, finished) = (
                Arc::clone(&self.client),
                Arc::clone(&self.recorder),
                finished.clone(),
            );
            let timeout = self.plan.timeout;
            self.runtime.spawn(async move {
                send_one(&client, &recorder, due, timeout).await;
                drop(finished);
            });
        }
        None
    }

    /// Sleeps until `deadline`; false when asked to stop first.
    fn sleep_until(&self, deadline: Instant) -> bool {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(STOP_CHECK_MS)));
        }
    }
}

async fn send_one(client: &Client, recorder: &Recorder, due: Instant, timeout: Duration) {
    let mut sent_at = None;
    let exchange = client.send(&mut sent_at);
    let result = tokio::time::timeout_at((due + timeout).into(), exchange)
        .await
        .unwrap_or(Err(Failure::Timeout));
    recorder.record(Outcome {
        due,
        sent_at,
        finished: Instant::now(),
        result,
    });
}
