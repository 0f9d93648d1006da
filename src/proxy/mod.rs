//! The request pipeline: Parapet's `ProxyHttp` implementation. Each phase, in the order Pingora
//! calls it, hands off to `route`, `upstream` and `headers`; the logic lives there.

mod error;
pub mod headers;
mod request_id;

use crate::access_log;
use crate::cache::{self, RequestCache};
use crate::config::{Config, HashKey, ServerSettings};
use crate::metrics::{Protocol, RouteMetrics, METRICS};
use crate::route::{normalize_host, Router};
use crate::upstream::{NoServer, Selection, ServerState, Upstream};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::{CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Where a matched route sends its requests.
pub struct RouteTarget {
    pub name: String,
    /// Responses go through the edge cache.
    pub cache: bool,
    /// `None` when the route has `compress = false` or compression is off.
    pub compression: Option<Arc<crate::compress::CompressionConfig>>,
    pub upstream: Arc<Upstream>,
    pub metrics: RouteMetrics,
}

/// Label values for requests that matched no route.
const UNROUTED: &str = "none";
static UNROUTED_METRICS: std::sync::LazyLock<RouteMetrics> =
    std::sync::LazyLock::new(|| RouteMetrics::new(UNROUTED, UNROUTED));

/// Everything a request needs from the current config; swapped whole on reload.
pub struct Runtime {
    pub settings: ServerSettings,
    pub router: Router<Arc<RouteTarget>>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// What a request can learn from the port it arrived on.
    pub doors: HashMap<u16, DoorFacts>,
    pub cache_rules: Vec<crate::cache::policy::Rule>,
}

/// Facts about the listener on one port.
pub struct DoorFacts {
    pub tls: bool,
    /// `Alt-Svc` advertising HTTP/3 on this port, when the listener serves it.
    pub alt_svc: Option<http::HeaderValue>,
}

/// How long clients may remember that HTTP/3 is offered (RFC 7838 `ma`).
const ALT_SVC_MAX_AGE_SECS: u64 = 86_400;

fn door_facts(config: &Config) -> HashMap<u16, DoorFacts> {
    config
        .listeners
        .iter()
        .map(|listener| {
            let port = listener.address.port();
            let alt_svc = listener.h3.then(|| {
                let value = format!("h3=\":{port}\"; ma={ALT_SVC_MAX_AGE_SECS}");
                http::HeaderValue::from_str(&value).expect("digits and ASCII only")
            });
            (
                port,
                DoorFacts {
                    tls: listener.is_tls(),
                    alt_svc,
                },
            )
        })
        .collect()
}

impl Runtime {
    /// Builds the runtime; `previous` lends server state (in-flight counts, health) to servers
    /// that stay.
    pub fn build(config: &Config, previous: Option<&Runtime>) -> Runtime {
        let existing = |upstream: &str, address: SocketAddr| -> Option<Arc<ServerState>> {
            let old = previous?.upstreams.get(upstream)?;
            old.servers.iter().find(|s| s.address == address).cloned()
        };
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let built = Upstream::new(upstream.clone(), |address| existing(name, address));
                (name.clone(), Arc::new(built))
            })
            .collect();
        let router = Router::new(config.routes.iter().filter_map(|route| {
            let upstream = Arc::clone(upstreams.get(&route.upstream)?);
            let target = RouteTarget {
                name: route.name.clone(),
                cache: route.cache,
                compression: (route.compress && config.compression.enabled)
                    .then(|| Arc::new(config.compression.clone())),
                metrics: RouteMetrics::new(&route.name, &route.upstream),
                upstream,
            };
            Some((
                route.host.clone(),
                route.path_prefix.clone(),
                Arc::new(target),
            ))
        }));
        Runtime {
            settings: config.server.clone(),
            router,
            upstreams,
            doors: door_facts(config),
            cache_rules: config.cache.rules.clone(),
        }
    }
}

/// Parapet's proxy logic, shared by every listener.
pub struct Parapet {
    runtime: Arc<ArcSwap<Runtime>>,
}

impl Parapet {
    /// `runtime` is shared with whoever reloads the config.
    pub fn new(runtime: Arc<ArcSwap<Runtime>>) -> Self {
        Parapet { runtime }
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }
}

/// Per-request state.
pub struct Ctx {
    _active: ActiveRequest,
    started: Instant,
    request_id: String,
    /// When the current try picked its server (for the upstream response time).
    try_started: Option<Instant>,
    upstream_time: Option<Duration>,
    response_body_bytes: u64,
    runtime: Arc<Runtime>,
    target: Option<Arc<RouteTarget>>,
    /// Servers (indexes in the upstream) this request has tried, in order.
    tried: Vec<usize>,
    /// The server of the current try; dropping it releases its in-flight slot.
    current: Option<Selection>,
    /// Retries spent on pooled connections the server had already closed.
    stale_connection_retries: usize,
    request_body_bytes: u64,
    cache: RequestCache,
    compression: crate::compress::RequestCompression,
}

/// Retries allowed for pooled connections that turn out closed, on top of `retries`.
const MAX_STALE_CONNECTION_RETRIES: usize = 2;

const NOT_FOUND_BODY: &[u8] = b"404 Not Found: no route for this host and path\n";
const PURGE_METHOD: &str = "PURGE";
const PURGE_NOT_HERE_BODY: &[u8] =
    b"405 Method Not Allowed: PURGE is accepted on the admin listener only\n";

#[async_trait]
impl ProxyHttp for Parapet {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _active: ActiveRequest::start(),
            started: Instant::now(),
            request_id: String::new(),
            try_started: None,
            upstream_time: None,
            response_body_bytes: 0,
            runtime: self.runtime(),
            target: None,
            tried: Vec::new(),
            current: None,
            stale_connection_retries: 0,
            request_body_bytes: 0,
            cache: RequestCache::default(),
            compression: Default::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(status) =
            error::request_over_limits(session.req_header(), &ctx.runtime.settings)
        {
            session.respond_error(status).await?;
            return Ok(true);
        }
        ctx.request_id = request_id::for_request(&session.req_header().headers);
        let req = session.req_header();
        let raw_host = crate::fields::request_host(&req.headers, &req.uri);
        let host = raw_host.map(normalize_host);
        let found = ctx
            .runtime
            .router
            .lookup(host.as_deref().unwrap_or(""), req.uri.path());
        match found {
            // Purges come through the admin listener only.
            Some(_) if req.method.as_str() == PURGE_METHOD => {
                error::respond_text(session, 405, PURGE_NOT_HERE_BODY).await?;
                Ok(true)
            }
            Some(target) => {
                let scheme = scheme_of(session, &ctx.runtime);
                ctx.cache = RequestCache::new(req, target.cache, scheme, raw_host);
                ctx.compression =
                    crate::compress::RequestCompression::new(target.compression.as_ref(), req);
                ctx.target = Some(Arc::clone(target));
                Ok(false)
            }
            None => {
                error::respond_text(session, 404, NOT_FOUND_BODY).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.cache.enable(&mut session.cache);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        ctx.cache.key()
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        Ok(ctx.cache.hit_freshness(meta))
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if !ctx.cache.only_if_cached() {
            return Ok(true);
        }
        error::respond_text(session, 504, error::ONLY_IF_CACHED_BODY).await?;
        Ok(false)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        let rules = Arc::clone(&ctx.runtime);
        Ok(ctx
            .cache
            .response_cacheable(session.req_header(), response, &rules.cache_rules))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        cache::request::variance(meta, req, ctx.compression.variance())
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        ctx.cache.serve_stale(error)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let received = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.request_body_bytes += received;
        METRICS.downstream_bytes_in[protocol_of(_session) as usize].inc_by(received);
        if ctx.request_body_bytes > ctx.runtime.settings.max_request_body_size {
            return Error::e_explain(
                HTTPStatus(413),
                "request body larger than max_request_body_size",
            );
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let target = ctx
            .target
            .clone()
            .ok_or_else(|| Error::explain(InternalError, "upstream_peer called without a route"))?;
        let upstream = &target.upstream;
        let key = hash_key(session, upstream);
        // The previous try's guard is dropped here, so its in-flight slot is released first.
        ctx.current = None;
        let selection = upstream
            .select(&ctx.tried, &key)
            .map_err(|why| no_server_error(upstream, why))?;
        if !ctx.tried.is_empty() {
            METRICS
                .upstream_retries
                .with_label_values(&[&upstream.config.name])
                .inc();
        }
        ctx.tried.push(selection.index);
        ctx.try_started = Some(Instant::now());
        let peer = error::peer_for(upstream, selection.index, selection.address);
        ctx.current = Some(selection);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let host = crate::fields::request_host(&upstream_request.headers, &upstream_request.uri)
            .map(str::to_string);
        let keep_upgrade = headers::is_upgrade_request(&upstream_request.headers);
        for name in headers::hop_by_hop_names(&upstream_request.headers, keep_upgrade) {
            upstream_request.remove_header(&name);
        }
        let info = headers::ForwardedFor {
            client_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            scheme: scheme_of(session, &ctx.runtime),
            host: host.as_deref(),
            version: session.req_header().version,
        };
        for (name, value) in headers::forwarding_headers(&upstream_request.headers, &info) {
            upstream_request.insert_header(name, value)?;
        }
        upstream_request.insert_header(request_id::HEADER, ctx.request_id.as_str())?;
        if let Some(host) = host {
            if !upstream_request.headers.contains_key(http::header::HOST) {
                upstream_request.insert_header(http::header::HOST, host)?;
            }
        }
        if upstream_request.uri.authority().is_some() {
            let origin_form = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            upstream_request.set_uri(
                origin_form
                    .parse()
                    .map_err(|_| Error::explain(InvalidHTTPHeader, "bad request target"))?,
            );
        }
        Ok(())
    }

    fn init_upstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        modules.add_module(crate::compress::upstream_module());
    }

    /// Runs before the upstream modules (compression) see the response header.
    async fn adjust_upstream_modules(
        &self,
        session: &mut Session,
        _upstream_response: &ResponseHeader,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.compression.arm(session);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(current) = &ctx.current {
            current.guard.server().record_success();
            if let Some(started) = ctx.try_started {
                let elapsed = started.elapsed();
                ctx.upstream_time = Some(elapsed);
                current
                    .guard
                    .server()
                    .metrics
                    .response_time
                    .observe(elapsed.as_secs_f64());
            }
        }
        ctx.cache.note_upstream_response(upstream_response);
        let switching = upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        for name in headers::hop_by_hop_names(&upstream_response.headers, switching) {
            upstream_response.remove_header(&name);
        }
        let via = headers::response_via(&upstream_response.headers, upstream_response.version);
        upstream_response.insert_header(http::header::VIA, via)?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(upstream) = ctx.target.as_ref().map(|t| Arc::clone(&t.upstream)) else {
            return e;
        };
        if let Some(current) = &ctx.current {
            current
                .guard
                .server()
                .record_failure(&upstream.config.servers[current.index]);
        }
        e.set_retry(ctx.tried.len() <= upstream.config.retries);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let upstream_fault = e.esource() == &ErrorSource::Upstream;
        // A pooled connection the server had already closed is not the server's fault.
        let stale_pooled = upstream_fault
            && client_reused
            && ctx.stale_connection_retries < MAX_STALE_CONNECTION_RETRIES;
        if upstream_fault && !stale_pooled {
            self.count_failure(ctx);
        }
        let safe_to_repeat = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        let within_budget = ctx
            .target
            .as_ref()
            .is_some_and(|t| ctx.tried.len() <= t.upstream.config.retries);
        let retry = safe_to_repeat
            && upstream_fault
            && (stale_pooled || (within_budget && !error::is_timeout(&e)));
        if retry && stale_pooled {
            ctx.stale_connection_retries += 1;
            ctx.tried.pop();
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = error::status_for(e);
        if code > 0 {
            if let Err(write_error) = session.respond_error(code).await {
                tracing::debug!(error = %write_error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.request_id.is_empty() {
            upstream_response.insert_header(request_id::HEADER, ctx.request_id.as_str())?;
        }
        ctx.cache.annotate(&session.cache, upstream_response)?;
        // Before the client can see the answer, so its next GET cannot race the invalidation.
        ctx.cache
            .invalidate_after(session.req_header(), upstream_response.status.as_u16());
        if protocol_of(session) != Protocol::H3 {
            if let Some(alt_svc) = door_of(session, &ctx.runtime).and_then(|d| d.alt_svc.clone()) {
                upstream_response.insert_header(http::header::ALT_SVC, alt_svc)?;
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let sent = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.response_body_bytes += sent;
        cache::request::count_body(&session.cache, sent as usize);
        METRICS.downstream_bytes_out[protocol_of(session) as usize].inc_by(sent);
        Ok(None)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(current) = &ctx.current {
            let metrics = &current.guard.server().metrics;
            if reused {
                metrics.reuses.inc()
            } else {
                metrics.connects.inc()
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let server = ctx.current.take().map(|s| s.address);
        let status = response_status(session, e);
        let protocol = protocol_of(session);
        let elapsed = ctx.started.elapsed();
        let route_metrics = ctx
            .target
            .as_ref()
            .map_or(&*UNROUTED_METRICS, |t| &t.metrics);
        route_metrics.record(status, protocol, elapsed.as_secs_f64());
        if access_log::enabled() {
            access_log::log(&access_entry(
                session, ctx, status, protocol, elapsed, server,
            ));
        }
    }
}

/// The status the client got; a client that left before any answer is logged as 499 (nginx).
fn response_status(session: &Session, e: Option<&Error>) -> u16 {
    const CLIENT_CLOSED: u16 = 499;
    match session.response_written() {
        Some(response) => response.status.as_u16(),
        None if e.is_some_and(|e| e.esource() == &ErrorSource::Downstream) => CLIENT_CLOSED,
        None => e.map_or(CLIENT_CLOSED, |e| match error::status_for(e) {
            0 => CLIENT_CLOSED,
            code => code,
        }),
    }
}

fn door_of<'a>(session: &Session, runtime: &'a Runtime) -> Option<&'a DoorFacts> {
    let port = session.server_addr()?.as_inet()?.port();
    runtime.doors.get(&port)
}

/// "https" when the request came through a TLS (or QUIC) door, else "http".
fn scheme_of(session: &Session, runtime: &Runtime) -> &'static str {
    if door_of(session, runtime).is_some_and(|d| d.tls) {
        "https"
    } else {
        "http"
    }
}

fn protocol_of(session: &Session) -> Protocol {
    Protocol::of(session.req_header().version)
}

fn access_entry(
    session: &Session,
    ctx: &Ctx,
    status: u16,
    protocol: Protocol,
    elapsed: Duration,
    server: Option<SocketAddr>,
) -> access_log::Entry {
    let req = session.req_header();
    access_log::Entry {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        client: session
            .client_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        method: req.method.to_string(),
        host: crate::fields::request_host(&req.headers, &req.uri)
            .unwrap_or_default()
            .to_string(),
        path: req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        protocol: protocol.as_str(),
        status,
        bytes: ctx.response_body_bytes,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream_server: server.map(|a| a.to_string()),
        upstream_time_ms: ctx.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
        cache_status: None,
        request_id: ctx.request_id.clone(),
    }
}

impl Parapet {
    fn count_failure(&self, ctx: &Ctx) {
        if let (Some(target), Some(current)) = (&ctx.target, &ctx.current) {
            current
                .guard
                .server()
                .record_failure(&target.upstream.config.servers[current.index]);
        }
    }
}

fn no_server_error(upstream: &Upstream, why: NoServer) -> Box<Error> {
    let context = match why {
        NoServer::AllDown => format!(
            "every server of upstream \"{}\" is down",
            upstream.config.name
        ),
        NoServer::AllTried => format!(
            "every server of upstream \"{}\" was tried",
            upstream.config.name
        ),
    };
    let mut e = Error::explain(HTTPStatus(502), context);
    e.set_retry(false);
    e
}

/// The key `balance = "hash"` hashes, taken from the request.
fn hash_key(session: &Session, upstream: &Upstream) -> Vec<u8> {
    let crate::config::Balance::Hash(key) = &upstream.config.balance else {
        return Vec::new();
    };
    let req = session.req_header();
    match key {
        HashKey::ClientIp => session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string().into_bytes())
            .unwrap_or_default(),
        HashKey::Uri => req
            .uri
            .path_and_query()
            .map(|p| p.as_str().as_bytes().to_vec())
            .unwrap_or_default(),
        HashKey::Host => crate::fields::request_host(&req.headers, &req.uri)
            .map(|h| normalize_host(h).into_bytes())
            .unwrap_or_default(),
        HashKey::Header(name) => req
            .headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
    }
}
