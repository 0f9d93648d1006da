//! RFC 9111 for a shared cache, as pure functions: whether a response may be stored and for
//! how long (with the upstream `Age` counted), what a request's own Cache-Control asks of a
//! stored response, and edge rules that fill in (or, forced, replace) origin freshness.

use crate::config::CacheRule;
use http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// `*` matches any run of characters (including `/`), `?` exactly one.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The first rule whose glob matches the path.
pub fn rule_for<'a>(rules: &'a [CacheRule], path: &str) -> Option<&'a CacheRule> {
    rules.iter().find(|rule| glob_matches(&rule.glob, path))
}

/// What the request's own Cache-Control (RFC 9111 §5.2.1) asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestDirectives {
    pub no_cache: bool,
    pub no_store: bool,
    pub max_age: Option<u64>,
    /// `Some(None)`: any staleness accepted; `Some(Some(n))`: up to n seconds.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut directives = RequestDirectives::default();
        let values: Vec<&str> = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            // RFC 9111 §5.4: Pragma: no-cache counts only without Cache-Control.
            let pragma_no_cache = headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("no-cache"));
            directives.no_cache = pragma_no_cache;
            return directives;
        }
        for item in values.iter().flat_map(|v| v.split(',')) {
            let (name, value) = match item.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let seconds = value.and_then(|v| v.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => directives.no_cache = true,
                "no-store" => directives.no_store = true,
                // An invalid max-age is treated as 0 (stale), the safe reading.
                "max-age" => directives.max_age = Some(seconds.unwrap_or(0)),
                "max-stale" => directives.max_stale = Some(seconds),
                "min-fresh" => directives.min_fresh = Some(seconds.unwrap_or(0)),
                "only-if-cached" => directives.only_if_cached = true,
                _ => {}
            }
        }
        directives
    }

    /// True when the client forbids serving a stale response even within SWR windows.
    pub fn forbids_stale(&self) -> bool {
        self.no_cache || self.max_age.is_some() || self.min_fresh.is_some()
    }
}

/// What to do with a stored response for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitDecision {
    /// Let freshness decide (fresh: serve; stale: revalidate or serve stale per SWR).
    Default,
    /// Forward for validation first.
    Revalidate,
    /// Serve although stale: the client accepts it (max-stale).
    ServeStale,
}

/// Applies request directives to a stored response of `age`, fresh for `lifetime`.
pub fn hit_decision(
    request: &RequestDirectives,
    age: Duration,
    lifetime: Duration,
    must_revalidate: bool,
) -> HitDecision {
    if request.no_cache {
        return HitDecision::Revalidate;
    }
    if request.max_age.is_some_and(|max| age.as_secs() > max) {
        return HitDecision::Revalidate;
    }
    let remaining = lifetime.saturating_sub(age).as_secs();
    if request.min_fresh.is_some_and(|min| remaining < min) {
        return HitDecision::Revalidate;
    }
    if age > lifetime && !must_revalidate {
        let staleness = (age - lifetime).as_secs();
        if let Some(limit) = request.max_stale {
            if limit.is_none_or(|max| staleness <= max) {
                return HitDecision::ServeStale;
            }
        }
    }
    HitDecision::Default
}

/// Statuses a cache may store with heuristic freshness (RFC 9110 §15.1); edge-rule ttls count
/// as heuristic and apply only to these.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// How a storable response is kept.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// Freshness lifetime from origin time (s-maxage, max-age, Expires−Date or a rule's ttl).
    pub lifetime: Duration,
    /// Age when received (RFC 9111 §4.2.3: the larger of the Age header and apparent age).
    pub initial_age: Duration,
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    /// The response header to store (private/Set-Cookie fields removed).
    pub stored_header: ResponseHeader,
}

/// Why a response is not stored; `as_str` is the Cache-Status `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Neither GET nor HEAD.
    Method,
    /// The request said `Cache-Control: no-store`.
    RequestNoStore,
    /// 1xx, 206 or 304.
    Status,
    NoStore,
    Private,
    VaryStar,
    /// The request carried `Authorization` and the response does not allow sharing it.
    Authorization,
    /// `Set-Cookie` without a rule allowing it.
    SetCookie,
    /// No explicit freshness and no rule giving a ttl.
    NoFreshness,
    /// The declared length is over `max_object_size`.
    TooLarge,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::VaryStar => "vary-star",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::NoFreshness => "no-freshness",
            NotStored::TooLarge => "too-large",
        }
    }
}

/// RFC 9111 §3 for a shared cache, with edge rules.
pub fn storable(
    method: &Method,
    request_headers: &HeaderMap,
    response: &ResponseHeader,
    rule: Option<&CacheRule>,
    now: SystemTime,
) -> Result<Freshness, NotStored> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(NotStored::Method);
    }
    if RequestDirectives::parse(request_headers).no_store {
        return Err(NotStored::RequestNoStore);
    }
    let status = response.status;
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Status);
    }
    let cc = CacheControl::from_resp_headers(response);
    if cc.as_ref().is_some_and(|cc| cc.no_store()) {
        return Err(NotStored::NoStore);
    }
    if cc
        .as_ref()
        .is_some_and(|cc| cc.private() && cc.private_field_names().is_none())
    {
        return Err(NotStored::Private);
    }
    if vary_star(&response.headers) {
        return Err(NotStored::VaryStar);
    }
    if request_headers.contains_key(AUTHORIZATION)
        && !cc
            .as_ref()
            .is_some_and(|cc| cc.allow_caching_authorized_req())
    {
        return Err(NotStored::Authorization);
    }
    let has_cookie = response.headers.contains_key(SET_COOKIE);
    if has_cookie && !rule.is_some_and(|r| r.cache_set_cookie) {
        return Err(NotStored::SetCookie);
    }
    // A no-cache response may be stored, to be revalidated before every use.
    let revalidate_always = cc.as_ref().is_some_and(|cc| cc.no_cache());
    let lifetime = if revalidate_always {
        Duration::ZERO
    } else {
        freshness_lifetime(cc.as_ref(), response, rule, now).ok_or(NotStored::NoFreshness)?
    };
    let (stale_while_revalidate, stale_if_error) = stale_windows(cc.as_ref());
    let mut stored_header = response.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut stored_header);
    }
    if has_cookie {
        stored_header.remove_header(&SET_COOKIE);
    }
    // The age is accounted for in the entry's epoch; a stored Age would be counted twice.
    stored_header.remove_header(&http::header::AGE);
    Ok(Freshness {
        lifetime,
        initial_age: initial_age(response, now),
        stale_while_revalidate,
        stale_if_error,
        stored_header,
    })
}

fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == "*")
}

/// s-maxage, then max-age, then Expires−Date; else a rule's ttl for heuristically cacheable
/// statuses. A forced rule replaces whatever the origin said.
fn freshness_lifetime(
    cc: Option<&CacheControl>,
    response: &ResponseHeader,
    rule: Option<&CacheRule>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(rule) = rule.filter(|r| r.force) {
        return Some(rule.ttl);
    }
    let explicit = cc
        .and_then(|cc| {
            cc.s_maxage()
                .ok()
                .flatten()
                .or_else(|| cc.max_age().ok().flatten())
        })
        .map(|seconds| Duration::from_secs(u64::from(seconds)))
        .or_else(|| expires_lifetime(response, now));
    explicit.or_else(|| {
        rule.filter(|_| heuristically_cacheable(response.status))
            .map(|r| r.ttl)
    })
}

fn header_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first
        .to_str()
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// Expires − Date (RFC 9111 §4.2.1); an unparseable Expires means already expired.
fn expires_lifetime(response: &ResponseHeader, now: SystemTime) -> Option<Duration> {
    if !response.headers.contains_key(http::header::EXPIRES) {
        return None;
    }
    let Some(expires) = header_date(&response.headers, http::header::EXPIRES) else {
        return Some(Duration::ZERO);
    };
    let date = header_date(&response.headers, http::header::DATE).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// RFC 9111 §4.2.3: max(apparent age, Age header).
fn initial_age(response: &ResponseHeader, now: SystemTime) -> Duration {
    let age_value = response
        .headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::ZERO);
    let apparent = header_date(&response.headers, http::header::DATE)
        .and_then(|date| now.duration_since(date).ok())
        .map(|age| Duration::from_secs(age.as_secs()))
        .unwrap_or(Duration::ZERO);
    age_value.max(apparent)
}

/// Stale windows the origin allows: none when it demands revalidation (must-revalidate,
/// proxy-revalidate, no-cache); otherwise its explicit stale-while-revalidate/stale-if-error.
fn stale_windows(cc: Option<&CacheControl>) -> (u32, u32) {
    let Some(cc) = cc else { return (0, 0) };
    if cc.must_revalidate() || cc.proxy_revalidate() || cc.no_cache() {
        return (0, 0);
    }
    (
        cc.stale_while_revalidate().ok().flatten().unwrap_or(0),
        cc.stale_if_error().ok().flatten().unwrap_or(0),
    )
}

/// True when a stored response may not be served stale at all (must/proxy-revalidate,
/// s-maxage's implied proxy-revalidate, no-cache).
pub fn must_revalidate(response: &ResponseHeader) -> bool {
    CacheControl::from_resp_headers(response).is_some_and(|cc| {
        cc.must_revalidate()
            || cc.proxy_revalidate()
            || cc.no_cache()
            || cc.s_maxage().ok().flatten().is_some()
    })
}

/// Methods whose success invalidates the stored responses of the target URI (RFC 9111 §4.4).
pub fn invalidates(method: &Method, status: u16) -> bool {
    !method.is_safe() && (200..400).contains(&status)
}

/// RFC 9111 §4.3.4: every field of the 304 replaces the stored one, except framing and Vary
/// (pingora-cache itself only carries over a few validators and freshness fields).
pub fn merge_not_modified(stored: &ResponseHeader, not_modified: &HeaderMap) -> ResponseHeader {
    use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, VARY};
    let mut merged = stored.clone();
    for name in not_modified.keys() {
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

/// True when the response declares a body longer than `max_object_size`: it passes through
/// unstored.
pub fn too_large(response: &ResponseHeader, max_object_size: usize) -> bool {
    crate::fields::content_length(&response.headers)
        .is_some_and(|length| length > max_object_size as u64)
}

/// Seconds of freshness left at `now` for an entry fresh until `fresh_until`; negative once
/// stale (Cache-Status `ttl`).
pub fn remaining_ttl(fresh_until: SystemTime, now: SystemTime) -> i64 {
    match fresh_until.duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Why a stored response is being considered stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleCause {
    /// Within stale-while-revalidate: no failure, a refresh is under way.
    Revalidating,
    /// The origin answered with a 5xx (stale-if-error).
    ServerError,
    /// Reaching the origin failed (stale-if-error).
    UpstreamFailure,
    /// Any other failure (the client's side, or Parapet's own).
    OtherFailure,
}

/// Whether a stale response may be served: while revalidating unless the client demands
/// freshness, and for stale-if-error on upstream failures and 5xx.
pub fn may_serve_stale(request: &RequestDirectives, cause: StaleCause) -> bool {
    match cause {
        StaleCause::Revalidating => !request.forbids_stale(),
        StaleCause::ServerError | StaleCause::UpstreamFailure => true,
        StaleCause::OtherFailure => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            response.append_header(name.to_string(), *value).unwrap();
        }
        response
    }

    fn request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn store(
        resp: &ResponseHeader,
        req: &HeaderMap,
        rule: Option<&CacheRule>,
    ) -> Result<Freshness, &'static str> {
        storable(&Method::GET, req, resp, rule, SystemTime::now()).map_err(NotStored::as_str)
    }

    fn rule(ttl: u64, force: bool) -> CacheRule {
        CacheRule {
            glob: "/*".into(),
            ttl: Duration::from_secs(ttl),
            force,
            cache_set_cookie: false,
        }
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_age_is_counted() {
        let stored = store(
            &response(
                200,
                &[("cache-control", "max-age=10, s-maxage=100"), ("age", "30")],
            ),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!(stored.lifetime, Duration::from_secs(100));
        assert_eq!(stored.initial_age, Duration::from_secs(30));
    }

    #[test]
    fn expires_counts_from_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = httpdate::fmt_http_date(now - Duration::from_secs(5));
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(55));
        let stored = storable(
            &Method::GET,
            &request(&[]),
            &response(200, &[("date", &date), ("expires", &expires)]),
            None,
            now,
        )
        .unwrap();
        assert_eq!(stored.lifetime, Duration::from_secs(60));
        assert_eq!(stored.initial_age, Duration::from_secs(5));
        let bad = store(&response(200, &[("expires", "0")]), &request(&[]), None).unwrap();
        assert_eq!(bad.lifetime, Duration::ZERO);
    }

    #[test]
    fn no_heuristic_freshness_without_a_rule() {
        assert_eq!(
            store(&response(200, &[]), &request(&[]), None).err(),
            Some("no-freshness")
        );
        assert_eq!(
            store(&response(200, &[]), &request(&[]), Some(&rule(60, false)))
                .unwrap()
                .lifetime,
            Duration::from_secs(60)
        );
        assert_eq!(
            store(&response(500, &[]), &request(&[]), Some(&rule(60, false))).err(),
            Some("no-freshness")
        );
    }

    #[test]
    fn forced_rules_replace_freshness_but_never_no_store_or_private() {
        let forced = rule(60, true);
        assert_eq!(
            store(
                &response(200, &[("cache-control", "max-age=0")]),
                &request(&[]),
                Some(&forced)
            )
            .unwrap()
            .lifetime,
            Duration::from_secs(60)
        );
        assert_eq!(
            store(
                &response(200, &[("cache-control", "no-store")]),
                &request(&[]),
                Some(&forced)
            )
            .err(),
            Some("no-store")
        );
        assert_eq!(
            store(
                &response(200, &[("cache-control", "private")]),
                &request(&[]),
                Some(&forced)
            )
            .err(),
            Some("private")
        );
    }

    #[test]
    fn shared_cache_refusals() {
        let fresh = [("cache-control", "max-age=60")];
        assert_eq!(
            store(
                &response(200, &[("cache-control", "max-age=60"), ("vary", "*")]),
                &request(&[]),
                None
            )
            .err(),
            Some("vary-star")
        );
        assert_eq!(
            store(
                &response(200, &fresh),
                &request(&[("authorization", "Basic x")]),
                None
            )
            .err(),
            Some("authorization")
        );
        assert!(store(
            &response(200, &[("cache-control", "public, max-age=60")]),
            &request(&[("authorization", "Basic x")]),
            None
        )
        .is_ok());
        assert_eq!(
            store(
                &response(
                    200,
                    &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
                ),
                &request(&[]),
                None
            )
            .err(),
            Some("set-cookie")
        );
        assert_eq!(
            store(
                &response(200, &fresh),
                &request(&[("cache-control", "no-store")]),
                None
            )
            .err(),
            Some("request-no-store")
        );
        assert_eq!(
            storable(
                &Method::POST,
                &request(&[]),
                &response(200, &fresh),
                None,
                SystemTime::now()
            )
            .err()
            .map(NotStored::as_str),
            Some("method")
        );
    }

    #[test]
    fn set_cookie_is_stripped_when_a_rule_allows_storing_it() {
        let allow = CacheRule {
            cache_set_cookie: true,
            ..rule(60, false)
        };
        let stored = store(
            &response(
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            ),
            &request(&[]),
            Some(&allow),
        )
        .unwrap();
        assert!(!stored.stored_header.headers.contains_key(SET_COOKIE));
    }

    #[test]
    fn revalidation_demands_close_the_stale_windows() {
        let swr = store(
            &response(
                200,
                &[(
                    "cache-control",
                    "max-age=1, stale-while-revalidate=30, stale-if-error=60",
                )],
            ),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!((swr.stale_while_revalidate, swr.stale_if_error), (30, 60));
        let strict = store(
            &response(
                200,
                &[(
                    "cache-control",
                    "max-age=1, must-revalidate, stale-if-error=60",
                )],
            ),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!(
            (strict.stale_while_revalidate, strict.stale_if_error),
            (0, 0)
        );
        let no_cache = store(
            &response(200, &[("cache-control", "no-cache, max-age=60")]),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!(no_cache.lifetime, Duration::ZERO);
    }

    #[test]
    fn request_directives_and_pragma() {
        let parsed = RequestDirectives::parse(&request(&[(
            "cache-control",
            "max-age=5, max-stale, min-fresh=2, only-if-cached",
        )]));
        assert_eq!(parsed.max_age, Some(5));
        assert_eq!(parsed.max_stale, Some(None));
        assert_eq!(parsed.min_fresh, Some(2));
        assert!(parsed.only_if_cached);
        assert!(RequestDirectives::parse(&request(&[("pragma", "no-cache")])).no_cache);
        assert!(
            !RequestDirectives::parse(&request(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-stale")
            ]))
            .no_cache
        );
    }

    #[test]
    fn hit_decisions_follow_the_request() {
        let secs = Duration::from_secs;
        let plain = RequestDirectives::default();
        assert_eq!(
            hit_decision(&plain, secs(5), secs(10), false),
            HitDecision::Default
        );
        let max_age = RequestDirectives {
            max_age: Some(3),
            ..Default::default()
        };
        assert_eq!(
            hit_decision(&max_age, secs(5), secs(10), false),
            HitDecision::Revalidate
        );
        let min_fresh = RequestDirectives {
            min_fresh: Some(6),
            ..Default::default()
        };
        assert_eq!(
            hit_decision(&min_fresh, secs(5), secs(10), false),
            HitDecision::Revalidate
        );
        let stale_ok = RequestDirectives {
            max_stale: Some(Some(10)),
            ..Default::default()
        };
        assert_eq!(
            hit_decision(&stale_ok, secs(15), secs(10), false),
            HitDecision::ServeStale
        );
        assert_eq!(
            hit_decision(&stale_ok, secs(25), secs(10), false),
            HitDecision::Default
        );
        assert_eq!(
            hit_decision(&stale_ok, secs(15), secs(10), true),
            HitDecision::Default
        );
    }

    #[test]
    fn globs_match_like_shell_patterns_across_slashes() {
        assert!(glob_matches("/static/*", "/static/a/b.css"));
        assert!(glob_matches("/api/v1/status", "/api/v1/status"));
        assert!(!glob_matches("/api/v1/status", "/api/v1/status/x"));
        assert!(glob_matches("/static/*.css", "/static/site.css"));
        assert!(!glob_matches("/static/*.css", "/static/site.js"));
        assert!(glob_matches("/a?c", "/abc"));
    }
    #[test]
    fn a_304_replaces_stored_fields_but_not_framing_or_vary() {
        let stored = response(
            200,
            &[
                ("content-length", "10"),
                ("vary", "accept"),
                ("etag", "\"a\""),
                ("x-old", "kept"),
            ],
        );
        let not_modified = request(&[
            ("content-length", "0"),
            ("vary", "other"),
            ("etag", "\"b\""),
            ("cache-control", "max-age=5"),
        ]);
        let merged = merge_not_modified(&stored, &not_modified);
        let get = |name: &str| merged.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(get("content-length"), Some("10"));
        assert_eq!(get("vary"), Some("accept"));
        assert_eq!(get("etag"), Some("\"b\""));
        assert_eq!(get("cache-control"), Some("max-age=5"));
        assert_eq!(get("x-old"), Some("kept"));
    }

    #[test]
    fn only_a_declared_length_over_the_bound_is_too_large() {
        assert!(too_large(&response(200, &[("content-length", "11")]), 10));
        assert!(!too_large(
            &response(200, &[("content-length", " 10 ")]),
            10
        ));
        assert!(!too_large(&response(200, &[]), 10));
    }

    #[test]
    fn remaining_ttl_is_negative_once_stale() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(remaining_ttl(now + Duration::from_secs(42), now), 42);
        assert_eq!(remaining_ttl(now - Duration::from_secs(3), now), -3);
    }

    #[test]
    fn stale_is_served_on_upstream_trouble_and_while_revalidating_unless_refused() {
        let plain = RequestDirectives::default();
        let strict = RequestDirectives {
            no_cache: true,
            ..Default::default()
        };
        assert!(may_serve_stale(&plain, StaleCause::Revalidating));
        assert!(!may_serve_stale(&strict, StaleCause::Revalidating));
        assert!(may_serve_stale(&strict, StaleCause::ServerError));
        assert!(may_serve_stale(&plain, StaleCause::UpstreamFailure));
        assert!(!may_serve_stale(&plain, StaleCause::OtherFailure));
    }
}
