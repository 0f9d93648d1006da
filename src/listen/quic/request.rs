//! An h3 request as Pingora sees it: the header converted (version HTTP/3, `Host` from
//! `:authority`, cookies joined), after the checks that make an HTTP/3 request malformed
//! (RFC 9114 §4.1.2), each with its reason. The field rules HTTP/2 and HTTP/3 share come from
//! `validate_request`, which checks the rest (target, authority) in the proxy like any door's.

use crate::validate_request::{self, Violation};
use http::header::{self, HeaderMap, HeaderValue};
use pingora::http::RequestHeader;

/// Why an h3 request is malformed; the stream is reset with H3_MESSAGE_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum MalformedRequest {
    #[error(transparent)]
    Invalid(#[from] Violation),
    #[error("Host differs from :authority")]
    HostDiffersFromAuthority,
    #[error("unusable :authority")]
    UnusableAuthority,
    #[error("neither :authority nor Host")]
    NoAuthority,
    #[error("{0}")]
    BadAuthority(String),
}

/// Turns an h3 request into the header Pingora sees: version HTTP/3, `Host` from
/// `:authority`, cookies joined.
pub(super) fn request_header(
    request: http::Request<()>,
) -> Result<RequestHeader, MalformedRequest> {
    let (mut parts, ()) = request.into_parts();
    let headers = &mut parts.headers;
    validate_request::check_h2_h3_fields(headers)?;
    validate_request::content_length(headers)?;
    join_cookies(headers);
    match (
        parts.uri.authority().map(|a| a.as_str().to_string()),
        headers.get(header::HOST),
    ) {
        (Some(authority), Some(host)) if host.as_bytes() != authority.as_bytes() => {
            return Err(MalformedRequest::HostDiffersFromAuthority);
        }
        (Some(authority), None) => {
            let value = HeaderValue::from_str(&authority)
                .map_err(|_| MalformedRequest::UnusableAuthority)?;
            headers.insert(header::HOST, value);
        }
        (None, None) => return Err(MalformedRequest::NoAuthority),
        _ => {}
    }
    parts.version = http::Version::HTTP_3;
    let header = RequestHeader::from(parts);
    pingora::protocols::http::authority::validate_request_authority(&header)
        .map_err(|e| MalformedRequest::BadAuthority(e.to_string()))?;
    Ok(header)
}

/// The declared body length, already checked by [`request_header`].
pub(super) fn validated_content_length(headers: &HeaderMap) -> Option<u64> {
    validate_request::content_length(headers).ok().flatten()
}

/// HTTP/2 and HTTP/3 may split `cookie` into several fields; HTTP/1.1 needs one (RFC 9114 §4.2.1).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        build: impl FnOnce(http::request::Builder) -> http::request::Builder,
    ) -> Result<RequestHeader, MalformedRequest> {
        request_header(
            build(http::Request::builder().uri("https://example.com:8443/p?q=1"))
                .body(())
                .expect("request"),
        )
    }

    #[test]
    fn host_comes_from_authority_and_the_version_is_h3() {
        let header = request(|b| b).expect("valid");
        assert_eq!(
            header.headers.get(header::HOST).map(|v| v.as_bytes()),
            Some(&b"example.com:8443"[..])
        );
        assert_eq!(header.version, http::Version::HTTP_3);
        assert_eq!(header.raw_path(), b"/p?q=1");
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(request(|b| b.header("connection", "keep-alive")).is_err());
        assert!(request(|b| b.header("transfer-encoding", "chunked")).is_err());
        assert!(request(|b| b.header("te", "gzip")).is_err());
        assert!(request(|b| b.header("te", "trailers")).is_ok());
        assert!(request(|b| b.header("host", "other.example")).is_err());
        assert!(request(|b| b.header("host", "example.com:8443")).is_ok());
        assert!(request(|b| b
            .header("content-length", "12")
            .header("content-length", "13"))
        .is_err());
        assert!(request(|b| b.header("content-length", "-1")).is_err());
        assert!(request(|b| b.header("content-length", "7, 7")).is_ok());
        assert_eq!(
            request(|b| b.header("x-padded", " value")).err(),
            Some(MalformedRequest::Invalid(Violation::FieldValueWhitespace))
        );
        assert!(request_header(
            http::Request::builder()
                .uri("/no-authority")
                .body(())
                .expect("request")
        )
        .is_err());
    }

    #[test]
    fn cookies_are_joined_for_http1() {
        let header = request(|b| b.header("cookie", "a=1").header("cookie", "b=2")).expect("valid");
        let cookies: Vec<_> = header.headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, [&HeaderValue::from_static("a=1; b=2")]);
    }
}
