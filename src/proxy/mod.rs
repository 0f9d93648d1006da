//! The request pipeline: Parapet's `ProxyHttp` implementation, read top to bottom as Pingora
//! calls its phases for one request. Each phase hands off to the module that owns the concern:
//! the request's state and admission (`ctx`), `Expect: 100-continue` (`expect`), header
//! rewrites (`headers`), the edge cache
//! (`cache::RequestCache`), compression (`compress`), the tries at the upstream
//! (`upstream::attempts`, `upstream::retry`), answers Parapet makes itself (`refusal`), and what
//! is recorded at the end (`record`). `runtime` holds what the config in force provides.

mod ctx;
mod expect;
pub mod headers;
mod limits;
mod metrics;
mod record;
mod request_id;
mod runtime;

pub use ctx::{active_requests, Ctx};
pub use metrics::{register as register_metrics, request_families, RouteMetrics};
pub use runtime::{DoorFacts, RouteTarget, Runtime, UNROUTED};

use crate::cache;
use crate::refusal::{self, Refusal};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use ctx::{client_ip, protocol_of, proxy_failure};
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::{CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, RangeType, Session};
use std::sync::Arc;
use std::time::Duration;

/// The storing rules of the config the request started under.
fn store_rules(runtime: &Runtime, started: std::time::Instant) -> cache::request::StoreRules<'_> {
    cache::request::StoreRules {
        rules: &runtime.cache_rules,
        targeted_field: &runtime.cache_targeted_field,
        stale_if_error: runtime.cache_stale_if_error,
        started,
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

#[async_trait]
impl ProxyHttp for Parapet {
    type CTX = Ctx;

    /// Runs once at startup: the compression module runs on every upstream response.
    fn init_upstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        modules.add_module(crate::compress::upstream_module());
    }

    /// Runs when a request header has arrived; the request keeps the config in force now.
    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.runtime())
    }

    /// Runs when a request head could not be read (malformed, too large, stalled), before any
    /// other phase and without a `Ctx`: the refusal and its log line; the connection closes.
    async fn request_header_error(&self, session: &mut ServerSession, e: &Error) {
        record::unreadable_request(session, e, &self.runtime()).await;
    }

    /// Runs next: limits, route and the request's plans. `Ok(true)`: answered here.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        session.set_read_timeout(Some(ctx.runtime.settings.client_body_timeout));
        match ctx.admit(session) {
            Ok(()) => {
                expect::send_continue(session, ctx.expectation).await?;
                Ok(false)
            }
            Err(refusal) => {
                refuse(session, ctx, refusal).await?;
                Ok(true)
            }
        }
    }

    /// Runs after `request_filter`: turns the cache on for this request when it may use it.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.cache.enable(&mut session.cache);
        Ok(())
    }

    /// Runs when the cache is on, before the lookup.
    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        ctx.cache.key()
    }

    /// Runs on a cache hit: the request's own Cache-Control may force a revalidation, and a
    /// stored partial response that lacks the range asked for sends it to the origin.
    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        ctx.cache.note_hit(hit_handler);
        let targeted_field = &ctx.runtime.cache_targeted_field;
        Ok(ctx
            .cache
            .hit_freshness(meta, session.req_header(), targeted_field))
    }

    /// Runs before going upstream (miss, expired or uncached). `Ok(false)`: answered here.
    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if !ctx.cache.only_if_cached() {
            return Ok(true);
        }
        refuse(session, ctx, Refusal::OnlyIfCachedMiss).await?;
        Ok(false)
    }

    /// Runs before each try: picks the server (releasing the previous try's) and its peer.
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let target = ctx
            .target
            .as_ref()
            .ok_or_else(|| Error::explain(InternalError, "upstream_peer called without a route"))?;
        let upstream = &target.upstream;
        let key = upstream.hash_key(
            session.req_header(),
            client_ip(session),
            ctx.host.as_deref(),
        );
        let peer = ctx
            .attempts
            .next(upstream, &key)
            .map_err(|why| Refusal::from(why).error(why.context(&upstream.config.name)))?;
        Ok(Box::new(peer))
    }

    /// Runs when connecting to the peer failed: blame the server, retry within `retries`.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(target) = &ctx.target {
            let reason = crate::upstream::failure_reason(&e);
            e.set_retry(ctx.attempts.connect_failed(&target.upstream, reason));
        }
        e
    }

    /// Runs when the try has a connection (`reused`: from the keep-alive pool).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.attempts.connected(reused);
        Ok(())
    }

    /// Runs before the request header goes upstream.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let default_host = match (&ctx.target, ctx.attempts.current_server()) {
            (Some(target), Some(index)) => target.upstream.default_host(index),
            _ => None,
        };
        let info = headers::ForwardedFor {
            client_ip: client_ip(session),
            scheme: ctx.scheme,
            host: ctx.host.as_deref(),
            default_host,
            version: session.req_header().version,
        };
        headers::rewrite_request(upstream_request, &info, &ctx.request_id)?;
        if let Some(raw) = &ctx.raw_target {
            upstream_request.set_raw_path(raw.as_bytes())?;
        }
        Ok(())
    }

    /// Runs on each piece of the request body as it streams upstream.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let received = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.received_body(received, protocol_of(session))
            .map_err(|refusal| refusal.error(refusal.to_string()))
    }

    /// Runs before the upstream modules (compression) see the response header: a response
    /// the cache will store is left as the origin sent it (the cache derives the codings).
    async fn adjust_upstream_modules(
        &self,
        session: &mut Session,
        upstream_response: &ResponseHeader,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let rules = store_rules(&ctx.runtime, ctx.started);
        let stored = ctx.cache.decide_storing(
            &session.cache,
            session.req_header(),
            upstream_response,
            &rules,
        );
        ctx.compression.arm(session, stored);
        Ok(())
    }

    /// Runs when the upstream's response header arrives, before the cache sees it.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.attempts.answered();
        ctx.cache.note_upstream_response(upstream_response)?;
        headers::rewrite_response(upstream_response)
    }

    /// Runs on an upstream response when the cache is on: may it be stored, and how.
    fn response_cache_filter(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        let rules = store_rules(&ctx.runtime, ctx.started);
        Ok(ctx
            .cache
            .response_cacheable(session.req_header(), response, &rules, &ctx.compression))
    }

    /// Runs on a stored response with `Vary`, at lookup and at storage: the request's variant.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        cache::request::variance(meta, req, &ctx.compression)
    }

    /// Runs on a response served from the cache, before `response_filter`: the ranges it
    /// answers.
    fn range_header_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> RangeType {
        let req = session.downstream_session.req_header();
        ctx.cache
            .range_filter(&mut session.cache, req, response, &ctx.compression)
    }

    /// Runs before the response header goes to the client, proxied or from the cache.
    /// Interim (1xx) responses pass as the upstream sent them.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if upstream_response.status.is_informational() {
            return Ok(());
        }
        let head = session.req_header().method == http::Method::HEAD;
        ctx.cache
            .serve_coding(
                &mut session.cache,
                upstream_response,
                &ctx.compression,
                head,
            )
            .await?;
        headers::add_via(upstream_response)?;
        headers::add_request_id(upstream_response, &ctx.request_id)?;
        if let Some(server) = &ctx.runtime.settings.server_header {
            upstream_response.insert_header(http::header::SERVER, server.clone())?;
        }
        if session.is_process_shutting_down() {
            // Draining: an HTTP/1.1 client learns now not to send another request here.
            session.set_keepalive(None);
        }
        ctx.cache.annotate(&session.cache, upstream_response)?;
        // Before the client can see the answer, so its next GET cannot race the invalidation.
        let status = upstream_response.status.as_u16();
        ctx.cache.invalidate_after(session.req_header(), status);
        headers::add_alt_svc(upstream_response, ctx.alt_svc.as_ref())
    }

    /// Runs on each piece of the response body on its way to the client.
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let sent = body.as_ref().map_or(0, |b| b.len());
        ctx.sent_body(sent as u64, protocol_of(session));
        cache::request::count_body(&session.cache, sent);
        Ok(None)
    }

    /// Runs when a try failed after connecting: blame the server, and retry when it is safe.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let before_response = ctx.attempts.awaiting_response();
        let failure = proxy_failure(session, &e, client_reused, before_response);
        let upstream = ctx.target.as_ref().map(|t| &*t.upstream);
        let reason = crate::upstream::failure_reason(&e);
        e.set_retry(ctx.attempts.proxy_failed(upstream, &failure, reason));
        e
    }

    /// Runs when a stored response is stale and revalidating (`error` None) or the upstream
    /// failed: may it be served anyway.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        ctx.cache.serve_stale(error)
    }

    /// Runs when the request failed for good: the refusal the client gets, if still there. The
    /// client connection stays open when the answer went out whole, unless the refusal, an
    /// unread request body or the drain closes it.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let Some(refusal) = Refusal::of_error(e) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let answered = session.response_written().is_none()
            && match refuse(session, ctx, refusal).await {
                Ok(()) => true,
                Err(write_error) => {
                    tracing::debug!(error = %write_error, "could not send the error response");
                    false
                }
            };
        FailToProxy {
            error_code: refusal.status(),
            can_reuse_downstream: answered,
        }
    }

    /// Runs last, whatever happened: metrics and the access log.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.cache.finish(&session.cache);
        record::finish(session, e, ctx);
    }
}

/// Answers the request with `refusal` in Parapet's own words. The connection closes after it
/// when the refusal says so, when the request body was not read whole, or while draining.
async fn refuse(session: &mut Session, ctx: &mut Ctx, refusal: Refusal) -> Result<()> {
    ctx.ensure_request_id(session.req_header());
    let req = session.req_header();
    let accept = req.headers.get(http::header::ACCEPT).cloned();
    let head = req.method == http::Method::HEAD;
    let close = session.is_process_shutting_down() || !session.as_mut().is_body_done();
    let answer = refusal::Answer {
        request_id: &ctx.request_id,
        accept: accept.as_ref(),
        head,
        server_header: ctx.runtime.settings.server_header.as_ref(),
        close,
    };
    let sent = refusal::respond(session.as_mut(), refusal, &answer).await?;
    ctx.sent_body(sent as u64, protocol_of(session));
    Ok(())
}
