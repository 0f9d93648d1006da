//! Upstream groups: each server's live state (in-flight count, active and passive health),
//! selection by the configured balance (`select`), the guard that keeps in-flight counts
//! exact, one request's tries and the retry decision (`attempts`, `retry`), the peer of a try
//! (`peer`), active health checks (`health`) and the upstream metric handles (`metrics`).
//!
//! A server's state lives in an `Arc<ServerState>` that outlives any one request and is what
//! a reload will carry over; the in-flight count is only ever changed by [`InFlightGuard`],
//! which releases on drop, so errors, retries and client aborts cannot leak a count.

pub mod attempts;
pub mod health;
pub mod metrics;
mod peer;
pub mod retry;
pub mod select;

use crate::config::{Balance, HashKey, ServerConfig, UpstreamConfig};
use metrics::ServerMetrics;
use parking_lot::Mutex;
use select::Candidate;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Why a server changed state, for the log.
#[derive(Debug, Clone, Copy)]
pub enum StateChange {
    ActiveCheckFailed,
    ActiveCheckPassed,
    PassiveFailures,
    AnsweredAgain,
}

impl StateChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StateChange::ActiveCheckFailed => "active health check failed",
            StateChange::ActiveCheckPassed => "active health check passed",
            StateChange::PassiveFailures => "max_fails reached within fail_timeout",
            StateChange::AnsweredAgain => "answered again after being marked down",
        }
    }
}

#[derive(Debug, Default)]
struct PassiveHealth {
    failures: u32,
    window_start: Option<Instant>,
    down_until: Option<Instant>,
    /// Marked down passively and not yet seen answering: the next answer logs it up.
    announced_down: bool,
}

/// Which health kept a failure: the active check, or passive health (`max_fails`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Active,
    Passive,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Active => "health_check",
            FailureKind::Passive => "request",
        }
    }
}

/// A server's most recent failure, shown by `/upstreams` so an operator sees what took it down.
#[derive(Debug, Clone)]
pub struct LastFailure {
    pub kind: FailureKind,
    /// Short and free of request data, e.g. `ConnectRefused: Connection refused (os error 111)`.
    pub reason: String,
    pub at: SystemTime,
}

/// A Pingora error as a failure reason: its type, and its root cause when it has one.
pub fn failure_reason(error: &pingora::Error) -> String {
    let kind = match error.etype() {
        pingora::ErrorType::CustomCode(name, code) => format!("{name} {code}"),
        other => other.as_str().to_string(),
    };
    match error.cause.is_some() {
        true => format!("{kind}: {}", error.root_cause()),
        false => kind,
    }
}

/// Live state of one server.
#[derive(Debug)]
pub struct ServerState {
    pub upstream: String,
    pub address: SocketAddr,
    pub metrics: ServerMetrics,
    in_flight: AtomicUsize,
    active_up: AtomicBool,
    passive: Mutex<PassiveHealth>,
    last_failure: Mutex<Option<LastFailure>>,
}

impl ServerState {
    pub fn new(upstream: &str, address: SocketAddr) -> Self {
        ServerState {
            upstream: upstream.to_string(),
            address,
            metrics: ServerMetrics::new(upstream, &address.to_string()),
            in_flight: AtomicUsize::new(0),
            active_up: AtomicBool::new(true),
            passive: Mutex::new(PassiveHealth::default()),
            last_failure: Mutex::new(None),
        }
    }

    /// The most recent failure, of either health, kept after the server is up again.
    pub fn last_failure(&self) -> Option<LastFailure> {
        self.last_failure.lock().clone()
    }

    /// Keeps `reason` as the last failure (an active check's or a request's).
    pub fn note_failure(&self, kind: FailureKind, reason: String) {
        *self.last_failure.lock() = Some(LastFailure {
            kind,
            reason,
            at: SystemTime::now(),
        });
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_active_up(&self) -> bool {
        self.active_up.load(Ordering::Relaxed)
    }

    /// Records an active check verdict that crossed its threshold; logs real changes.
    pub fn set_active_up(&self, up: bool, why: StateChange) {
        if self.active_up.swap(up, Ordering::Relaxed) != up {
            log_change(self, up, why);
        }
    }

    /// Up by both active and passive health at `now`.
    pub fn is_up(&self, now: Instant) -> bool {
        self.is_active_up() && !self.passively_down(now)
    }

    /// Failures counted in the current `fail_timeout` window.
    pub fn recent_failures(&self) -> u32 {
        self.passive.lock().failures
    }

    fn passively_down(&self, now: Instant) -> bool {
        self.passive
            .lock()
            .down_until
            .is_some_and(|until| now < until)
    }

    /// Counts a failure (connect error, timeout, broken connection) nginx-style: `max_fails`
    /// within `fail_timeout` take the server out for `fail_timeout`, unless `may_mark_down` is
    /// false (the only server of its group, which nginx never marks down either).
    pub fn record_failure(&self, config: &ServerConfig, may_mark_down: bool, reason: String) {
        self.note_failure(FailureKind::Passive, reason);
        let now = Instant::now();
        let marked_down = {
            let mut passive = self.passive.lock();
            if config.max_fails == 0 {
                return;
            }
            let window_over = passive
                .window_start
                .is_none_or(|start| now.duration_since(start) > config.fail_timeout);
            if window_over {
                passive.window_start = Some(now);
                passive.failures = 0;
            }
            passive.failures += 1;
            let already_down = passive.down_until.is_some_and(|until| now < until);
            if may_mark_down && passive.failures >= config.max_fails && !already_down {
                passive.down_until = Some(now + config.fail_timeout);
                passive.failures = 0;
                passive.window_start = None;
                // Down again before it answered: it was announced down already.
                !std::mem::replace(&mut passive.announced_down, true)
            } else {
                false
            }
        };
        if marked_down {
            log_change(self, false, StateChange::PassiveFailures);
        }
    }

    /// A successful exchange clears the failure count (as nginx does); a server that was marked
    /// down passively is announced up again.
    pub fn record_success(&self) {
        let came_back = {
            let mut passive = self.passive.lock();
            passive.failures = 0;
            passive.window_start = None;
            passive.down_until = None;
            std::mem::take(&mut passive.announced_down)
        };
        if came_back {
            log_change(self, true, StateChange::AnsweredAgain);
        }
    }

    /// nginx's quick recovery: forgets the passive failures, so the server is tried again.
    /// (It stays announced down until it answers.)
    fn forgive_failures(&self) {
        let mut passive = self.passive.lock();
        passive.failures = 0;
        passive.window_start = None;
        passive.down_until = None;
    }
}

fn log_change(server: &ServerState, up: bool, why: StateChange) {
    if up {
        tracing::info!(upstream = %server.upstream, server = %server.address, reason = why.as_str(), "upstream server is up");
    } else {
        tracing::warn!(upstream = %server.upstream, server = %server.address, reason = why.as_str(), "upstream server is down");
    }
}

/// Reads a server's `ca_file` (PEM) into the form Pingora's rustls connector takes. The file
/// was checked at config load; a failure here is logged and the system roots are used.
fn load_trusted_ca(server: &ServerConfig) -> Option<Arc<pingora::protocols::tls::CaType>> {
    use pingora::utils::tls::{parse_x509, WrappedX509};
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let path = server.tls.as_ref()?.ca_file.as_ref()?;
    let certificates: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(path).and_then(|iter| iter.collect());
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Some(
            certificates
                .into_iter()
                .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
                .collect::<Vec<_>>()
                .into(),
        ),
        Ok(_) | Err(_) => {
            tracing::error!(file = %path.display(), server = %server.address, "no usable CA certificate; using the system roots");
            None
        }
    }
}

/// Holds one in-flight slot on a server; released when dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    server: Arc<ServerState>,
}

impl InFlightGuard {
    fn acquire(server: Arc<ServerState>) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { server }
    }

    pub fn server(&self) -> &Arc<ServerState> {
        &self.server
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A chosen server for one try of a request.
#[derive(Debug)]
pub struct Selection {
    pub index: usize,
    pub address: SocketAddr,
    pub guard: InFlightGuard,
}

/// Why no server could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    /// Every server is down by health and `try_when_all_down` is off.
    AllDown,
    /// Every server has already been tried by this request.
    AllTried,
}

impl NoServer {
    /// For the log: `every server of upstream "api" is down`.
    pub fn context(self, upstream: &str) -> String {
        match self {
            NoServer::AllDown => format!("every server of upstream \"{upstream}\" is down"),
            NoServer::AllTried => format!("every server of upstream \"{upstream}\" was tried"),
        }
    }
}

impl From<NoServer> for crate::refusal::Refusal {
    fn from(why: NoServer) -> Self {
        match why {
            NoServer::AllDown => crate::refusal::Refusal::AllServersDown,
            NoServer::AllTried => crate::refusal::Refusal::AllServersTried,
        }
    }
}

/// One upstream group at runtime.
pub struct Upstream {
    pub config: UpstreamConfig,
    pub servers: Vec<Arc<ServerState>>,
    /// Per server: the extra CA trusted for upstream TLS (`ca_file`), loaded once.
    pub trusted_ca: Vec<Option<Arc<pingora::protocols::tls::CaType>>>,
    round_robin_state: Mutex<Vec<i64>>,
}

impl Upstream {
    /// Builds the group; `existing` supplies state for servers that a previous config had.
    pub fn new(
        config: UpstreamConfig,
        existing: impl Fn(SocketAddr) -> Option<Arc<ServerState>>,
    ) -> Self {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                existing(s.address)
                    .unwrap_or_else(|| Arc::new(ServerState::new(&config.name, s.address)))
            })
            .collect::<Vec<_>>();
        let trusted_ca = config.servers.iter().map(load_trusted_ca).collect();
        let round_robin_state = Mutex::new(vec![0; servers.len()]);
        Upstream {
            config,
            servers,
            trusted_ca,
            round_robin_state,
        }
    }

    /// The `Host` a request without one gets when sent to server `index`: `host_header`, else
    /// the server's address as written.
    pub fn default_host(&self, index: usize) -> Option<&http::HeaderValue> {
        self.config
            .host_header
            .as_ref()
            .or_else(|| self.config.servers.get(index).map(|server| &server.host))
    }

    /// Picks a server for this try. `tried` lists indexes earlier tries of the request used;
    /// `hash_key` is the request's key when the balance is `hash`.
    ///
    /// When every server is down (and `try_when_all_down` is on, the default), nginx's quick
    /// recovery: the passive failures of all are forgotten and the servers are tried again
    /// (those active checks hold up first, else all), so a group comes back with its first
    /// server instead of after `fail_timeout`.
    pub fn select(&self, tried: &[usize], hash_key: &[u8]) -> Result<Selection, NoServer> {
        let now = Instant::now();
        let up: Vec<bool> = self.servers.iter().map(|s| s.is_up(now)).collect();
        let chosen = match self.pick_among(&up, tried, hash_key) {
            Some(index) => index,
            None if up.iter().any(|&u| u) => return Err(NoServer::AllTried),
            None if !self.config.try_when_all_down => return Err(NoServer::AllDown),
            None => self.recover_quickly(tried, hash_key)?,
        };
        let state = Arc::clone(&self.servers[chosen]);
        Ok(Selection {
            index: chosen,
            address: state.address,
            guard: InFlightGuard::acquire(state),
        })
    }

    /// Every server is down: forgets their passive failures and picks among the untried ones
    /// active health holds up, else among all untried.
    fn recover_quickly(&self, tried: &[usize], hash_key: &[u8]) -> Result<usize, NoServer> {
        self.servers.iter().for_each(|s| s.forgive_failures());
        let active_up: Vec<bool> = self.servers.iter().map(|s| s.is_active_up()).collect();
        self.pick_among(&active_up, tried, hash_key)
            .or_else(|| self.pick_among(&vec![true; self.servers.len()], tried, hash_key))
            .ok_or(NoServer::AllTried)
    }

    /// Picks by the balance among the servers marked usable and not yet tried.
    fn pick_among(&self, usable: &[bool], tried: &[usize], hash_key: &[u8]) -> Option<usize> {
        let candidates: Vec<Candidate> = self
            .servers
            .iter()
            .zip(&self.config.servers)
            .enumerate()
            .map(|(index, (state, config))| Candidate {
                weight: config.weight,
                in_flight: state.in_flight(),
                eligible: usable[index] && !tried.contains(&index),
            })
            .collect();
        self.pick(&candidates, hash_key)
    }

    fn pick(&self, candidates: &[Candidate], hash_key: &[u8]) -> Option<usize> {
        match &self.config.balance {
            Balance::LeastConn => {
                select::least_conn(candidates, &mut self.round_robin_state.lock())
            }
            Balance::RoundRobin => {
                select::round_robin(candidates, &mut self.round_robin_state.lock())
            }
            Balance::Random => select::random(candidates, rand::random()),
            Balance::Hash(_) => {
                let identities: Vec<SocketAddr> = self.servers.iter().map(|s| s.address).collect();
                select::hash(candidates, &identities, hash_key)
            }
        }
    }

    /// Counts a failure of server `index` against its passive health (never marking down the
    /// only server of the group, as nginx).
    pub fn record_failure(&self, index: usize, reason: String) {
        if let (Some(state), Some(config)) =
            (self.servers.get(index), self.config.servers.get(index))
        {
            state.record_failure(config, self.servers.len() > 1, reason);
        }
    }

    /// The key `balance = "hash"` hashes, taken from the request; empty for other balances.
    /// `host` is the Host the client asked for.
    pub fn hash_key(
        &self,
        req: &pingora::http::RequestHeader,
        client_ip: Option<std::net::IpAddr>,
        host: Option<&str>,
    ) -> Vec<u8> {
        let Balance::Hash(key) = &self.config.balance else {
            return Vec::new();
        };
        match key {
            HashKey::ClientIp => client_ip
                .map(|ip| ip.to_string().into_bytes())
                .unwrap_or_default(),
            HashKey::Uri => req
                .uri
                .path_and_query()
                .map(|p| p.as_str().as_bytes().to_vec())
                .unwrap_or_default(),
            HashKey::Host => host
                .map(|h| crate::route::normalize_host(h).as_bytes().to_vec())
                .unwrap_or_default(),
            HashKey::Header(name) => req
                .headers
                .get(name)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Servers up by both active and passive health right now.
    pub fn healthy_count(&self) -> usize {
        let now = Instant::now();
        self.servers.iter().filter(|s| s.is_up(now)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn upstream(weights: &[u32], try_when_all_down: bool) -> Upstream {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(n, &weight)| ServerConfig {
                address: SocketAddr::from(([127, 0, 0, 1], 9000 + n as u16)),
                host: http::HeaderValue::from_static("127.0.0.1"),
                weight,
                max_fails: 2,
                fail_timeout: Duration::from_secs(60),
                tls: None,
            })
            .collect();
        let config = UpstreamConfig {
            name: "api".into(),
            balance: Balance::LeastConn,
            keepalive: 8,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            retries: 2,
            try_when_all_down,
            host_header: None,
            servers,
            health_check: None,
        };
        Upstream::new(config, |_| None)
    }

    #[test]
    fn guards_count_in_flight_and_release_on_drop() {
        let group = upstream(&[1, 1], false);
        let first = group.select(&[], b"").expect("server");
        let second = group.select(&[], b"").expect("server");
        assert_ne!(first.index, second.index);
        assert_eq!(group.servers[first.index].in_flight(), 1);
        drop(first);
        drop(second);
        assert!(group.servers.iter().all(|s| s.in_flight() == 0));
    }

    #[test]
    fn retries_skip_servers_already_tried() {
        let group = upstream(&[1, 1], false);
        let first = group.select(&[], b"").expect("server");
        let second = group.select(&[first.index], b"").expect("server");
        assert_ne!(first.index, second.index);
        assert_eq!(group.select(&[0, 1], b"").unwrap_err(), NoServer::AllTried);
    }

    #[test]
    fn passive_failures_take_a_server_out_after_max_fails() {
        let group = upstream(&[1, 1], false);
        group.record_failure(0, "test failure".to_string());
        assert_eq!(group.healthy_count(), 2);
        group.record_failure(0, "test failure".to_string());
        assert_eq!(group.healthy_count(), 1);
        for _ in 0..10 {
            assert_eq!(group.select(&[], b"").expect("server").index, 1);
        }
    }

    #[test]
    fn the_only_server_of_a_group_is_never_marked_down_passively() {
        let group = upstream(&[1], false);
        for _ in 0..10 {
            group.record_failure(0, "test failure".to_string());
        }
        assert_eq!(group.healthy_count(), 1);
        assert_eq!(group.select(&[], b"").expect("server").index, 0);
    }

    #[test]
    fn a_server_marked_down_is_up_again_once_it_answers() {
        let group = upstream(&[1, 1], false);
        group.record_failure(0, "test failure".to_string());
        group.record_failure(0, "test failure".to_string());
        assert_eq!(group.healthy_count(), 1);
        group.servers[0].record_success();
        assert_eq!(group.healthy_count(), 2);
        assert_eq!(group.servers[0].recent_failures(), 0);
    }

    #[test]
    fn with_every_server_down_passively_they_are_forgiven_and_tried_again() {
        let group = upstream(&[1, 1], true);
        for index in [0, 0, 1, 1] {
            group.record_failure(index, "test failure".to_string());
        }
        assert_eq!(group.healthy_count(), 0);
        let first = group.select(&[], b"").expect("quick recovery");
        assert_eq!(group.healthy_count(), 2, "failure counts are reset");
        let second = group.select(&[first.index], b"").expect("the other server");
        assert_ne!(first.index, second.index);
        assert_eq!(group.select(&[0, 1], b"").unwrap_err(), NoServer::AllTried);
    }

    #[test]
    fn with_every_server_down_a_strict_group_refuses_at_once() {
        let strict = upstream(&[1, 1], false);
        strict
            .servers
            .iter()
            .for_each(|s| s.set_active_up(false, StateChange::ActiveCheckFailed));
        assert_eq!(strict.select(&[], b"").unwrap_err(), NoServer::AllDown);
    }

    #[test]
    fn quick_recovery_prefers_servers_active_checks_hold_up() {
        let group = upstream(&[1, 1], true);
        group.servers[0].set_active_up(false, StateChange::ActiveCheckFailed);
        group.record_failure(1, "test failure".to_string());
        group.record_failure(1, "test failure".to_string());
        assert_eq!(group.healthy_count(), 0);
        for _ in 0..5 {
            assert_eq!(group.select(&[], b"").expect("server").index, 1);
        }
        assert_eq!(
            group.select(&[1], b"").unwrap_err(),
            NoServer::AllTried,
            "once a server is up, an actively down one is not tried"
        );
        group.servers[1].set_active_up(false, StateChange::ActiveCheckFailed);
        assert_eq!(group.select(&[1], b"").expect("any server").index, 0);
    }
}
