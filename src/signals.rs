//! Signals from the first instant. `parapet run` catches SIGHUP, SIGUSR1, SIGTERM, SIGQUIT and
//! SIGINT as soon as it starts ([`catch_early`]), so one that arrives before its handler exists
//! (a `--upgrade` process still waiting for the old one's sockets, a reload sent during
//! start-up) is held instead of killing the process with the default action; each handler, once
//! installed, asks [`arrived_early`] and acts on it. [`ShutdownSignals`] is the stop and upgrade
//! side, given to Pingora in place of its own watcher (which installs its handlers only once
//! every service has started).

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::SigId;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals `parapet run` handles.
const HANDLED: [c_int; 5] = [SIGHUP, SIGUSR1, SIGTERM, SIGQUIT, SIGINT];

/// One signal held until its handler exists.
struct Held {
    signal: c_int,
    arrived: Arc<AtomicBool>,
    registration: Mutex<Option<SigId>>,
}

static HELD: OnceLock<Vec<Held>> = OnceLock::new();

/// Holds every handled signal from now on (call first thing in `run`).
pub fn catch_early() {
    HELD.get_or_init(|| {
        HANDLED
            .iter()
            .map(|&signal| {
                let arrived = Arc::new(AtomicBool::new(false));
                let registration = match signal_hook::flag::register(signal, Arc::clone(&arrived)) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        eprintln!("cannot hold signal {signal} until its handler exists: {e}");
                        None
                    }
                };
                Held {
                    signal,
                    arrived,
                    registration: Mutex::new(registration),
                }
            })
            .collect()
    });
}

/// Whether `signal` arrived while it was held; from now on it is no longer held. Call once
/// the signal's real handler is installed.
pub fn arrived_early(signal: c_int) -> bool {
    let Some(held) = HELD
        .get()
        .and_then(|all| all.iter().find(|h| h.signal == signal))
    else {
        return false;
    };
    let registration = held.registration.lock().ok().and_then(|mut r| r.take());
    if let Some(id) = registration {
        signal_hook::low_level::unregister(id);
    }
    held.arrived.swap(false, Ordering::SeqCst)
}

/// SIGQUIT: graceful upgrade; SIGTERM: graceful stop; SIGINT: fast stop — also when the signal
/// arrived before this watcher was asked.
pub struct ShutdownSignals;

#[async_trait]
impl ShutdownSignalWatch for ShutdownSignals {
    async fn recv(&self) -> ShutdownSignal {
        let mut upgrade = listen(SignalKind::quit());
        let mut terminate = listen(SignalKind::terminate());
        let mut interrupt = listen(SignalKind::interrupt());
        if arrived_early(SIGINT) {
            return ShutdownSignal::FastShutdown;
        }
        if arrived_early(SIGTERM) {
            return ShutdownSignal::GracefulTerminate;
        }
        if arrived_early(SIGQUIT) {
            return ShutdownSignal::GracefulUpgrade;
        }
        tokio::select! {
            _ = next(&mut upgrade) => ShutdownSignal::GracefulUpgrade,
            _ = next(&mut terminate) => ShutdownSignal::GracefulTerminate,
            _ = next(&mut interrupt) => ShutdownSignal::FastShutdown,
        }
    }
}

fn listen(kind: SignalKind) -> Option<Signal> {
    signal(kind)
        .map_err(|e| tracing::error!(signal = ?kind, error = %e, "cannot handle signal"))
        .ok()
}

/// The next delivery of a signal being handled; never, for one that could not be.
async fn next(signal: &mut Option<Signal>) {
    let delivered = match signal {
        Some(signal) => signal.recv().await.is_some(),
        None => false,
    };
    if !delivered {
        std::future::pending::<()>().await;
    }
}
