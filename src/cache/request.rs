//! One request's part in the edge cache, phase by phase: turning pingora-cache on, the key,
//! the request's own directives on hits, storability and the entry's metadata, Vary, the coding
//! a stored response is served in, ranges of a stored partial response, stale serving, `Age`
//! and `Cache-Status`, and invalidation by unsafe methods. The proxy calls these from its
//! phases; the decisions themselves are the pure functions of [`super::policy`],
//! [`super::ranges`] and `compress::derive`.

use super::edge::purge;
use super::metrics::CACHE_METRICS;
use super::policy::{self, Freshness, HitDecision, NotStored, RequestDirectives, StaleCause};
use super::status::{self, Outcome, StatusFacts};
use super::store::{self, Selected};
use super::{key, ranges};
use crate::compress::derive::{self, Derivable, Derivation};
use crate::compress::RequestCompression;
use crate::config::CacheRule;
use http::header::{HeaderName, AGE, DATE, RANGE};
use http::StatusCode;
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::{
    CacheMeta, CacheOptionOverrides, CachePhase, ForcedFreshness, HitHandler, HttpCache,
    NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::date::get_cached_date;
use pingora::proxy::RangeType;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CACHE_STATUS: &str = "cache-status";
/// Most ranges of one request pingora's range filter serves (its own default).
const MAX_MULTIPART_RANGES: Option<usize> = Some(200);

/// The config a request's storing decision reads.
pub struct StoreRules<'a> {
    pub rules: &'a [CacheRule],
    pub targeted_field: &'a HeaderName,
    /// `[cache] stale_if_error` (seconds), for responses that name none.
    pub stale_if_error: u32,
    /// When the request started (the response delay of RFC 9111 §4.2.3 counts from it).
    pub started: Instant,
}

/// Per-request cache state.
#[derive(Debug, Default)]
pub struct RequestCache {
    /// Set when the route caches: the URL the response is stored under.
    pub url: Option<String>,
    directives: RequestDirectives,
    method_cacheable: bool,
    /// The request has `Range`: a stored body is then served as stored when it can be.
    range_requested: bool,
    stored: bool,
    not_stored: Option<NotStored>,
    forwarded_status: u16,
    /// The storing decision made when the upstream's response header arrived, before the
    /// compression module ran; reused by `response_cacheable`.
    decided: Option<std::result::Result<Freshness, NotStored>>,
    /// The headers of a 304 answering our revalidation, merged into the stored response.
    not_modified_headers: Option<http::HeaderMap>,
    /// Set-Cookie values of the origin's answer: removed from the stored copy, but owed to
    /// the client whose request fetched it (which pingora-cache serves from the stored copy).
    set_cookies: Vec<http::HeaderValue>,
    /// The hit came from the shared tier (Redis), not this instance's cache.
    shared_hit: bool,
    /// A stale response stands in for a failing origin (stale-if-error).
    stale_on_error: bool,
    /// The coding this request's stored response is derived into, once decided.
    derivation: Option<Option<Derivation>>,
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
            range_requested: req.headers.contains_key(RANGE),
            ..RequestCache::default()
        }
    }

    fn active(&self) -> bool {
        self.url.is_some()
    }

    /// Turns pingora-cache on for cacheable requests of caching routes.
    pub fn enable(&self, cache: &mut HttpCache) {
        let Some(edge) = super::edge::get() else {
            return;
        };
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

    /// What the request asks of a stored response: its own Cache-Control, and, for a stored
    /// partial response, a range inside it (else the request goes to the origin).
    pub fn hit_freshness(
        &self,
        meta: &CacheMeta,
        req: &RequestHeader,
        targeted_field: &HeaderName,
    ) -> Option<ForcedFreshness> {
        let header = meta.response_header();
        if header.status == StatusCode::PARTIAL_CONTENT {
            let covered = policy::stored_part(&header.headers)
                .and_then(|part| ranges::covered(&req.headers, part));
            if covered.is_none() {
                return Some(ForcedFreshness::ForceMiss);
            }
        }
        if self.directives == RequestDirectives::default() {
            return None;
        }
        let lifetime = meta
            .fresh_until()
            .duration_since(meta.epoch())
            .unwrap_or(Duration::ZERO);
        // Only max-stale can be refused by the response's own revalidation demands.
        let must_revalidate =
            self.directives.max_stale.is_some() && policy::must_revalidate(header, targeted_field);
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

    /// Remembers what the origin answered before pingora-cache merges or stores it, and dates
    /// an answer that came without `Date` (RFC 9110 §6.6.1), so the stored copy keeps it.
    pub fn note_upstream_response(&mut self, response: &mut ResponseHeader) -> Result<()> {
        if !self.active() || response.status.is_informational() {
            return Ok(());
        }
        if !response.headers.contains_key(DATE) {
            response.insert_header(DATE, get_cached_date())?;
        }
        self.forwarded_status = response.status.as_u16();
        self.set_cookies = response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        if response.status == StatusCode::NOT_MODIFIED {
            self.not_modified_headers = Some(response.headers.clone());
        }
        Ok(())
    }

    /// Decides, as the upstream's response header arrives, whether the cache will store it;
    /// `true` then, and the compression module leaves the response as the origin sent it.
    pub fn decide_storing(
        &mut self,
        cache: &HttpCache,
        req: &RequestHeader,
        response: &ResponseHeader,
        rules: &StoreRules<'_>,
    ) -> bool {
        let status = response.status;
        if !cache.enabled() || status.is_informational() || status == StatusCode::NOT_MODIFIED {
            return false;
        }
        let decision = self.storing_decision(req, response, rules);
        let stored = decision.is_ok();
        self.decided = Some(decision);
        stored
    }

    fn storing_decision(
        &self,
        req: &RequestHeader,
        response: &ResponseHeader,
        rules: &StoreRules<'_>,
    ) -> std::result::Result<Freshness, NotStored> {
        let too_large = super::edge::get()
            .is_some_and(|edge| policy::too_large(response, edge.max_object_size));
        if too_large {
            return Err(NotStored::TooLarge);
        }
        let facts = policy::StoreFacts {
            method: &req.method,
            request_headers: &req.headers,
            rule: policy::rule_for(rules.rules, req.uri.path()),
            targeted_field: rules.targeted_field,
            default_stale_if_error: rules.stale_if_error,
            now: SystemTime::now(),
            response_delay: rules.started.elapsed(),
        };
        policy::storable(&facts, response)
    }

    /// Decides storability (RFC 9111 §3) and builds the entry's metadata, counting the
    /// upstream `Age` through the entry's epoch so freshness does not restart at storage. A
    /// response whose stored body clients may get in another coding is stored with
    /// `Vary: Accept-Encoding`.
    pub fn response_cacheable(
        &mut self,
        req: &RequestHeader,
        response: &ResponseHeader,
        rules: &StoreRules<'_>,
        compression: &RequestCompression,
    ) -> RespCacheable {
        let merged = self
            .not_modified_headers
            .take()
            .map(|h| policy::merge_not_modified(response, &h));
        let decision = match (&merged, self.decided.take()) {
            // Decided before the response header was rewritten: store it as rewritten.
            (None, Some(decided)) => decided.map(|mut freshness| {
                freshness.stored_header =
                    policy::header_to_store_now(response, rules.targeted_field);
                freshness
            }),
            _ => self.storing_decision(req, merged.as_ref().unwrap_or(response), rules),
        };
        match decision {
            Ok(mut freshness) => {
                if let Some(config) = compression.config() {
                    if Derivable::of(&freshness.stored_header, config).varies() {
                        if let Err(e) = crate::compress::policy::add_vary_accept_encoding(
                            &mut freshness.stored_header,
                        ) {
                            tracing::debug!(error = %e, "stored without Vary: Accept-Encoding");
                        }
                    }
                }
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
    pub fn serve_stale(&mut self, error: Option<&Error>) -> bool {
        let cause = stale_cause(error);
        let serve = policy::may_serve_stale(&self.directives, cause);
        self.stale_on_error = serve && cause != StaleCause::Revalidating;
        serve
    }

    /// The derivation the stored response this request is served needs, decided once:
    /// from what the stored representation allows and the request's negotiation.
    fn planned_derivation(
        &mut self,
        cache: &mut HttpCache,
        header: &ResponseHeader,
        compression: &RequestCompression,
    ) -> Option<Derivation> {
        if let Some(planned) = self.derivation {
            return planned;
        }
        let planned = compression.config().and_then(|config| {
            let handler = served_reader(cache)?;
            let derivable = store::derivable(handler, || Derivable::of(header, config))?;
            derive::plan(derivable, compression, self.range_requested)
        });
        self.derivation = Some(planned);
        planned
    }

    /// The ranges of a response served from the cache: a stored partial response answers the
    /// ranges inside it; a derived coding is served whole (its length is not known ahead);
    /// anything else goes through pingora's range filter.
    pub fn range_filter(
        &mut self,
        cache: &mut HttpCache,
        req: &RequestHeader,
        response: &mut ResponseHeader,
        compression: &RequestCompression,
    ) -> RangeType {
        if response.status == StatusCode::PARTIAL_CONTENT {
            let answer = policy::stored_part(&response.headers).and_then(|part| {
                let covered = ranges::covered(&req.headers, part)?;
                ranges::answer_from_part(response, part, covered).ok()
            });
            return answer.unwrap_or(RangeType::None);
        }
        if self.active()
            && self
                .planned_derivation(cache, response, compression)
                .is_some()
        {
            return RangeType::None;
        }
        pingora::proxy::range_header_filter(req, response, MAX_MULTIPART_RANGES)
    }

    /// Serves a stored response in the coding the request negotiated: the reader switches to
    /// the derived variant (made now if it is the first to ask) and the header says so.
    pub async fn serve_coding(
        &mut self,
        cache: &mut HttpCache,
        response: &mut ResponseHeader,
        compression: &RequestCompression,
        head: bool,
    ) -> Result<()> {
        let Some(config) = compression.config() else {
            return Ok(());
        };
        if !self.active() || response.status.is_informational() {
            return Ok(());
        }
        let Some(derivation) = self.planned_derivation(cache, response, compression) else {
            return Ok(());
        };
        if head || response.status == StatusCode::NOT_MODIFIED {
            return derive::rewrite_header(derivation, response, None);
        }
        let (Some(edge), Some(handler)) = (super::edge::get(), served_reader(cache)) else {
            return Ok(());
        };
        match edge
            .storage
            .select_variant(handler, derivation, config)
            .await
        {
            Selected::Variant(length) => derive::rewrite_header(derivation, response, length),
            Selected::Stored => Ok(()),
        }
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

    /// Adds `Cache-Status` and, on a response that fills or refreshes the cache, `Age` (the
    /// upstream's plus the time Parapet held it, RFC 9111 §4.2.3; hits get theirs from
    /// pingora-cache); counts the outcome.
    pub fn annotate(&self, cache: &HttpCache, response: &mut ResponseHeader) -> Result<()> {
        if response.status.is_informational() {
            return Ok(());
        }
        let Some(outcome) = self.outcome(cache) else {
            return Ok(());
        };
        let phase = cache.phase();
        CACHE_METRICS.responses[outcome as usize].inc();
        if cache.lock_duration().is_some() && outcome == Outcome::Hit {
            CACHE_METRICS.coalesced.inc();
        }
        let meta = cache.maybe_cache_meta();
        let ttl = meta.map(|meta| policy::remaining_ttl(meta.fresh_until(), SystemTime::now()));
        let forwarded_now = matches!(outcome, Outcome::Miss | Outcome::Expired);
        let stored_now = self.stored && forwarded_now;
        if let Some(meta) = meta.filter(|_| stored_now || revalidated(&phase)) {
            response.insert_header(AGE, age_header(meta))?;
        }
        let facts = StatusFacts {
            phase: &phase,
            ttl,
            forwarded_status: self.forwarded_status,
            stored: stored_now,
            not_stored: self.not_stored.filter(|_| self.method_cacheable),
            method_not_cacheable: !self.method_cacheable,
            shared_hit: self.shared_hit,
            stale_on_error: self.stale_on_error,
        };
        response.insert_header(CACHE_STATUS, status::cache_status(&facts))?;
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

/// The `Age` of a stored response: its age, 2^31 at most; an epoch held at 1970 stands for
/// an age clamped to 2^31.
fn age_header(meta: &CacheMeta) -> u64 {
    if meta.epoch() <= UNIX_EPOCH {
        return policy::AGE_CAP_SECS;
    }
    meta.age().as_secs().min(policy::AGE_CAP_SECS)
}

fn revalidated(phase: &CachePhase) -> bool {
    matches!(
        phase,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_)
    )
}

/// The reader of the stored response the request is being served from, if any.
fn served_reader(cache: &mut HttpCache) -> Option<&mut HitHandler> {
    match cache.phase() {
        CachePhase::Hit
        | CachePhase::Stale
        | CachePhase::StaleUpdating
        | CachePhase::Revalidated
        | CachePhase::RevalidatedNoCache(_) => Some(cache.hit_handler()),
        CachePhase::Miss | CachePhase::Expired => cache.miss_body_reader(),
        _ => None,
    }
}

/// The entry's metadata, with the epoch set back by the age it had when received. pingora-cache
/// cannot store a time before 1970, so an age reaching back further (a clamped 2^31) starts
/// at 1970: stale all the same, and sent as 2^31 (see [`age_header`]).
fn entry_meta(freshness: Freshness) -> CacheMeta {
    let now = SystemTime::now();
    let epoch = now
        .checked_sub(freshness.initial_age)
        .unwrap_or(UNIX_EPOCH)
        .max(UNIX_EPOCH);
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
        // RFC 5861 §4's errors: 500, 502, 503 and 504, not 501 or 505, which say something
        // about the request.
        ErrorType::HTTPStatus(500 | 502 | 503 | 504) => StaleCause::ServerError,
        ErrorType::HTTPStatus(_) => StaleCause::OtherFailure,
        _ if e.esource() == &ErrorSource::Upstream => StaleCause::UpstreamFailure,
        _ => StaleCause::OtherFailure,
    }
}

/// The variance of this request for a stored response's `Vary`. On a compressing route,
/// `Accept-Encoding` is left out when the stored coding is one Parapet can derive others from:
/// every coding is then served from the one stored response.
pub fn variance(
    meta: &CacheMeta,
    req: &RequestHeader,
    compression: &RequestCompression,
) -> Option<HashBinary> {
    let headers = meta.headers();
    if !headers.contains_key(http::header::VARY) {
        return None;
    }
    let derives_codings =
        compression.config().is_some() && crate::compress::policy::derivable_coding(headers);
    if derives_codings && key::varies_only_on_accept_encoding(headers) {
        return None;
    }
    let names = key::vary_names(headers);
    let mut builder: Option<VarianceBuilder> = None;
    for name in &names {
        if derives_codings && name == http::header::ACCEPT_ENCODING.as_str() {
            continue;
        }
        let value = key::vary_value(name, &req.headers);
        builder
            .get_or_insert_with(VarianceBuilder::new)
            .add_owned_value(name.as_str(), value.into_bytes());
    }
    builder.and_then(VarianceBuilder::finalize)
}

/// Counts body bytes served from the cache.
pub fn count_body(cache: &HttpCache, bytes: usize) {
    if matches!(Outcome::of(&cache.phase()), Outcome::Hit | Outcome::Stale) {
        CACHE_METRICS.hit_bytes.inc_by(bytes as u64);
    }
}
