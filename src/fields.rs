//! HTTP fields every layer reads the same way: the declared `Content-Length`, the `Host` a
//! request is for, and the connection-specific fields that never cross a hop.

use http::header::{
    HeaderMap, HeaderName, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE,
};

pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The request id Parapet passes upstream and back, and puts on its own answers; with its
/// HTTP/1 spelling.
pub const X_REQUEST_ID: (HeaderName, &str) =
    (HeaderName::from_static("x-request-id"), "X-Request-Id");

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1): HTTP/2 and HTTP/3
/// messages carrying them are malformed (RFC 9114 §4.2). `TE` is connection-specific too, but
/// "trailers" is allowed in it, so it is handled where it is read.
pub static CONNECTION_SPECIFIC: [HeaderName; 5] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// The body length the message declares: its first `Content-Length` field, trimmed, when it
/// is a number; `None` otherwise.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The Host a request is for: the `Host` header, or the URI's authority (HTTP/2).
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_trimmed_and_numbers_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(CONTENT_LENGTH, " 42 ".parse().unwrap());
        assert_eq!(content_length(&headers), Some(42));
        headers.insert(CONTENT_LENGTH, "-1".parse().unwrap());
        assert_eq!(content_length(&headers), None);
    }

    #[test]
    fn the_host_header_wins_over_the_authority() {
        let uri: http::Uri = "https://from-uri.test/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(request_host(&headers, &uri), Some("from-uri.test"));
        headers.insert(HOST, "from-header.test".parse().unwrap());
        assert_eq!(request_host(&headers, &uri), Some("from-header.test"));
    }
}
