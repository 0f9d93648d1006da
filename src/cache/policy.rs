//! RFC 9111 for a shared cache, as pure functions: whether a response may be stored and for
//! how long (with the upstream `Age` counted), which field's directives govern it (RFC 9213
//! targeted fields before Cache-Control), what a request's own Cache-Control asks of a stored
//! response, and edge rules that fill in (or, forced, replace) origin freshness.

use super::dates;
use crate::config::CacheRule;
use http::header::{HeaderName, AGE, AUTHORIZATION, CACHE_CONTROL, PRAGMA, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// The largest age a cache counts or sends (RFC 9111 §1.2.2: 2^31 seconds); larger `Age`
/// values are clamped to it, so a huge value means "stale", never an overflow.
pub const AGE_CAP_SECS: u64 = 1 << 31;

/// The targeted field every CDN honours (RFC 9213 §3), after the configured one.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

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
    /// 1xx, 304, or a 206 that is not one byte range of a known length.
    Status,
    /// `must-understand` on a status Parapet does not implement.
    MustUnderstand,
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
    /// A transfer coding other than `chunked` (say `gzip`): Parapet does not decode it, so
    /// what it would store is not the message's content (RFC 9111 §3.1).
    TransferCoding,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::Status => "status",
            NotStored::MustUnderstand => "must-understand",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::VaryStar => "vary-star",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::NoFreshness => "no-freshness",
            NotStored::TooLarge => "too-large",
            NotStored::TransferCoding => "transfer-coding",
        }
    }
}

/// What storing a response depends on besides the response itself.
pub struct StoreFacts<'a> {
    pub method: &'a Method,
    pub request_headers: &'a HeaderMap,
    /// The edge rule for the request path, if any.
    pub rule: Option<&'a CacheRule>,
    /// `[cache] targeted_field`, looked for before CDN-Cache-Control and Cache-Control.
    pub targeted_field: &'a HeaderName,
    /// `[cache] stale_if_error` (seconds), for a response that names none.
    pub default_stale_if_error: u32,
    /// When the response arrived.
    pub now: SystemTime,
    /// From sending the request upstream to receiving the response (RFC 9111 §4.2.3).
    pub response_delay: Duration,
}

/// The directives that govern Parapet's own storing and freshness of a response.
pub struct Control {
    pub cc: Option<CacheControl>,
    /// They come from a targeted field (RFC 9213 §2.2): Cache-Control and Expires are ignored.
    pub targeted: bool,
}

/// RFC 9213 §2.2: the first targeted field (`targeted_field`, then CDN-Cache-Control) whose
/// value is a valid, non-empty structured dictionary; an invalid one is ignored as a whole.
/// Without one, Cache-Control.
pub fn control(headers: &HeaderMap, targeted_field: &HeaderName) -> Control {
    for name in [targeted_field, &CDN_CACHE_CONTROL] {
        if valid_targeted_field(headers, name) {
            return Control {
                cc: CacheControl::from_headers_named(name.as_str(), headers),
                targeted: true,
            };
        }
    }
    Control {
        cc: CacheControl::from_headers_named(CACHE_CONTROL.as_str(), headers),
        targeted: false,
    }
}

/// The field is present and its lines, joined, parse as a non-empty RFC 8941 dictionary.
fn valid_targeted_field(headers: &HeaderMap, name: &HeaderName) -> bool {
    let mut lines = headers.get_all(name).iter();
    let Some(first) = lines.next() else {
        return false;
    };
    let joined;
    let value = match lines.next() {
        None => first.as_bytes(),
        Some(second) => {
            let mut all = [first, second].map(|v| v.as_bytes()).join(&b", "[..]);
            for line in lines {
                all.extend_from_slice(b", ");
                all.extend_from_slice(line.as_bytes());
            }
            joined = all;
            &joined
        }
    };
    sfv::Parser::parse_dictionary(value).is_ok_and(|dictionary| {
        !dictionary.is_empty() && dictionary.iter().all(|(key, value)| well_typed(key, value))
    })
}

/// RFC 9213 §2.1: a directive whose value is of the wrong type (`max-age="60"`, a string)
/// makes the whole field invalid. The delta-seconds directives must be non-negative integers.
fn well_typed(directive: &str, value: &sfv::ListEntry) -> bool {
    const SECONDS: [&str; 4] = [
        "max-age",
        "s-maxage",
        "stale-while-revalidate",
        "stale-if-error",
    ];
    if !SECONDS.contains(&directive) {
        return true;
    }
    matches!(
        value,
        sfv::ListEntry::Item(sfv::Item { bare_item: sfv::BareItem::Integer(n), .. }) if *n >= 0
    )
}

/// Whether `Transfer-Encoding` names a coding other than `chunked` (or the obsolete, harmless
/// `identity`).
fn foreign_transfer_coding(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .any(|coding| {
            !coding.eq_ignore_ascii_case("chunked") && !coding.eq_ignore_ascii_case("identity")
        })
}

/// RFC 9111 §5.2.2.3: statuses whose caching requirements Parapet implements, so that
/// `must-understand` lets them be stored despite `no-store`: the final statuses of RFC 9110 §15.
fn understood_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// RFC 9111 §3 for a shared cache, with edge rules.
pub fn storable(facts: &StoreFacts<'_>, response: &ResponseHeader) -> Result<Freshness, NotStored> {
    if *facts.method != Method::GET && *facts.method != Method::HEAD {
        return Err(NotStored::Method);
    }
    if RequestDirectives::parse(facts.request_headers).no_store {
        return Err(NotStored::RequestNoStore);
    }
    let status = response.status;
    let partial = status == StatusCode::PARTIAL_CONTENT;
    if status.is_informational()
        || status == StatusCode::NOT_MODIFIED
        || (partial && stored_part(&response.headers).is_none())
    {
        return Err(NotStored::Status);
    }
    if foreign_transfer_coding(&response.headers) {
        return Err(NotStored::TransferCoding);
    }
    let Control { cc, targeted } = control(&response.headers, facts.targeted_field);
    let must_understand = cc.as_ref().is_some_and(|cc| cc.has_key("must-understand"));
    if must_understand && !understood_status(status) {
        return Err(NotStored::MustUnderstand);
    }
    if cc.as_ref().is_some_and(|cc| cc.no_store()) && !must_understand {
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
    if facts.request_headers.contains_key(AUTHORIZATION)
        && !cc
            .as_ref()
            .is_some_and(|cc| cc.allow_caching_authorized_req())
    {
        return Err(NotStored::Authorization);
    }
    let has_cookie = response.headers.contains_key(SET_COOKIE);
    if has_cookie && !facts.rule.is_some_and(|r| r.cache_set_cookie) {
        return Err(NotStored::SetCookie);
    }
    // A no-cache response may be stored, to be revalidated before every use.
    let revalidate_always = cc.as_ref().is_some_and(|cc| cc.no_cache());
    let lifetime = if revalidate_always {
        Duration::ZERO
    } else {
        let expires = (!targeted).then_some(response);
        freshness_lifetime(cc.as_ref(), expires, response.status, facts)
            .ok_or(NotStored::NoFreshness)?
    };
    let (stale_while_revalidate, stale_if_error) =
        stale_windows(cc.as_ref(), facts.default_stale_if_error);
    Ok(Freshness {
        lifetime,
        initial_age: initial_age(&response.headers, facts.now, facts.response_delay),
        stale_while_revalidate,
        stale_if_error,
        stored_header: header_to_store(response, cc.as_ref()),
    })
}

/// The header to store for a response whose storability was decided on an earlier copy of
/// its header: the one the client now gets, connection-specific fields removed.
pub fn header_to_store_now(
    response: &ResponseHeader,
    targeted_field: &HeaderName,
) -> ResponseHeader {
    let Control { cc, .. } = control(&response.headers, targeted_field);
    header_to_store(response, cc.as_ref())
}

/// The header a storable response is kept with: the fields a shared cache may not store
/// removed (`private="..."` fields, `Set-Cookie`), and `Age`, which the entry's epoch
/// accounts for (stored, it would be counted twice). Connection-specific fields are gone
/// before it gets here (RFC 9111 §3.1).
pub fn header_to_store(response: &ResponseHeader, cc: Option<&CacheControl>) -> ResponseHeader {
    let mut stored_header = response.clone();
    if let Some(cc) = cc {
        cc.strip_private_headers(&mut stored_header);
    }
    stored_header.remove_header(&SET_COOKIE);
    stored_header.remove_header(&AGE);
    stored_header
}

/// The byte range a `206` carries (RFC 9110 §14.4): a single `Content-Range: bytes
/// FIRST-LAST/COMPLETE` with a known complete length; `None` for multipart or anything else.
pub fn stored_part(headers: &HeaderMap) -> Option<StoredPart> {
    let mut lines = headers.get_all(http::header::CONTENT_RANGE).iter();
    let value = lines.next()?.to_str().ok()?;
    if lines.next().is_some() {
        return None;
    }
    let (unit, rest) = value.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let digits = |t: &str| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
    };
    let part = StoredPart {
        first: digits(first)?,
        last: digits(last)?,
        complete: digits(complete)?,
    };
    (part.first <= part.last && part.last < part.complete).then_some(part)
}

/// The part of a representation a stored `206` holds: bytes `first..=last` of `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPart {
    pub first: u64,
    pub last: u64,
    pub complete: u64,
}

fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == "*")
}

/// s-maxage, then max-age, then Expires−Date (`expires`: the response, unless a targeted field
/// governs it); else a rule's ttl for heuristically cacheable statuses. A forced rule replaces
/// whatever the origin said.
fn freshness_lifetime(
    cc: Option<&CacheControl>,
    expires: Option<&ResponseHeader>,
    status: StatusCode,
    facts: &StoreFacts<'_>,
) -> Option<Duration> {
    if let Some(rule) = facts.rule.filter(|r| r.force) {
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
        .or_else(|| expires.and_then(|response| expires_lifetime(&response.headers, facts.now)));
    explicit.or_else(|| {
        facts
            .rule
            .filter(|_| heuristically_cacheable(status))
            .map(|r| r.ttl)
    })
}

/// The time a date field names: exactly one line, in one of the three HTTP date forms.
fn header_date(
    headers: &HeaderMap,
    name: http::header::HeaderName,
    now: SystemTime,
) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().and_then(|v| dates::parse(v, now))
}

/// Expires − Date (RFC 9111 §4.2.1); an invalid Expires (or several) means already expired
/// (RFC 9111 §5.3).
fn expires_lifetime(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !headers.contains_key(http::header::EXPIRES) {
        return None;
    }
    let Some(expires) = header_date(headers, http::header::EXPIRES, now) else {
        return Some(Duration::ZERO);
    };
    let date = header_date(headers, http::header::DATE, now).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// RFC 9111 §5.1: the `Age` a response states: the first member of its first line, when that
/// is a non-negative integer (anything else is ignored); values past 2^31 are clamped.
pub fn age_value(headers: &HeaderMap) -> Option<u64> {
    let first = headers.get(AGE)?.as_bytes();
    let member = first.split(|&b| b == b',').next()?.trim_ascii();
    delta_seconds(member)
}

/// RFC 9111 §1.2.2 delta-seconds, clamped at [`AGE_CAP_SECS`].
fn delta_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
            .min(AGE_CAP_SECS)
    }))
}

/// RFC 9111 §4.2.3: the corrected initial age, max(apparent age, Age + response delay),
/// never past 2^31 seconds.
fn initial_age(headers: &HeaderMap, now: SystemTime, response_delay: Duration) -> Duration {
    let corrected_age_value = age_value(headers)
        .map(|age| age.saturating_add(response_delay.as_secs()))
        .unwrap_or(0);
    let apparent = header_date(headers, http::header::DATE, now)
        .and_then(|date| now.duration_since(date).ok())
        .map_or(0, |age| age.as_secs());
    Duration::from_secs(corrected_age_value.max(apparent).min(AGE_CAP_SECS))
}

/// Stale windows the origin allows: none when it demands revalidation (RFC 9111 §4.2.4:
/// must-revalidate, proxy-revalidate, no-cache, and s-maxage, which implies proxy-revalidate
/// for a shared cache); otherwise its explicit stale-while-revalidate, and its explicit
/// stale-if-error or else `default_stale_if_error` (RFC 9111 §4.2.4 lets a cache serve stale
/// when disconnected from the origin).
fn stale_windows(cc: Option<&CacheControl>, default_stale_if_error: u32) -> (u32, u32) {
    let Some(cc) = cc else {
        return (0, default_stale_if_error);
    };
    if forbids_stale(cc) {
        return (0, 0);
    }
    (
        cc.stale_while_revalidate().ok().flatten().unwrap_or(0),
        cc.stale_if_error()
            .ok()
            .flatten()
            .unwrap_or(default_stale_if_error),
    )
}

/// True when a stored response may not be served stale at all (must/proxy-revalidate,
/// s-maxage's implied proxy-revalidate, no-cache), by the directives that govern it.
pub fn must_revalidate(response: &ResponseHeader, targeted_field: &HeaderName) -> bool {
    control(&response.headers, targeted_field)
        .cc
        .is_some_and(|cc| forbids_stale(&cc))
}

fn forbids_stale(cc: &CacheControl) -> bool {
    cc.must_revalidate() || cc.proxy_revalidate() || cc.no_cache() || cc.has_key("s-maxage")
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

    fn targeted() -> HeaderName {
        HeaderName::from_static(crate::config::DEFAULT_TARGETED_FIELD)
    }

    fn facts<'a>(
        method: &'a Method,
        req: &'a HeaderMap,
        rule: Option<&'a CacheRule>,
        targeted_field: &'a HeaderName,
        now: SystemTime,
    ) -> StoreFacts<'a> {
        StoreFacts {
            method,
            request_headers: req,
            rule,
            targeted_field,
            default_stale_if_error: 0,
            now,
            response_delay: Duration::ZERO,
        }
    }

    fn store(
        resp: &ResponseHeader,
        req: &HeaderMap,
        rule: Option<&CacheRule>,
    ) -> Result<Freshness, &'static str> {
        let field = targeted();
        storable(
            &facts(&Method::GET, req, rule, &field, SystemTime::now()),
            resp,
        )
        .map_err(NotStored::as_str)
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
        let (field, req) = (targeted(), request(&[]));
        let stored = storable(
            &facts(&Method::GET, &req, None, &field, now),
            &response(200, &[("date", &date), ("expires", &expires)]),
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
        let (field, req) = (targeted(), request(&[]));
        assert_eq!(
            storable(
                &facts(&Method::POST, &req, None, &field, SystemTime::now()),
                &response(200, &fresh),
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
    fn age_is_the_first_member_of_the_first_line_when_it_is_a_non_negative_integer() {
        let age = |values: &[&str]| {
            let headers: Vec<(&str, &str)> = values.iter().map(|v| ("age", *v)).collect();
            age_value(&response(200, &headers).headers)
        };
        assert_eq!(age(&["30"]), Some(30));
        assert_eq!(age(&[" 30 "]), Some(30));
        assert_eq!(age(&["30, 60"]), Some(30));
        assert_eq!(age(&["30", "60"]), Some(30));
        for invalid in ["-5", "1.5", "abc", "", "0x10", "+3"] {
            assert_eq!(age(&[invalid]), None, "{invalid:?}");
        }
        assert_eq!(age(&["2147483647"]), Some(2_147_483_647));
        assert_eq!(age(&["2147483649"]), Some(AGE_CAP_SECS));
        assert_eq!(
            age(&["99999999999999999999999999999999"]),
            Some(AGE_CAP_SECS)
        );
    }

    #[test]
    fn a_huge_age_makes_the_response_stale_not_fresh_forever() {
        let stored = store(
            &response(
                200,
                &[
                    ("cache-control", "max-age=3600"),
                    ("age", "99999999999999999999"),
                ],
            ),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!(stored.initial_age, Duration::from_secs(AGE_CAP_SECS));
        assert!(stored.initial_age > stored.lifetime);
    }

    #[test]
    fn the_response_delay_is_added_to_the_age_the_origin_states() {
        let (field, req) = (targeted(), request(&[]));
        let mut facts = facts(&Method::GET, &req, None, &field, SystemTime::now());
        facts.response_delay = Duration::from_secs(2);
        let stored = storable(
            &facts,
            &response(200, &[("cache-control", "max-age=60"), ("age", "10")]),
        )
        .unwrap();
        assert_eq!(stored.initial_age, Duration::from_secs(12));
    }

    #[test]
    fn expires_is_read_in_every_http_date_form_and_an_invalid_one_means_expired() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let lifetime = |expires: &str| {
            let (field, req) = (targeted(), request(&[]));
            storable(
                &facts(&Method::GET, &req, None, &field, now),
                &response(
                    200,
                    &[
                        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                        ("expires", expires),
                    ],
                ),
            )
            .map(|f| f.lifetime.as_secs())
            .ok()
        };
        assert_eq!(lifetime("Sun, 06 Nov 1994 08:50:37 GMT"), Some(60));
        assert_eq!(lifetime("sunday, 06-nov-94 08:50:37 gmt"), Some(60));
        assert_eq!(lifetime("Sun Nov  6 08:50:37 1994"), Some(60));
        assert_eq!(lifetime("tomorrow"), Some(0));
    }

    #[test]
    fn a_valid_targeted_field_governs_storing_and_freshness_instead_of_cache_control() {
        let stored = store(
            &response(
                200,
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=100"),
                ],
            ),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!(stored.lifetime, Duration::from_secs(100));
        let configured_first = store(
            &response(
                200,
                &[
                    ("cdn-cache-control", "max-age=100"),
                    ("parapet-cache-control", "max-age=7"),
                ],
            ),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!(configured_first.lifetime, Duration::from_secs(7));
        assert_eq!(
            store(
                &response(
                    200,
                    &[
                        ("cache-control", "max-age=100"),
                        ("cdn-cache-control", "no-store")
                    ]
                ),
                &request(&[]),
                None
            )
            .err(),
            Some("no-store")
        );
        // A targeted field makes Expires irrelevant too.
        let date = httpdate::fmt_http_date(SystemTime::now());
        let no_freshness = store(
            &response(
                200,
                &[
                    ("date", &date),
                    ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                    ("cdn-cache-control", "public"),
                ],
            ),
            &request(&[]),
            None,
        );
        assert_eq!(no_freshness.err(), Some("no-freshness"));
    }

    #[test]
    fn an_invalid_targeted_field_is_ignored_as_a_whole() {
        for invalid in [
            "max-age = 100",
            "max-age=100,,",
            "max-age=1.2.3",
            "\"",
            "",
            "max-age=\"100\"",
            "max-age=-1",
            "s-maxage=1.5",
            "public, stale-if-error=\"60\"",
        ] {
            let stored = store(
                &response(
                    200,
                    &[
                        ("cache-control", "max-age=5"),
                        ("cdn-cache-control", invalid),
                    ],
                ),
                &request(&[]),
                None,
            )
            .unwrap_or_else(|e| panic!("{invalid:?}: {e}"));
            assert_eq!(stored.lifetime, Duration::from_secs(5), "{invalid:?}");
        }
    }

    #[test]
    fn must_understand_stores_a_known_status_despite_no_store_and_refuses_an_unknown_one() {
        let cc = [("cache-control", "max-age=60, must-understand, no-store")];
        assert!(store(&response(200, &cc), &request(&[]), None).is_ok());
        assert_eq!(
            store(&response(299, &cc), &request(&[]), None).err(),
            Some("must-understand")
        );
        assert_eq!(
            store(
                &response(200, &[("cache-control", "max-age=60, no-store")]),
                &request(&[]),
                None
            )
            .err(),
            Some("no-store")
        );
    }

    #[test]
    fn s_maxage_closes_the_stale_windows_like_proxy_revalidate() {
        let stored = store(
            &response(
                200,
                &[(
                    "cache-control",
                    "s-maxage=1, stale-if-error=60, stale-while-revalidate=60",
                )],
            ),
            &request(&[]),
            None,
        )
        .unwrap();
        assert_eq!(
            (stored.stale_while_revalidate, stored.stale_if_error),
            (0, 0)
        );
        assert!(must_revalidate(
            &response(200, &[("cache-control", "s-maxage=1")]),
            &targeted()
        ));
        assert!(!must_revalidate(
            &response(200, &[("cache-control", "max-age=1")]),
            &targeted()
        ));
    }

    #[test]
    fn a_206_is_stored_only_as_one_byte_range_of_a_known_length() {
        let fresh = ("cache-control", "max-age=60");
        assert!(store(
            &response(206, &[fresh, ("content-range", "bytes 4-9/10")]),
            &request(&[]),
            None
        )
        .is_ok());
        for range in [
            "bytes 4-9/*",
            "bytes 9-4/10",
            "bytes 4-10/10",
            "items 0-1/2",
            "bytes */10",
        ] {
            assert_eq!(
                store(
                    &response(206, &[fresh, ("content-range", range)]),
                    &request(&[]),
                    None
                )
                .err(),
                Some("status"),
                "{range}"
            );
        }
        assert_eq!(
            store(&response(206, &[fresh]), &request(&[]), None).err(),
            Some("status")
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
