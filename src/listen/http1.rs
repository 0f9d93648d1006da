//! One HTTP/1.x client connection, request after request: the keep-alive loop Pingora's own
//! HTTP app runs, with Parapet's client timeouts and pipelining.
//!
//! - A new connection may stay silent for `header_timeout` (then it is closed without a word,
//!   as nginx does); a request head must be complete `header_timeout` after its first byte,
//!   else 408 and close (the vendored `set_header_timeout`, and the vendored keep-alive read
//!   that answers a head stalled part-way with 408 instead of closing).
//! - Between requests the connection may idle for `keepalive_timeout` (whole seconds, rounded
//!   up); zero turns keep-alive off. Pingora would otherwise keep it as long as the client's
//!   `Keep-Alive` header asks, or forever.
//! - Pipelined requests are answered one after another, in order (RFC 9112 §9.3.2).

use pingora::apps::{next_request_arrives, HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// The client-side timeouts of `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    pub header: Duration,
    /// `None`: no keep-alive.
    pub keepalive: Option<Duration>,
}

impl ClientTimeouts {
    pub fn new(header: Duration, keepalive: Duration) -> Self {
        ClientTimeouts {
            header,
            keepalive: (!keepalive.is_zero()).then_some(keepalive),
        }
    }

    /// A new connection: silent for at most `header`, then the head within `header`.
    fn first_request(&self, session: &mut ServerSession) {
        session.set_keepalive(Some(whole_seconds(self.header)));
        self.every_request(session);
    }

    /// A kept-alive connection: idle for at most `keepalive`, then the head within `header`.
    fn next_request(&self, session: &mut ServerSession) {
        session.set_keepalive(self.keepalive.map(whole_seconds));
        self.every_request(session);
    }

    fn every_request(&self, session: &mut ServerSession) {
        session.set_header_timeout(Some(self.header));
        session.set_pipelining_enabled(true);
        if self.keepalive.is_none() {
            session.set_keepalive_reuses_remaining(Some(0));
        }
    }
}

/// Pingora's keep-alive timeout is in whole seconds, where 0 means "forever": round up.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Serves one HTTP/1.x connection until it closes. Between requests the connection holds only
/// its stream (the vendored `next_request_arrives`): the session and its buffers are made when
/// the client sends.
pub async fn serve<A: HttpServerApp + Send + Sync + 'static>(
    app: &Arc<A>,
    timeouts: ClientTimeouts,
    stream: Stream,
    shutdown: &ShutdownWatch,
) {
    if !next_request_arrives(&stream, Some(whole_seconds(timeouts.header)), shutdown).await {
        return;
    }
    let mut session = ServerSession::new_http1(stream);
    timeouts.first_request(&mut session);
    if *shutdown.borrow() {
        session.set_keepalive(None);
    }
    while let Some(reused) = app.process_new_http(session, shutdown).await {
        let (stream, settings) = reused.consume();
        let pipelined = settings
            .as_ref()
            .is_some_and(HttpPersistentSettings::has_pipelined_request);
        let idle_limit = timeouts.keepalive.map(whole_seconds);
        if !pipelined && !next_request_arrives(&stream, idle_limit, shutdown).await {
            return;
        }
        session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        timeouts.next_request(&mut session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_seconds_round_up_and_never_reach_pingoras_forever() {
        assert_eq!(whole_seconds(Duration::from_secs(75)), 75);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
    }

    #[test]
    fn a_zero_keepalive_turns_keepalive_off() {
        let timeouts = ClientTimeouts::new(Duration::from_secs(10), Duration::ZERO);
        assert_eq!(timeouts.keepalive, None);
    }
}
