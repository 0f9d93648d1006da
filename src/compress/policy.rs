//! Which responses are compressed, decoded or left alone, and the header edits that go with
//! each (RFC 9110 §8.4 Content-Encoding, §8.8.3 ETag, §12.5.5 Vary; RFC 9111 §5.2.2.6
//! no-transform). Pure functions of the response header and the request's negotiation.

use super::negotiate::{AcceptEncoding, Algorithm, Encoding};
use super::CompressionConfig;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, VARY,
};
use pingora::http::ResponseHeader;

/// A media-type pattern of `[compression] types`: `type/subtype`, `type/*`, `type/*+suffix`
/// (structured syntax suffix, RFC 6838 §4.2.8: `application/*+json` matches
/// `application/ld+json`) or `*/*`; matched case-insensitively against the media type without
/// its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePattern {
    /// Lowercase `type/`; empty for `*/*`.
    prefix: String,
    subtype: Subtype,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subtype {
    Any,
    /// Lowercase, with its `+`.
    Suffix(String),
    /// Lowercase.
    Exact(String),
}

/// An entry of `types` that is not a media type pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a media type: use \"type/subtype\", \"type/*\", \"type/*+suffix\" or \"*/*\" (no parameters)")]
pub struct InvalidTypePattern(pub String);

impl TypePattern {
    /// Parses one entry of `types`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<TypePattern, InvalidTypePattern> {
        let lower = text.trim().to_ascii_lowercase();
        let bad = || InvalidTypePattern(text.to_string());
        let (kind, subtype) = lower.split_once('/').ok_or_else(bad)?;
        let is_token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if kind == "*" {
            return match subtype {
                "*" => Ok(TypePattern {
                    prefix: String::new(),
                    subtype: Subtype::Any,
                }),
                _ => Err(bad()),
            };
        }
        if !is_token(kind) {
            return Err(bad());
        }
        let subtype = match subtype.strip_prefix('*') {
            Some("") => Subtype::Any,
            Some(suffix) if suffix.starts_with('+') && is_token(&suffix[1..]) => {
                Subtype::Suffix(suffix.to_string())
            }
            Some(_) => return Err(bad()),
            None if is_token(subtype) => Subtype::Exact(subtype.to_string()),
            None => return Err(bad()),
        };
        Ok(TypePattern {
            prefix: format!("{kind}/"),
            subtype,
        })
    }

    /// True when `media_type` (no parameters) falls under this pattern.
    pub fn matches(&self, media_type: &str) -> bool {
        let Some(subtype) = strip_prefix_ignore_case(media_type, &self.prefix) else {
            return false;
        };
        match &self.subtype {
            Subtype::Any => true,
            Subtype::Exact(exact) => subtype.eq_ignore_ascii_case(exact),
            Subtype::Suffix(suffix) => {
                subtype.len() > suffix.len()
                    && subtype.as_bytes()[subtype.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.as_bytes().get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| &text[prefix.len()..])
}

impl std::fmt::Display for TypePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.subtype {
            Subtype::Any if self.prefix.is_empty() => f.write_str("*/*"),
            Subtype::Any => write!(f, "{}*", self.prefix),
            Subtype::Suffix(suffix) => write!(f, "{}*{suffix}", self.prefix),
            Subtype::Exact(exact) => write!(f, "{}{exact}", self.prefix),
        }
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Headers and body as the origin sent them.
    Untouched,
    /// Body untouched, but the answer depends on `Accept-Encoding`: add it to `Vary`. For a
    /// compressible body served as identity, and for an origin coding the client accepts.
    VaryOnly,
    /// Compress the identity body.
    Compress(Algorithm),
    /// Undo the origin's coding, which the client does not accept.
    Decompress(Algorithm),
}

/// Decides for a final (non-1xx) response header. `preferred` is the request's negotiated
/// coding, `accept` its parsed `Accept-Encoding`.
pub fn decide(
    resp: &ResponseHeader,
    accept: &AcceptEncoding,
    preferred: Encoding,
    config: &CompressionConfig,
) -> Action {
    let status = resp.status.as_u16();
    // 206: the range is of the origin's representation; 204/304 and 1xx have no body.
    if resp.status.is_informational() || matches!(status, 204 | 206 | 304) {
        return Action::Untouched;
    }
    if has_no_transform(&resp.headers) {
        return Action::Untouched;
    }
    match content_coding(&resp.headers) {
        Coding::Identity => {}
        Coding::One(algorithm) if accept.accepts(algorithm) => return Action::VaryOnly,
        Coding::One(algorithm) => return Action::Decompress(algorithm),
        Coding::Other => return Action::Untouched,
    }
    if !compressible(&resp.headers, config) {
        return Action::Untouched;
    }
    match preferred {
        Encoding::Identity => Action::VaryOnly,
        Encoding::Compressed(algorithm) => Action::Compress(algorithm),
    }
}

/// Rewrites the header for `action`: `Vary: Accept-Encoding` once, strong ETags weakened (the
/// bytes are no longer the origin's), `Content-Length` and `Accept-Ranges` dropped (the length
/// is unknown while streaming; ranges of the origin's bytes no longer apply), digests dropped,
/// and `Content-Encoding` set or removed.
pub fn apply(action: Action, resp: &mut ResponseHeader) -> pingora::Result<()> {
    match action {
        Action::Untouched => return Ok(()),
        Action::VaryOnly => return add_vary_accept_encoding(resp),
        Action::Compress(algorithm) => {
            // Static: no copy of the value on every compressed or derived response.
            resp.insert_header(
                CONTENT_ENCODING,
                HeaderValue::from_static(algorithm.as_str()),
            )?;
        }
        Action::Decompress(_) => {
            resp.remove_header(&CONTENT_ENCODING);
        }
    }
    add_vary_accept_encoding(resp)?;
    weaken_etag(resp)?;
    for name in [CONTENT_LENGTH, ACCEPT_RANGES] {
        resp.remove_header(&name);
    }
    // Digests of the content or representation (RFC 9530, RFC 1864) no longer match it.
    for name in DIGEST_HEADERS {
        resp.remove_header(name);
    }
    Ok(())
}

/// Repairs a stored response after the cache merged a revalidation's 304 into it (RFC 9111
/// §4.3.4 copies the 304's fields over the stored ones): the stored body is still in the stored
/// coding, so `Content-Encoding` is put back as stored; an ETag Parapet weakened (`W/"x"`
/// stored, `"x"` from the origin) stays weak; digests the stored variant did not carry are
/// dropped. A response Parapet never transformed comes out unchanged.
pub fn after_not_modified_merge(
    stored: &ResponseHeader,
    merged: &mut ResponseHeader,
) -> pingora::Result<()> {
    match stored.headers.get(CONTENT_ENCODING).cloned() {
        Some(coding) => merged.insert_header(CONTENT_ENCODING, coding)?,
        None => {
            merged.remove_header(&CONTENT_ENCODING);
        }
    }
    let weakened = match (stored.headers.get(ETAG), merged.headers.get(ETAG)) {
        (Some(kept), Some(fresh)) => {
            let fresh = fresh.as_bytes();
            !fresh.starts_with(b"W/") && kept.as_bytes().strip_prefix(b"W/") == Some(fresh)
        }
        _ => false,
    };
    if weakened {
        weaken_etag(merged)?;
    }
    for name in DIGEST_HEADERS {
        if !stored.headers.contains_key(name) {
            merged.remove_header(name);
        }
    }
    Ok(())
}

/// Fields holding a digest of the bytes a coding change alters.
const DIGEST_HEADERS: [&str; 4] = ["content-digest", "repr-digest", "digest", "content-md5"];

/// True when the request asks intermediaries not to transform the content
/// (`Cache-Control: no-transform`, RFC 9111 §5.2.1.6).
pub fn request_forbids_transform(headers: &HeaderMap) -> bool {
    has_no_transform(headers)
}

/// True when a stored response's coding is one Parapet can derive the others from (identity or
/// one coding it knows).
pub fn derivable_coding(headers: &HeaderMap) -> bool {
    content_coding(headers) != Coding::Other
}

/// The origin's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// None, or only `identity`.
    Identity,
    /// Exactly one coding Parapet knows.
    One(Algorithm),
    /// Several codings, or one Parapet does not know: passed on as is.
    Other,
}

pub(super) fn content_coding(headers: &HeaderMap) -> Coding {
    let mut found = Coding::Identity;
    for token in list_tokens(headers, &CONTENT_ENCODING) {
        let Some(token) = token else {
            return Coding::Other;
        };
        if token.eq_ignore_ascii_case("identity") {
            continue;
        }
        found = match (found, Algorithm::from_token(token)) {
            (Coding::Identity, Some(algorithm)) => Coding::One(algorithm),
            _ => return Coding::Other,
        };
    }
    found
}

/// The comma-separated elements of every line of `name`, trimmed, empty ones skipped; `None`
/// for a line that is not text.
fn list_tokens<'a>(
    headers: &'a HeaderMap,
    name: &'a http::HeaderName,
) -> impl Iterator<Item = Option<&'a str>> + 'a {
    headers.get_all(name).iter().flat_map(|value| {
        let elements: Box<dyn Iterator<Item = Option<&str>>> = match value.to_str() {
            Ok(text) => Box::new(
                text.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(Some),
            ),
            Err(_) => Box::new(std::iter::once(None)),
        };
        elements
    })
}

pub(super) fn has_no_transform(headers: &HeaderMap) -> bool {
    list_tokens(headers, &CACHE_CONTROL)
        .flatten()
        .any(|directive| {
            let name = directive.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("no-transform")
        })
}

/// A listed type, and a length of at least `min_length` when the length is known.
pub(super) fn compressible(headers: &HeaderMap, config: &CompressionConfig) -> bool {
    compressible_type(headers, config)
        && crate::fields::content_length(headers).is_none_or(|length| length >= config.min_length)
}

/// A `Content-Type` of one of the listed types.
pub(super) fn compressible_type(headers: &HeaderMap, config: &CompressionConfig) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|media_type| config.types.iter().any(|t| t.matches(media_type)))
}

/// The edits of a derived variant that a 304 carries: `Vary` and the weakened ETag.
pub(super) fn apply_validators_only(resp: &mut ResponseHeader) -> pingora::Result<()> {
    add_vary_accept_encoding(resp)?;
    weaken_etag(resp)
}

/// Adds `Accept-Encoding` to `Vary` unless it is there already or `Vary: *` says the answer
/// varies on everything; existing lines are merged into one.
pub fn add_vary_accept_encoding(resp: &mut ResponseHeader) -> pingora::Result<()> {
    const ACCEPT_ENCODING: &str = "Accept-Encoding";
    let mut merged: Vec<u8> = Vec::new();
    for value in resp.headers.get_all(VARY) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for element in text.split(',').map(str::trim) {
            if element == "*" || element.eq_ignore_ascii_case(ACCEPT_ENCODING) {
                return Ok(());
            }
        }
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            merged.extend_from_slice(value);
            merged.extend_from_slice(b", ");
        }
    }
    merged.extend_from_slice(ACCEPT_ENCODING.as_bytes());
    let value = HeaderValue::from_bytes(&merged).map_err(|_| {
        pingora::Error::explain(pingora::ErrorType::InternalError, "unusable Vary value")
    })?;
    resp.insert_header(VARY, value)
}

/// `"x"` → `W/"x"`: a transformed body is no longer byte-identical to the origin's
/// (RFC 9110 §8.8.1), but the same weak validator still serves conditional requests.
fn weaken_etag(resp: &mut ResponseHeader) -> pingora::Result<()> {
    let Some(etag) = resp.headers.get(ETAG) else {
        return Ok(());
    };
    if etag.as_bytes().starts_with(b"W/") {
        return Ok(());
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(etag.as_bytes());
    let value = HeaderValue::from_bytes(&weak).map_err(|_| {
        pingora::Error::explain(pingora::ErrorType::InternalError, "unusable ETag value")
    })?;
    resp.insert_header(ETAG, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Algorithm::{Br, Gzip};

    fn config() -> CompressionConfig {
        CompressionConfig::default()
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).expect("status");
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value)
                .expect("header");
        }
        resp
    }

    fn chrome() -> (AcceptEncoding, Encoding) {
        let accept = AcceptEncoding::parse(["gzip, deflate, br, zstd"]);
        (accept, accept.preferred(&config().algorithms))
    }

    fn decide_for(resp: &ResponseHeader, accept_encoding: Option<&str>) -> Action {
        let accept = AcceptEncoding::parse(accept_encoding);
        let config = config();
        decide(resp, &accept, accept.preferred(&config.algorithms), &config)
    }

    fn values(resp: &ResponseHeader, name: &str) -> Vec<String> {
        resp.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    const JSON_2K: &[(&str, &str)] = &[
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "2048"),
    ];

    #[test]
    fn a_listed_type_of_sufficient_length_is_compressed_with_the_negotiated_coding() {
        let resp = response(200, JSON_2K);
        assert_eq!(decide_for(&resp, Some("gzip, br")), Action::Compress(Br));
        assert_eq!(decide_for(&resp, Some("gzip")), Action::Compress(Gzip));
        assert_eq!(decide_for(&resp, None), Action::VaryOnly);
        assert_eq!(
            decide_for(&response(404, JSON_2K), Some("br")),
            Action::Compress(Br)
        );
    }

    #[test]
    fn type_length_status_and_no_transform_rules_leave_the_body_alone() {
        let cases: &[(u16, &[(&str, &str)])] = &[
            (
                200,
                &[("content-type", "image/png"), ("content-length", "5000")],
            ),
            (
                200,
                &[("content-type", "text/html"), ("content-length", "1023")],
            ),
            (200, &[("content-length", "5000")]),
            (206, JSON_2K),
            (204, &[("content-type", "text/html")]),
            (304, JSON_2K),
            (
                200,
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "public, No-Transform"),
                ],
            ),
            (
                200,
                &[
                    ("content-type", "text/html"),
                    ("content-encoding", "gzip, br"),
                ],
            ),
            (
                200,
                &[
                    ("content-type", "text/html"),
                    ("content-encoding", "deflate"),
                ],
            ),
        ];
        for (status, headers) in cases {
            let resp = response(*status, headers);
            assert_eq!(
                decide_for(&resp, Some("gzip, br")),
                Action::Untouched,
                "{status} {headers:?}"
            );
        }
    }

    #[test]
    fn an_unknown_length_is_compressed_and_types_match_by_glob_and_case() {
        let resp = response(200, &[("content-type", "TEXT/CSS")]);
        assert_eq!(decide_for(&resp, Some("br")), Action::Compress(Br));
        let svg = response(200, &[("content-type", "image/svg+xml;charset=x")]);
        assert_eq!(decide_for(&svg, Some("br")), Action::Compress(Br));
        let identity = response(
            200,
            &[
                ("content-type", "text/css"),
                ("content-encoding", "identity"),
            ],
        );
        assert_eq!(decide_for(&identity, Some("br")), Action::Compress(Br));
    }

    #[test]
    fn an_origin_coding_passes_to_clients_that_accept_it_and_is_decoded_for_others() {
        let resp = response(
            200,
            &[("content-type", "text/html"), ("content-encoding", "GZIP")],
        );
        assert_eq!(decide_for(&resp, Some("gzip, br")), Action::VaryOnly);
        assert_eq!(decide_for(&resp, Some("*")), Action::VaryOnly);
        assert_eq!(decide_for(&resp, Some("br")), Action::Decompress(Gzip));
        assert_eq!(decide_for(&resp, None), Action::Decompress(Gzip));
        assert_eq!(
            decide_for(&resp, Some("gzip;q=0, br")),
            Action::Decompress(Gzip)
        );
        // Any type, any length: the client cannot read it otherwise.
        let png = response(
            200,
            &[("content-type", "image/png"), ("content-encoding", "br")],
        );
        assert_eq!(decide_for(&png, Some("gzip")), Action::Decompress(Br));
    }

    #[test]
    fn compressing_sets_the_coding_weakens_the_etag_and_drops_the_length() {
        let mut resp = response(
            200,
            &[
                ("content-type", "text/html"),
                ("content-length", "5000"),
                ("etag", "\"abc\""),
                ("accept-ranges", "bytes"),
                ("content-digest", "sha-256=:abc=:"),
            ],
        );
        let (accept, preferred) = chrome();
        let action = decide(&resp, &accept, preferred, &config());
        apply(action, &mut resp).expect("apply");
        assert_eq!(values(&resp, "content-encoding"), ["br"]);
        assert_eq!(values(&resp, "etag"), ["W/\"abc\""]);
        assert_eq!(values(&resp, "vary"), ["Accept-Encoding"]);
        assert!(values(&resp, "content-length").is_empty());
        assert!(values(&resp, "accept-ranges").is_empty());
        assert!(values(&resp, "content-digest").is_empty());
    }

    #[test]
    fn decoding_removes_the_coding_and_keeps_weak_etags() {
        let mut resp = response(
            200,
            &[
                ("content-type", "text/html"),
                ("content-encoding", "gzip"),
                ("content-length", "300"),
                ("etag", "W/\"v1\""),
            ],
        );
        apply(Action::Decompress(Gzip), &mut resp).expect("apply");
        assert!(values(&resp, "content-encoding").is_empty());
        assert!(values(&resp, "content-length").is_empty());
        assert_eq!(values(&resp, "etag"), ["W/\"v1\""]);
    }

    #[test]
    fn vary_gets_accept_encoding_exactly_once() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &["Accept-Encoding"]),
            (&["Origin"], &["Origin, Accept-Encoding"]),
            (&["Origin", "Cookie"], &["Origin, Cookie, Accept-Encoding"]),
            (&["origin, accept-encoding"], &["origin, accept-encoding"]),
            (&["*"], &["*"]),
            (&["Origin, *"], &["Origin, *"]),
        ];
        for (before, after) in cases {
            let headers: Vec<(&str, &str)> = before.iter().map(|v| ("vary", *v)).collect();
            let mut resp = response(200, &headers);
            apply(Action::VaryOnly, &mut resp).expect("apply");
            apply(Action::VaryOnly, &mut resp).expect("apply twice");
            assert_eq!(values(&resp, "vary"), *after, "from {before:?}");
        }
    }

    #[test]
    fn a_merged_304_keeps_the_stored_coding_and_weak_etag() {
        let stored = response(
            200,
            &[
                ("content-type", "text/html"),
                ("content-encoding", "br"),
                ("etag", "W/\"v2\""),
                ("vary", "Accept-Encoding"),
            ],
        );
        let mut merged = stored.clone();
        for (name, value) in [
            ("etag", "\"v2\""),
            ("content-encoding", "gzip"),
            ("content-digest", "sha-256=:x=:"),
        ] {
            merged.insert_header(name, value).expect("header");
        }
        after_not_modified_merge(&stored, &mut merged).expect("repair");
        assert_eq!(values(&merged, "content-encoding"), ["br"]);
        assert_eq!(values(&merged, "etag"), ["W/\"v2\""]);
        assert!(values(&merged, "content-digest").is_empty());

        // Never transformed: the origin's new strong validator stands.
        let plain = response(200, &[("content-type", "text/html"), ("etag", "\"v1\"")]);
        let mut merged = plain.clone();
        merged.insert_header("etag", "\"v2\"").expect("header");
        after_not_modified_merge(&plain, &mut merged).expect("repair");
        assert_eq!(values(&merged, "etag"), ["\"v2\""]);
        assert!(values(&merged, "content-encoding").is_empty());
    }

    #[test]
    fn untouched_means_untouched() {
        let mut resp = response(206, JSON_2K);
        let before = format!("{:?}", resp.headers);
        apply(Action::Untouched, &mut resp).expect("apply");
        assert_eq!(format!("{:?}", resp.headers), before);
    }

    #[test]
    fn type_patterns_parse_and_match() {
        let text = TypePattern::parse("Text/*").expect("glob");
        assert!(text.matches("text/html"));
        assert!(text.matches("TEXT/PLAIN"));
        assert!(!text.matches("textual/x"));
        assert_eq!(text.to_string(), "text/*");
        let json = TypePattern::parse("application/json").expect("exact");
        assert!(json.matches("Application/JSON"));
        assert!(!json.matches("application/json5"));
        assert!(TypePattern::parse("*/*").expect("any").matches("a/b"));
        let suffix = TypePattern::parse("application/*+JSON").expect("suffix");
        assert!(suffix.matches("application/ld+json"));
        assert!(suffix.matches("Application/Vnd.Api+Json"));
        assert!(!suffix.matches("application/json"));
        assert!(!suffix.matches("text/x+json"));
        assert_eq!(suffix.to_string(), "application/*+json");
        for bad in [
            "json",
            "text/",
            "*/json",
            "text/html; charset=utf-8",
            "/x",
            "",
            "application/*json",
            "application/*+",
            "text/x*",
        ] {
            assert!(TypePattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
