//! The access log: one JSON line per request, handed from the request path to a writer thread
//! through a bounded channel (a full buffer drops the line and counts it rather than slowing
//! requests), written to stdout or a file, and reopened on request (SIGUSR1) for rotation.

use crate::config::{AccessLogConfig, AccessLogTarget};
use crate::metrics::counter;
use prometheus::IntCounter;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

/// How long the writer waits for more lines before flushing what it has.
const FLUSH_AFTER_IDLE_MS: u64 = 200;

/// Lines dropped because the buffer was full.
static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "access_log_dropped_total",
        "Access log lines dropped because the log buffer was full.",
    )
});

/// Registers the access log's metric (at start).
pub fn register_metrics() {
    LazyLock::force(&DROPPED);
}

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub time: String,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub upstream_server: Option<String>,
    pub upstream_time_ms: Option<f64>,
    /// hit, stale, miss, expired or bypass on a route that caches; null elsewhere.
    pub cache_status: Option<&'static str>,
    pub request_id: String,
    /// Why a request head that could not be read was refused (`too many headers`, `invalid
    /// header name`...); left out of other lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

enum Message {
    Line(String),
    Reopen,
    Flush(SyncSender<()>),
}

static SENDER: OnceLock<SyncSender<Message>> = OnceLock::new();

/// Starts the writer thread; until then (or with the log off) entries are discarded.
pub fn start(config: &AccessLogConfig) -> std::io::Result<()> {
    if config.target == AccessLogTarget::Off {
        return Ok(());
    }
    let mut sink = Sink::open(config.target.clone())?;
    let (sender, receiver) = sync_channel(config.buffer);
    if SENDER.set(sender).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || sink.run(receiver))?;
    Ok(())
}

/// True when entries are being written (so callers can skip building them).
pub fn enabled() -> bool {
    SENDER.get().is_some()
}

/// Queues one entry without blocking.
pub fn log(entry: &Entry) {
    let Some(sender) = SENDER.get() else { return };
    let Ok(line) = serde_json::to_string(entry) else {
        return;
    };
    if let Err(TrySendError::Full(_)) = sender.try_send(Message::Line(line)) {
        DROPPED.inc();
    }
}

/// Asks the writer to reopen its file (after log rotation moved it away).
pub fn reopen() {
    if let Some(sender) = SENDER.get() {
        let _ = sender.send(Message::Reopen);
    }
}

/// Waits (at most `timeout`) until every queued line is written.
pub fn flush(timeout: Duration) {
    let Some(sender) = SENDER.get() else { return };
    let (done, wait) = sync_channel(1);
    if sender.send(Message::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(timeout);
    }
}

struct Sink {
    target: AccessLogTarget,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    fn open(target: AccessLogTarget) -> std::io::Result<Sink> {
        let out: Box<dyn Write + Send> = match &target {
            AccessLogTarget::File(path) => Box::new(open_append(path)?),
            _ => Box::new(std::io::stdout()),
        };
        Ok(Sink {
            target,
            out: BufWriter::new(out),
        })
    }

    fn run(&mut self, receiver: Receiver<Message>) {
        loop {
            match receiver.recv_timeout(Duration::from_millis(FLUSH_AFTER_IDLE_MS)) {
                Ok(Message::Line(line)) => {
                    let _ = self.out.write_all(line.as_bytes());
                    let _ = self.out.write_all(b"\n");
                }
                Ok(Message::Reopen) => self.reopen(),
                Ok(Message::Flush(done)) => {
                    let _ = self.out.flush();
                    let _ = done.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.out.flush();
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn reopen(&mut self) {
        let _ = self.out.flush();
        let AccessLogTarget::File(path) = &self.target else {
            return;
        };
        match open_append(path) {
            Ok(file) => {
                self.out = BufWriter::new(Box::new(file));
                tracing::info!(path = %path.display(), "access log reopened");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot reopen the access log; still writing to the old file")
            }
        }
    }
}

fn open_append(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open access log {}: {e}", path.display()),
            )
        })
}
