//! Request size limits: `max_request_header_size` (431) and `max_request_body_size` (413).

use crate::config::ServerSettings;
use crate::refusal::Refusal;
use pingora::http::RequestHeader;

/// Bytes a request line and header block take on the wire (approximately, for HTTP/2 too).
fn request_head_size(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + target_length(&req.uri) + 12;
    req.headers.iter().fold(line, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}

/// The request target's length as written (absolute form counts scheme and authority).
fn target_length(uri: &http::Uri) -> usize {
    let path = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    scheme + authority + path
}

/// The request head against `max_request_header_size`, and a declared body against
/// `max_request_body_size` (a body without a declared length is counted as it streams).
pub fn check_head(req: &RequestHeader, settings: &ServerSettings) -> Result<(), Refusal> {
    if request_head_size(req) > settings.max_request_header_size {
        return Err(Refusal::HeaderTooLarge);
    }
    match crate::fields::content_length(&req.headers) {
        Some(length) if length > settings.max_request_body_size => Err(Refusal::BodyTooLarge),
        _ => Ok(()),
    }
}

/// The body received so far against `max_request_body_size`.
pub fn check_body(received: u64, settings: &ServerSettings) -> Result<(), Refusal> {
    if received > settings.max_request_body_size {
        return Err(Refusal::BodyTooLarge);
    }
    Ok(())
}
