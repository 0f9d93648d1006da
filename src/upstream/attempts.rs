//! One request's tries at its upstream: the servers it tried, the current try's server (whose
//! in-flight slot it holds), the upstream's response time, and passive health bookkeeping.

use super::retry::{self, ProxyFailure, TryCount};
use super::{NoServer, Selection, Upstream};
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Attempts {
    /// Servers (indexes in the upstream) tried, in order.
    tried: Vec<usize>,
    /// The server of the current try; dropping it releases its in-flight slot.
    current: Option<Selection>,
    /// When the current try picked its server.
    started: Option<Instant>,
    /// The current try's server sent its response header.
    answered: bool,
    /// From picking the server to its response header, for the last try answered.
    upstream_time: Option<Duration>,
    stale_connection_retries: usize,
    /// The next try must not take a pooled connection (the last one was stale).
    new_connection: bool,
}

impl Attempts {
    /// Picks the server for the next try and the peer to connect to. The previous try's slot
    /// is released first, so it does not weigh on the choice.
    pub fn next(&mut self, upstream: &Upstream, hash_key: &[u8]) -> Result<HttpPeer, NoServer> {
        self.current = None;
        let selection = upstream.select(&self.tried, hash_key)?;
        if !self.tried.is_empty() {
            super::metrics::count_retry(&upstream.config.name);
        }
        self.tried.push(selection.index);
        self.started = Some(Instant::now());
        self.answered = false;
        let mut peer = upstream.peer(selection.index, selection.address);
        peer.options.new_connection = std::mem::take(&mut self.new_connection);
        self.current = Some(selection);
        Ok(peer)
    }

    /// The index in its upstream of the current try's server.
    pub fn current_server(&self) -> Option<usize> {
        self.current.as_ref().map(|current| current.index)
    }

    /// The connection for the current try is up (`reused`: from the keep-alive pool).
    pub fn connected(&self, reused: bool) {
        if let Some(current) = &self.current {
            let metrics = &current.guard.server().metrics;
            if reused {
                metrics.reuses.inc()
            } else {
                metrics.connects.inc()
            }
        }
    }

    /// The current try's server answered: its failures are forgiven and its time recorded.
    pub fn answered(&mut self) {
        let Some(current) = &self.current else { return };
        self.answered = true;
        let server = current.guard.server();
        server.record_success();
        if let Some(started) = self.started {
            let elapsed = started.elapsed();
            self.upstream_time = Some(elapsed);
            server.metrics.response_time.observe(elapsed.as_secs_f64());
        }
    }

    /// True until the current try's server sends its response header.
    pub fn awaiting_response(&self) -> bool {
        !self.answered
    }

    /// Connecting failed: counts it against the server; true when another try may follow.
    pub fn connect_failed(&self, upstream: &Upstream, reason: String) -> bool {
        if let Some(current) = &self.current {
            current.guard.server().metrics.connect_failures.inc();
        }
        self.blame_current(upstream, reason);
        retry::after_connect_failure(self.tried.len(), upstream.config.retries)
    }

    /// The try failed after connecting (`reason` says how, for `/upstreams`); true when the
    /// request is tried again.
    pub fn proxy_failed(
        &mut self,
        upstream: Option<&Upstream>,
        failure: &ProxyFailure,
        reason: String,
    ) -> bool {
        let count = TryCount {
            tries: self.tried.len(),
            retries: upstream.map(|u| u.config.retries),
            stale_connection_retries: self.stale_connection_retries,
        };
        let decision = retry::after_proxy_failure(failure, &count);
        if let (true, Some(upstream)) = (decision.server_at_fault, upstream) {
            self.blame_current(upstream, reason);
        }
        if decision.stale_connection {
            // A new connection, not a try of another server.
            self.stale_connection_retries += 1;
            self.new_connection = true;
            self.tried.pop();
            if let Some(current) = &self.current {
                current
                    .guard
                    .server()
                    .metrics
                    .stale_connection_retries
                    .inc();
            }
        }
        decision.retry
    }

    fn blame_current(&self, upstream: &Upstream, reason: String) {
        if let Some(current) = &self.current {
            upstream.record_failure(current.index, reason);
        }
    }

    /// Ends the request's last try, releasing its slot; the server it used, if any.
    pub fn finish(&mut self) -> Option<SocketAddr> {
        self.current.take().map(|s| s.address)
    }

    pub fn upstream_time(&self) -> Option<Duration> {
        self.upstream_time
    }
}
