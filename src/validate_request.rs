//! The request validator every door uses (HTTP/1.1, h2, h2c and HTTP/3): the rules RFC 9110,
//! 9112, 9113 and 9114 set for a request before it may reach a backend, as pure functions over
//! the parsed header, each failure a [`Violation`] that `refusal` turns into a status.
//!
//! What the parsers already guarantee is not checked twice: httparse gives HTTP/1 field names
//! that are tokens, values without CR, LF or NUL and without surrounding whitespace, and refuses
//! obs-fold; Pingora's HTTP/1 reader checks `Content-Length` and `Transfer-Encoding` (RFC 9112
//! §6) and puts an absolute-form target's authority into `Host` (§3.2.2, the vendored
//! `adopt_target_authority`); the `http` crate keeps every field value free of control bytes.
//! Left here: the target's form and bytes, the one `Host` or `:authority`, and for HTTP/2 and
//! HTTP/3 the field rules of RFC 9113 §8.2 and RFC 9114 §4.2 (no connection-specific fields, no
//! whitespace around a value).

use crate::fields::CONNECTION_SPECIFIC;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::{raw_target_authority, RawTargetAuthority};

/// Why a request is refused before it reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The request-target is longer than `max_request_line_size` (414).
    TargetTooLong,
    EmptyTarget,
    TargetByte,
    /// Not origin-form, an http(s) absolute-form, `*` for OPTIONS or authority-form for CONNECT.
    TargetForm,
    MissingHost,
    DuplicateHost,
    InvalidHost,
    ConnectionSpecificField,
    TeOtherThanTrailers,
    FieldValueWhitespace,
    InvalidContentLength,
    ConflictingContentLength,
    /// A `..` segment of the path would leave the root (`/../x`).
    PathAboveRoot,
    /// A `%` in the path not followed by two hex digits.
    PathPercentEncoding,
}

impl Violation {
    /// What is wrong, in the words of the refusal's body.
    pub fn message(self) -> &'static str {
        match self {
            Violation::TargetTooLong => "the request target is longer than this server accepts",
            Violation::EmptyTarget => "the request target is empty",
            Violation::TargetByte => "the request target holds a space or a control byte",
            Violation::TargetForm => "the request target is in a form this method cannot use",
            Violation::MissingHost => "the request has no Host header",
            Violation::DuplicateHost => "the request has more than one Host header",
            Violation::InvalidHost => "the Host header is not a valid host[:port]",
            Violation::ConnectionSpecificField => {
                "an HTTP/2 or HTTP/3 request carries a connection-specific field"
            }
            Violation::TeOtherThanTrailers => {
                "an HTTP/2 or HTTP/3 request carries TE other than \"trailers\""
            }
            Violation::FieldValueWhitespace => "a field value starts or ends with whitespace",
            Violation::InvalidContentLength => "Content-Length is not a number",
            Violation::ConflictingContentLength => "Content-Length values disagree",
            Violation::PathAboveRoot => "the request path climbs above the root",
            Violation::PathPercentEncoding => "the request path holds an invalid percent-encoding",
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Violation {}

/// Checks a request as it arrived at the proxy: its target against `max_target_bytes`, its
/// authority, and for HTTP/2 its fields (HTTP/3 fields are checked by the QUIC door with
/// [`check_h2_h3_fields`] before the request exists; HTTP/1 fields by the parser).
pub fn check(req: &RequestHeader, max_target_bytes: usize) -> Result<(), Violation> {
    if req.version == Version::HTTP_2 {
        check_h2_h3_fields(&req.headers)?;
    }
    check_target(&req.method, req.raw_path(), max_target_bytes)?;
    check_authority(req)
}

/// RFC 9112 §3.2: origin-form for every method, absolute-form with an http(s) authority,
/// asterisk-form for OPTIONS only, authority-form for CONNECT only; no space or control byte
/// (RFC 9112 §3: the request line is split on single spaces); at most `max_bytes` long.
pub fn check_target(method: &Method, target: &[u8], max_bytes: usize) -> Result<(), Violation> {
    if target.len() > max_bytes {
        return Err(Violation::TargetTooLong);
    }
    if target.iter().any(|b| *b == b' ' || b.is_ascii_control()) {
        return Err(Violation::TargetByte);
    }
    let form_ok = match target.first() {
        None => return Err(Violation::EmptyTarget),
        _ if *method == Method::CONNECT => is_authority(target),
        Some(b'/') => true,
        _ if target == b"*" => *method == Method::OPTIONS,
        _ => is_http_absolute_form(target),
    };
    form_ok.then_some(()).ok_or(Violation::TargetForm)
}

/// An absolute-form target whose scheme is http or https and whose authority is usable.
fn is_http_absolute_form(target: &[u8]) -> bool {
    match raw_target_authority(target) {
        RawTargetAuthority::Absolute {
            scheme, authority, ..
        } => {
            (scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https"))
                && is_authority(authority)
        }
        _ => false,
    }
}

/// RFC 9112 §3.2 and RFC 9113 §8.3.1: one `Host` (HTTP/1.0 may have none), or for HTTP/2 and
/// HTTP/3 the `:authority`, and whichever is used a valid `host[:port]`.
fn check_authority(req: &RequestHeader) -> Result<(), Violation> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    let (host, another) = (hosts.next(), hosts.next());
    if another.is_some() {
        return Err(Violation::DuplicateHost);
    }
    let authority = host
        .map(HeaderValue::as_bytes)
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
    match authority {
        Some(authority) if is_authority(authority) => Ok(()),
        Some(_) => Err(Violation::InvalidHost),
        None if req.version == Version::HTTP_10 || req.version == Version::HTTP_09 => Ok(()),
        None => Err(Violation::MissingHost),
    }
}

/// `host [ ":" port ]` of RFC 3986 §3.2.2 without userinfo: a non-empty reg-name or IPv4
/// address, or an IPv6 literal in brackets, then at most five digits of port up to 65535.
pub fn is_authority(text: &[u8]) -> bool {
    let (host, port) = match text.first() {
        Some(b'[') => match text.iter().position(|b| *b == b']') {
            Some(end) => (&text[..=end], &text[end + 1..]),
            None => return false,
        },
        _ => match text.iter().rposition(|b| *b == b':') {
            Some(colon) => (&text[..colon], &text[colon..]),
            None => (text, &text[text.len()..]),
        },
    };
    is_host(host) && is_port_suffix(port)
}

fn is_host(host: &[u8]) -> bool {
    match host {
        [] => false,
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner.contains(&b':')
                && inner
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }
        _ => is_reg_name(host),
    }
}

/// RFC 3986 reg-name: unreserved, pct-encoded and sub-delims.
fn is_reg_name(name: &[u8]) -> bool {
    let mut rest = name;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = match byte {
            b'%' => match tail {
                [a, b, tail @ ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => tail,
                _ => return false,
            },
            b if b.is_ascii_alphanumeric() => tail,
            b'-' | b'.' | b'_' | b'~' => tail,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => tail,
            _ => return false,
        };
    }
    true
}

/// Empty, or `:` and one to five digits no greater than 65535.
fn is_port_suffix(port: &[u8]) -> bool {
    match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u32>().ok())
                    .is_some_and(|n| n <= u32::from(u16::MAX))
        }
        _ => false,
    }
}

/// The field rules HTTP/2 and HTTP/3 add (RFC 9113 §8.2.1-8.2.2, RFC 9114 §4.2): no
/// connection-specific field, `TE` only as "trailers", and no whitespace at either end of a
/// value (which HTTP/1 parsers strip, so an HTTP/1 hop would change the message).
pub fn check_h2_h3_fields(headers: &HeaderMap) -> Result<(), Violation> {
    if CONNECTION_SPECIFIC
        .iter()
        .any(|name: &HeaderName| headers.contains_key(name))
    {
        return Err(Violation::ConnectionSpecificField);
    }
    if headers
        .get_all(header::TE)
        .iter()
        .any(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        return Err(Violation::TeOtherThanTrailers);
    }
    let padded = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        [bytes.first(), bytes.last()]
            .into_iter()
            .flatten()
            .any(|b| *b == b' ' || *b == b'\t')
    };
    if headers.values().any(padded) {
        return Err(Violation::FieldValueWhitespace);
    }
    Ok(())
}

/// The declared body length (RFC 9110 §8.6): every `Content-Length` value is digits, and
/// several values (lines or list members) must agree.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Violation> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| Violation::InvalidContentLength)?;
        for token in text.split(',').map(str::trim) {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Violation::InvalidContentLength);
            }
            let n: u64 = token.parse().map_err(|_| Violation::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Violation::ConflictingContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64;

    fn request(
        method: &str,
        target: &[u8],
        version: Version,
        headers: &[(&str, &[u8])],
    ) -> RequestHeader {
        let mut req = RequestHeader::build(method, target, None).expect("request");
        req.set_version(version);
        for (name, value) in headers {
            req.append_header(
                name.to_string(),
                HeaderValue::from_bytes(value).expect("value"),
            )
            .expect("header");
        }
        req
    }

    #[test]
    fn request_targets_follow_rfc_9112_section_3_2() {
        use Violation::*;
        let table: [(&str, &[u8], Result<(), Violation>); 16] = [
            ("GET", b"/", Ok(())),
            ("GET", b"/a/b?c=d&e", Ok(())),
            ("GET", b"http://example.com/x", Ok(())),
            ("GET", b"HTTPS://example.com:8443", Ok(())),
            ("OPTIONS", b"*", Ok(())),
            ("CONNECT", b"example.com:443", Ok(())),
            ("GET", b"*", Err(TargetForm)),
            ("GET", b"example.com:443", Err(TargetForm)),
            ("GET", b"ftp://example.com/x", Err(TargetForm)),
            ("GET", b"http:///x", Err(TargetForm)),
            ("GET", b"http://a b/x", Err(TargetByte)),
            ("GET", b"relative/path", Err(TargetForm)),
            ("GET", b"/a b", Err(TargetByte)),
            ("GET", b"/a\tb", Err(TargetByte)),
            ("GET", b"/a\x7fb", Err(TargetByte)),
            ("GET", b"", Err(EmptyTarget)),
        ];
        for (method, target, expected) in table {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(
                check_target(&method, target, LIMIT),
                expected,
                "{method} {}",
                target.escape_ascii()
            );
        }
    }

    #[test]
    fn a_target_past_the_limit_is_too_long_and_one_at_it_is_not() {
        let at_limit = format!("/{}", "a".repeat(LIMIT - 1));
        assert_eq!(
            check_target(&Method::GET, at_limit.as_bytes(), LIMIT),
            Ok(())
        );
        let over = format!("{at_limit}a");
        assert_eq!(
            check_target(&Method::GET, over.as_bytes(), LIMIT),
            Err(Violation::TargetTooLong)
        );
    }

    #[test]
    fn authorities_are_host_and_optional_port() {
        let table: [(&[u8], bool); 22] = [
            (b"example.com", true),
            (b"example.com:8080", true),
            (b"EXAMPLE.com:0", true),
            (b"127.0.0.1:65535", true),
            (b"[::1]", true),
            (b"[::1]:8443", true),
            (b"[2001:db8::7]:1", true),
            (b"xn--bcher-kva.example", true),
            (b"a%2Db.example", true),
            (b"", false),
            (b":80", false),
            (b"a b", false),
            (b"a/b", false),
            (b"a b/c", false),
            (b"user@example.com", false),
            (b"example.com:65536", false),
            (b"example.com:123456", false),
            (b"example.com:8o", false),
            (b"example.com:", false),
            (b"[::1", false),
            (b"[]", false),
            (b"a%zz", false),
        ];
        for (text, valid) in table {
            assert_eq!(is_authority(text), valid, "{}", text.escape_ascii());
        }
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host_and_http_1_0_may_have_none() {
        use Violation::*;
        let v11 = Version::HTTP_11;
        let table: [(RequestHeader, Result<(), Violation>); 7] = [
            (request("GET", b"/", v11, &[("Host", b"a.test")]), Ok(())),
            (request("GET", b"/", v11, &[]), Err(MissingHost)),
            (
                request("GET", b"/", v11, &[("Host", b"")]),
                Err(InvalidHost),
            ),
            (
                request("GET", b"/", v11, &[("Host", b"a b/c")]),
                Err(InvalidHost),
            ),
            (
                request(
                    "GET",
                    b"/",
                    v11,
                    &[("Host", b"a.test"), ("Host", b"a.test")],
                ),
                Err(DuplicateHost),
            ),
            (request("GET", b"/", Version::HTTP_10, &[]), Ok(())),
            (
                request("GET", b"/", Version::HTTP_10, &[("Host", b"a/b")]),
                Err(InvalidHost),
            ),
        ];
        for (req, expected) in table {
            assert_eq!(check(&req, LIMIT), expected, "{:?}", req.headers);
        }
    }

    #[test]
    fn http2_takes_the_authority_and_refuses_padded_and_connection_fields() {
        use Violation::*;
        let h2 = |headers: &[(&str, &[u8])]| {
            let mut req = request("GET", b"/", Version::HTTP_2, headers);
            req.set_uri("https://a.test:8443/".parse().expect("uri"));
            check(&req, LIMIT)
        };
        assert_eq!(h2(&[]), Ok(()));
        assert_eq!(h2(&[("x-a", b" padded")]), Err(FieldValueWhitespace));
        assert_eq!(h2(&[("x-a", b"padded\t")]), Err(FieldValueWhitespace));
        assert_eq!(h2(&[("x-a", b"in ner")]), Ok(()));
        assert_eq!(h2(&[("x-a", b"")]), Ok(()));
        assert_eq!(
            h2(&[("connection", b"close")]),
            Err(ConnectionSpecificField)
        );
        assert_eq!(h2(&[("keep-alive", b"1")]), Err(ConnectionSpecificField));
        assert_eq!(h2(&[("te", b"trailers")]), Ok(()));
        assert_eq!(h2(&[("te", b"gzip")]), Err(TeOtherThanTrailers));
        let mut no_authority = request("GET", b"/", Version::HTTP_2, &[]);
        no_authority.set_uri("/".parse().expect("uri"));
        assert_eq!(check(&no_authority, LIMIT), Err(MissingHost));
    }

    #[test]
    fn http1_fields_are_left_to_the_parser() {
        let req = request(
            "GET",
            b"/",
            Version::HTTP_11,
            &[("Host", b"a.test"), ("Connection", b"close")],
        );
        assert_eq!(check(&req, LIMIT), Ok(()));
    }

    #[test]
    fn content_length_values_are_digits_and_agree() {
        use Violation::*;
        type Case = (&'static [&'static str], Result<Option<u64>, Violation>);
        let table: [Case; 7] = [
            (&[], Ok(None)),
            (&["12"], Ok(Some(12))),
            (&["7, 7"], Ok(Some(7))),
            (&["7", "7"], Ok(Some(7))),
            (&["12", "13"], Err(ConflictingContentLength)),
            (&["-1"], Err(InvalidContentLength)),
            (&["1,"], Err(InvalidContentLength)),
        ];
        for (values, expected) in table {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::CONTENT_LENGTH, value.parse().expect("value"));
            }
            assert_eq!(content_length(&headers), expected, "{values:?}");
        }
    }
}
