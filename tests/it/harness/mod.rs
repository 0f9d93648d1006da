//! The shared harness, one file per role: ports and server tasks (`ports`), HTTP/1.1 on the
//! wire (`wire`), raw HTTP/2 frames (`h2_wire`), the scripted origin (`origin`), recording
//! backends (`backends`), the real `parapet` binary (`parapet`), clients (`clients`), the
//! metrics parser (`metrics`), a real `redis-server` (`redis_server`) and a TCP relay that can
//! be cut (`relay`).
//!
//! Everything talks over real sockets on 127.0.0.1. Ports come from the OS (bind `:0`, read the
//! port back); a process-wide registry makes sure no port is handed out twice, so tests can run in
//! parallel. Readiness is always polled, never slept for.

mod backends;
mod clients;
mod h2_wire;
mod metrics;
mod origin;
mod parapet;
mod ports;
mod redis_server;
mod relay;
mod wire;

pub use backends::*;
pub use clients::*;
pub use h2_wire::*;
pub use metrics::*;
pub use origin::*;
pub use parapet::*;
pub use ports::*;
pub use redis_server::*;
pub use relay::*;
pub use wire::*;

use std::time::{Duration, Instant};

/// Step between two readiness polls.
pub const POLL_STEP: Duration = Duration::from_millis(20);
/// Longest wait for anything to become ready (a listener, a log line, a state change).
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Client-side timeout for one HTTP exchange: long enough never to fire on a working proxy,
/// short enough that a hang fails the test instead of the suite.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `condition` every 20 ms for up to 10 s.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(POLL_STEP).await;
    }
}
