//! One request's part in the edge cache, phase by phase: turning pingora-cache on, the key,
//! the request's own directives on hits, storability and the entry's metadata, Vary, stale
//! serving, `Cache-Status`, and invalidation by unsafe methods. The proxy calls these from its
//! phases; the decisions themselves are the pure functions of [`super::policy`].

use super::metrics::CACHE_METRICS;
use super::policy::{self, HitDecision, NotStored, RequestDirectives, StaleCause};
use super::status::{self, Outcome, StatusFacts};
use super::{key, purge};
use crate::config::CacheRule;
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::{
    CacheMeta, CacheOptionOverrides, ForcedFreshness, HitHandler, HttpCache, NoCacheReason,
    RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::time::{Duration, SystemTime};

const CACHE_STATUS: &str = "cache-status";

/// Per-request cache state.
#[derive(Debug, Default)]
pub struct RequestCache {
    /// Set when the route caches: the URL the response is stored under.
    pub url: Option<String>,
    directives: RequestDirectives,
    method_cacheable: bool,
    stored: bool,
    not_stored: Option<NotStored>,
    forwarded_status: u16,
    /// The headers of a 304 answering our revalidation, merged into the stored response.
    not_modified_headers: Option<http::HeaderMap>,
    /// Set-Cookie values of the origin's answer: removed from the stored copy, but owed to
    /// the client whose request fetched it (which pingora-cache serves from the stored copy).
    set_cookies: Vec<http::HeaderValue>,
    /// The hit came from the shared tier (Redis), not this instance's cache.
    shared_hit: bool,
}

impl RequestCache {
    /// The cache state of a request to a route that caches (`route_caches`) or not.
    pub fn new(
        req: &RequestHeader,
        route_caches: bool,
        scheme: &str,
        host: Option<&str>,
    ) -> RequestCache {
        if !route_caches {
            return RequestCache::default();
        }
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        RequestCache {
            url: Some(key::url(scheme, host.unwrap_or(""), path)),
            directives: RequestDirectives::parse(&req.headers),
            method_cacheable: matches!(req.method, http::Method::GET | http::Method::HEAD),
            ..RequestCache::default()
        }
    }

    fn active(&self) -> bool {
        self.url.is_some()
    }

    /// Turns pingora-cache on for cacheable requests of caching routes.
    pub fn enable(&self, cache: &mut HttpCache) {
        let Some(edge) = super::get() else { return };
        if !self.active() || !self.method_cacheable {
            return;
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(edge.lock_timeout);
        cache.enable(edge.storage, None, None, Some(edge.lock), Some(overrides));
    }

    pub fn key(&self) -> Result<CacheKey> {
        self.url.as_deref().map(key::cache_key).ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "cache key asked for a request without a cache URL",
            )
        })
    }

    /// The request's own Cache-Control applied to a stored response.
    pub fn hit_freshness(&self, meta: &CacheMeta) -> Option<ForcedFreshness> {
        let lifetime = meta
            .fresh_until()
            .duration_since(meta.epoch())
            .unwrap_or(Duration::ZERO);
        let must_revalidate = policy::must_revalidate(meta.response_header());
        match policy::hit_decision(&self.directives, meta.age(), lifetime, must_revalidate) {
            HitDecision::Default => None,
            HitDecision::Revalidate => Some(ForcedFreshness::ForceExpired),
            HitDecision::ServeStale => Some(ForcedFreshness::ForceFresh),
        }
    }

    /// Remembers which tier a hit came from, for `Cache-Status`.
    pub fn note_hit(&mut self, hit: &HitHandler) {
        self.shared_hit = super::store::tier_of(hit) == Some(super::store::Tier::Shared);
    }

    /// The request is over: a fill lock it took in the shared tier and did not hand to a
    /// fill (the response was not stored, or the origin failed) is released now. Only a
    /// request that went to the origin can hold one.
    pub fn finish(&self, cache: &HttpCache) {
        let (Some(url), Some(tier)) = (&self.url, super::shared::get()) else {
            return;
        };
        let went_upstream = matches!(
            Outcome::of(&cache.phase()),
            Outcome::Miss | Outcome::Expired
        );
        if went_upstream && !self.stored {
            tier.release_claims(url);
        }
    }

    /// `only-if-cached` (RFC 9111 §5.2.1.7): true when the request must not go upstream
    /// (nothing usable was stored, or the phase would not be asked).
    pub fn only_if_cached(&self) -> bool {
        self.active() && self.directives.only_if_cached
    }

    /// Remembers what the origin answered before pingora-cache merges or stores it.
    pub fn note_upstream_response(&mut self, response: &ResponseHeader) {
        if !self.active() {
            return;
        }
        self.forwarded_status = response.status.as_u16();
        self.set_cookies = response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        if response.status == http::StatusCode::NOT_MODIFIED {
            self.not_modified_headers = Some(response.headers.clone());
        }
    }

    /// Decides storability (RFC 9111 §3) and builds the entry's metadata, counting the
    /// upstream `Age` through the entry's epoch so freshness does not restart at storage.
    pub fn response_cacheable(
        &mut self,
        req: &RequestHeader,
        response: &ResponseHeader,
        rules: &[CacheRule],
    ) -> RespCacheable {
        let merged = self
            .not_modified_headers
            .take()
            .map(|h| policy::merge_not_modified(response, &h));
        let response = merged.as_ref().unwrap_or(response);
        let rule = policy::rule_for(rules, req.uri.path());
        let too_large =
            super::get().is_some_and(|edge| policy::too_large(response, edge.max_object_size));
        let decision = if too_large {
            Err(NotStored::TooLarge)
        } else {
            policy::storable(&req.method, &req.headers, response, rule, SystemTime::now())
        };
        match decision {
            Ok(freshness) => {
                self.stored = true;
                self.not_stored = None;
                RespCacheable::Cacheable(entry_meta(freshness))
            }
            Err(reason) => {
                self.stored = false;
                self.not_stored = Some(reason);
                RespCacheable::Uncacheable(NoCacheReason::Custom(reason.as_str()))
            }
        }
    }

    /// Whether a stale response may be served now (`error`: None while revalidating).
    pub fn serve_stale(&self, error: Option<&Error>) -> bool {
        policy::may_serve_stale(&self.directives, stale_cause(error))
    }

    /// How the cache handled this request; `None` on a route that does not cache.
    pub fn outcome(&self, cache: &HttpCache) -> Option<Outcome> {
        if !self.active() {
            return None;
        }
        Some(if self.method_cacheable {
            Outcome::of(&cache.phase())
        } else {
            Outcome::Bypass
        })
    }

    /// Adds `Cache-Status` and counts the outcome.
    pub fn annotate(&self, cache: &HttpCache, response: &mut ResponseHeader) -> Result<()> {
        let Some(outcome) = self.outcome(cache) else {
            return Ok(());
        };
        let phase = cache.phase();
        CACHE_METRICS.responses[outcome as usize].inc();
        if cache.lock_duration().is_some() && outcome == Outcome::Hit {
            CACHE_METRICS.coalesced.inc();
        }
        let ttl = cache
            .maybe_cache_meta()
            .map(|meta| policy::remaining_ttl(meta.fresh_until(), SystemTime::now()));
        let facts = StatusFacts {
            phase: &phase,
            ttl,
            forwarded_status: self.forwarded_status,
            stored: self.stored && matches!(outcome, Outcome::Miss | Outcome::Expired),
            not_stored: self.not_stored.filter(|_| self.method_cacheable),
            method_not_cacheable: !self.method_cacheable,
            shared_hit: self.shared_hit,
        };
        response.insert_header(CACHE_STATUS, status::cache_status(&facts))?;
        let forwarded_now = matches!(outcome, Outcome::Miss | Outcome::Expired);
        if forwarded_now && !response.headers.contains_key(http::header::SET_COOKIE) {
            for cookie in &self.set_cookies {
                response.append_header(http::header::SET_COOKIE, cookie.clone())?;
            }
        }
        Ok(())
    }

    /// RFC 9111 §4.4: a successful unsafe request invalidates the stored responses of its URL.
    pub fn invalidate_after(&self, req: &RequestHeader, status: u16) {
        if let Some(url) = &self.url {
            if policy::invalidates(&req.method, status) {
                purge(Some(url), None, None);
            }
        }
    }
}

/// The entry's metadata, with the epoch set back by the age it had when received.
fn entry_meta(freshness: policy::Freshness) -> CacheMeta {
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
    meta
}

fn stale_cause(error: Option<&Error>) -> StaleCause {
    let Some(e) = error else {
        return StaleCause::Revalidating;
    };
    match e.etype() {
        ErrorType::HTTPStatus(code) if *code >= 500 => StaleCause::ServerError,
        ErrorType::HTTPStatus(_) => StaleCause::OtherFailure,
        _ if e.esource() == &ErrorSource::Upstream => StaleCause::UpstreamFailure,
        _ => StaleCause::OtherFailure,
    }
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

/// Counts body bytes served from the cache.
pub fn count_body(cache: &HttpCache, bytes: usize) {
    if matches!(Outcome::of(&cache.phase()), Outcome::Hit | Outcome::Stale) {
        CACHE_METRICS.hit_bytes.inc_by(bytes as u64);
    }
}
