//! The cache phases of a request on a `cache = true` route: enabling pingora-cache with
//! Parapet's store and lock, the key, the request's own directives on hits, storability of
//! responses, Vary, stale serving, `Cache-Status`, and invalidation by unsafe methods.

use crate::cache::policy::{self, HitDecision, RequestDirectives, Rule};
use crate::cache::status::{self, Outcome, StatusFacts};
use crate::cache::{self, key};
use crate::metrics::METRICS;
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::{
    CacheMeta, CacheOptionOverrides, ForcedFreshness, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::time::{Duration, SystemTime};

const CACHE_STATUS: &str = "cache-status";
const ONLY_IF_CACHED_BODY: &[u8] =
    b"504 Gateway Timeout: only-if-cached and no usable stored response\n";

/// Per-request cache state.
#[derive(Debug, Default)]
pub struct CacheCtx {
    /// Set when the route caches: the URL the response is stored under.
    pub url: Option<String>,
    directives: RequestDirectives,
    method_cacheable: bool,
    stored: bool,
    not_stored: Option<&'static str>,
    forwarded_status: u16,
    /// The headers of a 304 answering our revalidation, merged into the stored response.
    not_modified_headers: Option<http::HeaderMap>,
    /// Set-Cookie values of the origin's answer: removed from the stored copy, but owed to
    /// the client whose request fetched it (which pingora-cache serves from the stored copy).
    set_cookies: Vec<http::HeaderValue>,
}

impl CacheCtx {
    /// Prepares the cache state of a request routed to a caching route (`route_caches`).
    pub fn for_request(
        req: &RequestHeader,
        route_caches: bool,
        scheme: &str,
        host: Option<&str>,
    ) -> CacheCtx {
        if !route_caches {
            return CacheCtx::default();
        }
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        CacheCtx {
            url: Some(key::url(scheme, host.unwrap_or(""), path)),
            directives: RequestDirectives::parse(&req.headers),
            method_cacheable: matches!(req.method, http::Method::GET | http::Method::HEAD),
            ..CacheCtx::default()
        }
    }

    fn active(&self) -> bool {
        self.url.is_some()
    }
}

/// Turns pingora-cache on for cacheable requests of caching routes.
pub fn enable(session: &mut Session, ctx: &CacheCtx) {
    let Some(edge) = cache::get() else { return };
    if !ctx.active() || !ctx.method_cacheable {
        return;
    }
    let mut overrides = CacheOptionOverrides::default();
    overrides.wait_timeout = Some(edge.lock_timeout);
    session
        .cache
        .enable(edge.storage, None, None, Some(edge.lock), Some(overrides));
}

pub fn cache_key(ctx: &CacheCtx) -> Result<CacheKey> {
    ctx.url.as_deref().map(key::cache_key).ok_or_else(|| {
        Error::explain(
            InternalError,
            "cache key asked for a request without a cache URL",
        )
    })
}

/// The request's own Cache-Control applied to a stored response.
pub fn hit_filter(meta: &CacheMeta, ctx: &CacheCtx) -> Option<ForcedFreshness> {
    let lifetime = meta
        .fresh_until()
        .duration_since(meta.epoch())
        .unwrap_or(Duration::ZERO);
    let must_revalidate = policy::must_revalidate(meta.response_header());
    match policy::hit_decision(&ctx.directives, meta.age(), lifetime, must_revalidate) {
        HitDecision::Default => None,
        HitDecision::Revalidate => Some(ForcedFreshness::ForceExpired),
        HitDecision::ServeStale => Some(ForcedFreshness::ForceFresh),
    }
}

/// `only-if-cached` (RFC 9111 §5.2.1.7): never forward; 504 when nothing usable was stored.
/// Returns true when the request may go upstream.
pub async fn may_forward(session: &mut Session, ctx: &CacheCtx) -> Result<bool> {
    if !(ctx.active() && ctx.directives.only_if_cached) {
        return Ok(true);
    }
    super::error::respond_text(session, 504, ONLY_IF_CACHED_BODY).await?;
    Ok(false)
}

/// Remembers what the origin answered before pingora-cache merges or stores it.
pub fn note_upstream_response(response: &ResponseHeader, ctx: &mut CacheCtx) {
    if !ctx.active() {
        return;
    }
    ctx.forwarded_status = response.status.as_u16();
    ctx.set_cookies = response
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if response.status == http::StatusCode::NOT_MODIFIED {
        ctx.not_modified_headers = Some(response.headers.clone());
    }
}

/// RFC 9111 §4.3.4: every field of the 304 replaces the stored one, except framing and Vary
/// (pingora-cache itself only carries over a few validators and freshness fields).
fn merge_not_modified(stored: &ResponseHeader, not_modified: &http::HeaderMap) -> ResponseHeader {
    use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, VARY};
    let mut merged = stored.clone();
    let names: Vec<&http::HeaderName> = not_modified.keys().collect();
    for name in names {
        if [&CONTENT_LENGTH, &TRANSFER_ENCODING, &CONNECTION, &VARY].contains(&name) {
            continue;
        }
        merged.remove_header(name);
        for value in not_modified.get_all(name) {
            let _ = merged.append_header(name.clone(), value.clone());
        }
    }
    // A stored compressed variant keeps its Content-Encoding and weakened ETag.
    if let Err(e) = crate::compress::policy::after_not_modified_merge(stored, &mut merged) {
        tracing::debug!(error = %e, "could not keep the stored variant's encoding headers");
    }
    merged
}

/// Decides storability (RFC 9111 §3) and builds the entry's metadata, counting the upstream
/// `Age` through the entry's epoch so freshness does not restart at storage.
pub fn response_cacheable(
    session: &Session,
    response: &ResponseHeader,
    ctx: &mut CacheCtx,
    rules: &[Rule],
) -> RespCacheable {
    let merged = ctx
        .not_modified_headers
        .take()
        .map(|h| merge_not_modified(response, &h));
    let response = merged.as_ref().unwrap_or(response);
    let req = session.req_header();
    let rule = policy::rule_for(rules, req.uri.path());
    let too_large = cache::get()
        .is_some_and(|edge| declared_length(response).is_some_and(|n| n > edge.max_object_size));
    let decision = if too_large {
        Err("too-large")
    } else {
        policy::storable(&req.method, &req.headers, response, rule, SystemTime::now())
    };
    match decision {
        Ok(freshness) => {
            ctx.stored = true;
            ctx.not_stored = None;
            let now = SystemTime::now();
            let epoch = now.checked_sub(freshness.initial_age).unwrap_or(now);
            let fresh_until = epoch + freshness.lifetime;
            let mut meta = CacheMeta::new(
                fresh_until,
                now,
                freshness.stale_while_revalidate,
                freshness.stale_if_error,
                freshness.stored_header,
            );
            meta.set_epoch_override(epoch);
            RespCacheable::Cacheable(meta)
        }
        Err(reason) => {
            ctx.stored = false;
            ctx.not_stored = Some(reason);
            RespCacheable::Uncacheable(NoCacheReason::Custom(reason))
        }
    }
}

fn declared_length(response: &ResponseHeader) -> Option<usize> {
    response
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The variance of this request for a stored response's `Vary`. On a compressing route the
/// compression decision (coding chosen, codings accepted) stands in for the raw
/// Accept-Encoding, so thousands of spellings make one variant per outcome.
pub fn variance(
    meta: &CacheMeta,
    req: &RequestHeader,
    compression: Option<[u8; 2]>,
) -> Option<HashBinary> {
    let decided =
        compression.map(|[coding, accepted]| format!("coding={coding};accepted={accepted}"));
    let overrides: Vec<(&str, &str)> = decided
        .as_deref()
        .map(|d| ("accept-encoding", d))
        .into_iter()
        .collect();
    key::variance(&key::vary_names(meta.headers()), &req.headers, &overrides)
}

/// Whether a stale response may be served: during stale-while-revalidate (`error` None)
/// unless the client demands freshness, and for stale-if-error on upstream failures and 5xx.
pub fn serve_stale(ctx: &CacheCtx, error: Option<&Error>) -> bool {
    match error {
        None => !ctx.directives.forbids_stale(),
        Some(e) => match e.etype() {
            HTTPStatus(code) => *code >= 500,
            _ => e.esource() == &ErrorSource::Upstream,
        },
    }
}

/// Adds `Cache-Status` and counts the outcome.
pub fn annotate(session: &Session, response: &mut ResponseHeader, ctx: &CacheCtx) -> Result<()> {
    if !ctx.active() {
        return Ok(());
    }
    let phase = session.cache.phase();
    let outcome = if ctx.method_cacheable {
        Outcome::of(&phase)
    } else {
        Outcome::Bypass
    };
    METRICS.cache_responses[outcome as usize].inc();
    if session.cache.lock_duration().is_some() && outcome == Outcome::Hit {
        METRICS.cache_coalesced.inc();
    }
    let ttl = session.cache.maybe_cache_meta().map(remaining_ttl);
    let facts = StatusFacts {
        phase: &phase,
        ttl,
        forwarded_status: ctx.forwarded_status,
        stored: ctx.stored && matches!(outcome, Outcome::Miss | Outcome::Expired),
        not_stored: ctx.not_stored.filter(|_| ctx.method_cacheable),
        method_not_cacheable: !ctx.method_cacheable,
    };
    response.insert_header(CACHE_STATUS, status::cache_status(&facts))?;
    let forwarded_now = matches!(outcome, Outcome::Miss | Outcome::Expired);
    if forwarded_now && !response.headers.contains_key(http::header::SET_COOKIE) {
        for cookie in &ctx.set_cookies {
            response.append_header(http::header::SET_COOKIE, cookie.clone())?;
        }
    }
    Ok(())
}

fn remaining_ttl(meta: &CacheMeta) -> i64 {
    let now = SystemTime::now();
    match meta.fresh_until().duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Counts body bytes served from the cache.
pub fn count_body(session: &Session, bytes: usize) {
    if matches!(
        Outcome::of(&session.cache.phase()),
        Outcome::Hit | Outcome::Stale
    ) {
        METRICS.cache_hit_bytes.inc_by(bytes as u64);
    }
}

/// RFC 9111 §4.4: a successful unsafe request invalidates the stored responses of its URL.
pub fn invalidate_after(req: &RequestHeader, status: u16, ctx: &CacheCtx) {
    if let Some(url) = &ctx.url {
        if policy::invalidates(&req.method, status) {
            cache::purge(Some(url), None, None);
        }
    }
}
