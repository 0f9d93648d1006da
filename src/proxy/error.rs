//! Failure answers: status codes for proxy errors, request limits (413/431), short text
//! responses, and the upstream peer's timeouts.

use crate::config::ServerSettings;
use crate::upstream::Upstream;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::net::SocketAddr;
use std::time::Duration;

/// Bytes a request line and header block take on the wire (approximately, for HTTP/2 too).
fn request_head_size(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.uri.to_string().len() + 12;
    req.headers.iter().fold(line, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}

/// 431 for a request head over `max_request_header_size`, 413 for a declared body over
/// `max_request_body_size` (a chunked body is checked as it streams).
pub fn request_over_limits(req: &RequestHeader, settings: &ServerSettings) -> Option<u16> {
    if request_head_size(req) > settings.max_request_header_size {
        return Some(431);
    }
    match crate::fields::content_length(&req.headers) {
        Some(length) if length > settings.max_request_body_size => Some(413),
        _ => None,
    }
}

pub const ONLY_IF_CACHED_BODY: &[u8] =
    b"504 Gateway Timeout: only-if-cached and no usable stored response\n";

/// Sends a short plain-text response and keeps the client connection usable.
pub async fn respond_text(session: &mut Session, status: u16, body: &'static [u8]) -> Result<()> {
    let mut response = ResponseHeader::build(status, Some(3))?;
    response.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    response.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    response.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body)), true)
        .await?;
    Ok(())
}

pub fn is_timeout(e: &Error) -> bool {
    matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout)
}

/// The status a client gets for a failed request: 504 for upstream timeouts, 502 for other
/// upstream failures, 400 for a broken request, 0 (nothing to send) when the client is gone.
pub fn status_for(e: &Error) -> u16 {
    match (e.etype(), e.esource()) {
        (HTTPStatus(code), _) => *code,
        (_, ErrorSource::Upstream) if is_timeout(e) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => 0,
        (ReadTimedout | WriteTimedout, ErrorSource::Downstream) => 408,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// The peer for one try at server `index`, with the upstream's timeouts and the server's TLS
/// (SNI, optional CA, h2 when the server offers it by ALPN).
pub fn peer_for(upstream: &Upstream, index: usize, address: SocketAddr) -> HttpPeer {
    let config = &upstream.config;
    let tls = config.servers.get(index).and_then(|s| s.tls.as_ref());
    let mut peer = HttpPeer::new(
        address,
        tls.is_some(),
        tls.map(|t| t.sni.clone()).unwrap_or_default(),
    );
    if tls.is_some() {
        peer.options.alpn = pingora::protocols::ALPN::H2H1;
        peer.options.ca = upstream.trusted_ca.get(index).cloned().flatten();
    }
    peer.options.connection_timeout = Some(config.connect_timeout);
    peer.options.read_timeout = Some(config.read_timeout);
    peer.options.write_timeout = Some(config.write_timeout);
    // keepalive = 0 turns reuse off: a pooled connection with no idle time is closed at once.
    peer.options.idle_timeout = Some(if config.keepalive == 0 {
        Duration::ZERO
    } else {
        config.idle_timeout
    });
    peer
}
