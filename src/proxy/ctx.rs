//! One request's state across the phases: the config it started under, what it learned once in
//! `request_filter` (Host, scheme, route, request id, cache and compression plans), its tries
//! at the upstream, and its byte counts. Also the count of requests in flight, for the drain.

use super::expect::Expectation;
use super::runtime::{RouteTarget, Runtime};
use super::{limits, request_id};
use crate::cache::RequestCache;
use crate::compress::RequestCompression;
use crate::metrics::Protocol;
use crate::refusal::Refusal;
use crate::route::normalize_host;
use crate::target_path;
use crate::upstream::attempts::Attempts;
use crate::upstream::retry::ProxyFailure;
use crate::validate_request::Violation;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Requests being processed right now, across every listener (for the drain on SIGTERM).
static ACTIVE_REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// Requests still in progress anywhere in the process.
pub fn active_requests() -> usize {
    ACTIVE_REQUESTS.load(Ordering::Relaxed)
}

/// Counts one request in `ACTIVE_REQUESTS` for as long as it lives.
struct ActiveRequest;

impl ActiveRequest {
    fn start() -> Self {
        ACTIVE_REQUESTS.fetch_add(1, Ordering::Relaxed);
        ActiveRequest
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        ACTIVE_REQUESTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Method of cache purges, which the admin listener takes and the proxy refuses.
const PURGE_METHOD: &str = "PURGE";

/// Per-request state.
pub struct Ctx {
    _active: ActiveRequest,
    pub started: Instant,
    pub runtime: Arc<Runtime>,
    pub request_id: String,
    /// The Host the client asked for (`Host`, else the URI's authority), read once.
    pub host: Option<String>,
    /// "https" when the request came through a TLS (or QUIC) door, else "http".
    pub scheme: &'static str,
    /// `Alt-Svc` for the response: the door serves HTTP/3 and the client is not on it yet.
    pub alt_svc: Option<http::HeaderValue>,
    pub target: Option<Arc<RouteTarget>>,
    /// What the client's `Expect` asks (a 100 once admitted).
    pub expectation: Expectation,
    pub attempts: Attempts,
    pub request_body_bytes: u64,
    pub cache: RequestCache,
    pub compression: RequestCompression,
    /// The target as the client sent it, when its path was normalised and the upstream is to
    /// get it as received (`[server] forward_raw_path`).
    pub raw_target: Option<String>,
}

impl Ctx {
    pub fn new(runtime: Arc<Runtime>) -> Ctx {
        Ctx {
            _active: ActiveRequest::start(),
            started: Instant::now(),
            runtime,
            request_id: String::new(),
            host: None,
            scheme: "http",
            alt_svc: None,
            target: None,
            expectation: Expectation::Nothing,
            attempts: Attempts::default(),
            request_body_bytes: 0,
            cache: RequestCache::default(),
            compression: RequestCompression::default(),
            raw_target: None,
        }
    }

    /// What `request_filter` learns and decides: whether the request is valid, the Host and
    /// door, the size limits, the request id, the route, and the request's cache and
    /// compression plans. `Err`: the refusal to answer with.
    pub fn admit(&mut self, session: &mut Session) -> Result<(), Refusal> {
        let req = session.req_header();
        crate::validate_request::check(req, self.runtime.settings.max_request_line_size)?;
        one_content_length(session)?;
        let req = session.req_header();
        self.host = crate::fields::request_host(&req.headers, &req.uri).map(str::to_string);
        self.normalize_path(session)?;
        let req = session.req_header();
        let door = self.runtime.door(session);
        if door.is_some_and(|d| d.tls) {
            self.scheme = "https";
        }
        if Protocol::of(req.version) != Protocol::H3 {
            self.alt_svc = door.and_then(|d| d.alt_svc.clone());
        }
        self.request_id = request_id::for_request(&req.headers);
        if req.method == http::Method::CONNECT {
            return Err(Refusal::ConnectNotSupported);
        }
        limits::check_head(req, &self.runtime.settings)?;
        self.expectation = Expectation::of(req);
        if self.expectation == Expectation::Unsupported {
            return Err(Refusal::ExpectationFailed);
        }
        let host = self.host.as_deref().map(normalize_host);
        // An asterisk-form OPTIONS asks about the server as a whole: route it as its root.
        let path = match req.uri.path() {
            "*" => "/",
            path => path,
        };
        let target = self
            .runtime
            .router
            .lookup(host.as_deref().unwrap_or(""), path)
            .ok_or(Refusal::NoRoute)?;
        if req.method.as_str() == PURGE_METHOD {
            return Err(Refusal::PurgeNotHere);
        }
        self.cache = RequestCache::new(req, target.cache, self.scheme, self.host.as_deref());
        self.compression = RequestCompression::new(target.compression.as_ref(), req);
        self.target = Some(Arc::clone(target));
        Ok(())
    }

    /// Puts the request's path in normal form (`target_path`) before the route, the cache key
    /// or the upstream reads it. With `forward_raw_path` the upstream still gets the target
    /// as the client sent it (`raw_target`).
    fn normalize_path(&mut self, session: &mut Session) -> Result<(), Refusal> {
        let settings = &self.runtime.settings;
        let uri = &session.req_header().uri;
        let Some(path) = target_path::normalize(uri.path(), settings.merge_slashes)? else {
            return Ok(());
        };
        let target = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(
            target
                .parse()
                .map_err(|_| Refusal::InvalidRequest(Violation::TargetByte))?,
        );
        let normal = http::Uri::from_parts(parts)
            .map_err(|_| Refusal::InvalidRequest(Violation::TargetByte))?;
        if settings.forward_raw_path {
            self.raw_target = uri.path_and_query().map(|p| p.as_str().to_string());
        }
        session.req_header_mut().set_uri(normal);
        Ok(())
    }

    /// Gives the request its id if `admit` did not run (a failure before it).
    pub fn ensure_request_id(&mut self, req: &pingora::http::RequestHeader) {
        if self.request_id.is_empty() {
            self.request_id = request_id::for_request(&req.headers);
        }
    }

    /// Counts a piece of the request body; refuses a body past `max_request_body_size`.
    pub fn received_body(&mut self, bytes: u64, protocol: Protocol) -> Result<(), Refusal> {
        self.request_body_bytes += bytes;
        super::metrics::count_body_in(protocol, bytes);
        limits::check_body(self.request_body_bytes, &self.runtime.settings)
    }

    /// Counts a piece of the response body.
    pub fn sent_body(&self, bytes: u64, protocol: Protocol) {
        super::metrics::count_body_out(protocol, bytes);
    }
}

pub fn protocol_of(session: &Session) -> Protocol {
    Protocol::of(session.req_header().version)
}

pub fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// What a failed try tells the retry decision. `before_response`: the server had sent no
/// response header on this try.
pub fn proxy_failure(
    session: &Session,
    e: &Error,
    reused_connection: bool,
    before_response: bool,
) -> ProxyFailure {
    ProxyFailure {
        upstream_fault: e.esource() == &ErrorSource::Upstream,
        reused_connection,
        timeout: crate::refusal::is_timeout(e),
        before_response,
        idempotent: session.req_header().method.is_idempotent(),
        replayable: !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none(),
    }
}

/// Several `Content-Length` values that agree (two lines, or `5, 5`) go upstream as one line
/// (RFC 9110 §8.6), so no backend has to choose; values that disagree are refused.
fn one_content_length(session: &mut Session) -> Result<(), Violation> {
    let headers = &session.req_header().headers;
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let repeated = match (values.next(), values.next()) {
        (Some(first), None) => first.as_bytes().contains(&b','),
        (Some(_), Some(_)) => true,
        (None, _) => false,
    };
    if !repeated {
        return Ok(());
    }
    let Some(length) = crate::validate_request::content_length(headers)? else {
        return Ok(());
    };
    session
        .req_header_mut()
        .insert_header(http::header::CONTENT_LENGTH, length)
        .map_err(|_| Violation::InvalidContentLength)
}
