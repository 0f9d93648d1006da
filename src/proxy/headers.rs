//! Header rewrites between client and upstream: forwarding headers (`X-Forwarded-For`,
//! `X-Forwarded-Proto`, `Forwarded`, `Via`), removal of hop-by-hop headers (RFC 9110 §7.6.1),
//! the origin-form target and `Host` upstream, and what Parapet adds to responses (`Via`,
//! `X-Request-Id`, `Alt-Svc`).

use crate::fields::CONNECTION_SPECIFIC;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE, VIA,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType};
use std::net::IpAddr;

/// Hop-by-hop fields besides the connection-specific ones. `Expect` is met by Parapet itself
/// (`expect`), as nginx does, so the upstream must not answer it a second time.
static HOP_BY_HOP_EXTRA: [HeaderName; 3] = [TE, TRAILER, EXPECT];

/// True when the request asks to switch protocols (e.g. WebSocket), which must keep its
/// `Connection: upgrade` and `Upgrade` headers to work through the proxy.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Names of the hop-by-hop headers present: the fixed list plus those the `Connection` header
/// names. `keep_upgrade` spares `Connection`/`Upgrade` for a protocol switch.
///
/// Runs on every request and response: one pass over the names present, with no lookup or
/// allocation when there is nothing to drop (the usual case).
pub fn hop_by_hop_names(headers: &HeaderMap, keep_upgrade: bool) -> Vec<HeaderName> {
    let mut names = Vec::new();
    let mut has_connection = false;
    for name in headers.keys() {
        if *name == CONNECTION {
            has_connection = true;
        }
        if is_fixed_hop_by_hop(name, keep_upgrade) {
            names.push(name.clone());
        }
    }
    if !has_connection {
        return names;
    }
    for token in connection_tokens(headers) {
        if keep_upgrade && token.eq_ignore_ascii_case("upgrade") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            if headers.contains_key(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The connection-specific fields and `TE`/`Trailer`, except `Transfer-Encoding` (Pingora owns
/// the framing of both sides) and, for a protocol switch, `Connection`/`Upgrade`.
fn is_fixed_hop_by_hop(name: &HeaderName, keep_upgrade: bool) -> bool {
    if *name == TRANSFER_ENCODING {
        return false;
    }
    if keep_upgrade && (*name == CONNECTION || *name == UPGRADE) {
        return false;
    }
    CONNECTION_SPECIFIC.contains(name) || HOP_BY_HOP_EXTRA.contains(name)
}

/// What the upstream should learn about the client's request.
pub struct ForwardedFor<'a> {
    pub client_ip: Option<IpAddr>,
    /// "http" or "https".
    pub scheme: &'a str,
    /// The Host (or :authority) the client asked for.
    pub host: Option<&'a str>,
    /// The `Host` to send when the client named none (HTTP/1.0): the upstream's.
    pub default_host: Option<&'a HeaderValue>,
    pub version: http::Version,
}

/// A header Parapet writes, with the spelling it gets on HTTP/1 (Pingora keeps the client's
/// spelling of the others), so inserting it neither parses nor copies its name.
pub type OurHeader = (HeaderName, &'static str);

const X_FORWARDED_FOR: OurHeader = (
    HeaderName::from_static("x-forwarded-for"),
    "X-Forwarded-For",
);
const X_FORWARDED_PROTO: OurHeader = (
    HeaderName::from_static("x-forwarded-proto"),
    "X-Forwarded-Proto",
);
const FORWARDED: OurHeader = (HeaderName::from_static("forwarded"), "Forwarded");
const VIA_HEADER: OurHeader = (VIA, "Via");
pub const X_REQUEST_ID: OurHeader = crate::fields::X_REQUEST_ID;

/// Appends to the forwarding headers, nginx's `$proxy_add_x_forwarded_for` style: earlier
/// hops' values are kept and ours is added at the end. Static values where nothing came
/// before, one buffer per value otherwise.
pub fn forwarding_headers(
    headers: &HeaderMap,
    info: &ForwardedFor<'_>,
) -> Vec<(OurHeader, HeaderValue)> {
    let mut out = Vec::with_capacity(4);
    if let Some(ip) = info.client_ip {
        let mut value = earlier_values(headers, &X_FORWARDED_FOR.0, 16);
        push_ip(&mut value, ip);
        out.push((X_FORWARDED_FOR, header_value(value)));
    }
    let proto = if info.scheme == "https" {
        "https"
    } else {
        "http"
    };
    out.push((X_FORWARDED_PROTO, HeaderValue::from_static(proto)));
    let mut forwarded = earlier_values(headers, &FORWARDED.0, 48);
    push_forwarded_element(&mut forwarded, info);
    out.push((FORWARDED, header_value(forwarded)));
    out.push((VIA_HEADER, via_value(headers, info.version)));
    out
}

/// The `Via` value a message gets from us: ours alone (static) or appended to earlier hops'.
fn via_value(headers: &HeaderMap, version: http::Version) -> HeaderValue {
    let ours = via_ours(version);
    if !headers.contains_key(VIA) {
        return HeaderValue::from_static(ours);
    }
    let mut value = earlier_values(headers, &VIA, ours.len());
    value.push_str(ours);
    header_value(value)
}

/// Our own `Via` entry: "1.1 parapet", "2 parapet"…
fn via_ours(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9 parapet",
        http::Version::HTTP_10 => "1.0 parapet",
        http::Version::HTTP_2 => "2 parapet",
        http::Version::HTTP_3 => "3 parapet",
        _ => "1.1 parapet",
    }
}

/// The request as the upstream gets it: hop-by-hop headers dropped, forwarding headers and the
/// request id added, `Host` from `:authority` for HTTP/2 and HTTP/3 clients, and an
/// origin-form target (RFC 9112 §3.2.1).
pub fn rewrite_request(
    request: &mut RequestHeader,
    info: &ForwardedFor<'_>,
    request_id: &str,
) -> pingora::Result<()> {
    let keep_upgrade = is_upgrade_request(&request.headers);
    for name in hop_by_hop_names(&request.headers, keep_upgrade) {
        request.remove_header(&name);
    }
    // X-Forwarded-For, X-Forwarded-Proto, Forwarded, Via, X-Request-Id, Host.
    request.reserve(6);
    for (name, value) in forwarding_headers(&request.headers, info) {
        request.insert_header(name, value)?;
    }
    request.insert_header(X_REQUEST_ID, request_id_value(request_id))?;
    if !request.headers.contains_key(http::header::HOST) {
        // An HTTP/2 or HTTP/3 client's :authority, else (HTTP/1.0 without Host) the
        // upstream's host: HTTP/1.1 requires one (RFC 9112 §3.2).
        if let Some(host) = info.host {
            request.insert_header(http::header::HOST, host)?;
        } else if let Some(host) = info.default_host {
            request.insert_header(http::header::HOST, host.clone())?;
        }
    }
    // HTTP/2 and HTTP/3 requests carry the authority in the URI; an HTTP/1 absolute-form one
    // in its raw target (its authority is already the Host, RFC 9112 §3.2.2).
    let absolute_form = !matches!(request.raw_path().first(), Some(b'/' | b'*'));
    if request.uri.authority().is_some() || absolute_form {
        let origin_form = request
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        request.set_uri(
            origin_form
                .parse()
                .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad request target"))?,
        );
    }
    Ok(())
}

/// The upstream's response header as it arrives, before the cache stores it: hop-by-hop
/// headers dropped (kept for a protocol switch; RFC 9110 §7.6.1, RFC 9111 §3.1). An interim
/// response gets `Via` here, since [`add_via`] sees only final ones.
pub fn rewrite_response(response: &mut ResponseHeader) -> pingora::Result<()> {
    let switching = response.status == http::StatusCode::SWITCHING_PROTOCOLS;
    for name in hop_by_hop_names(&response.headers, switching) {
        response.remove_header(&name);
    }
    if response.status.is_informational() {
        add_via(response)?;
    } else {
        // Via, X-Request-Id, Alt-Svc, Cache-Status, added on the way out.
        response.reserve(4);
    }
    Ok(())
}

/// `Via` on a final response to the client, proxied or served from the cache (RFC 9110
/// §7.6.3): appended to the hops the origin's response already passed. Never stored, so a
/// hit gets it once.
pub fn add_via(response: &mut ResponseHeader) -> pingora::Result<()> {
    let via = via_value(&response.headers, response.version);
    response.insert_header(VIA_HEADER, via)?;
    Ok(())
}

/// The request id on every proxied or cached response.
pub fn add_request_id(response: &mut ResponseHeader, request_id: &str) -> pingora::Result<()> {
    if !request_id.is_empty() {
        response.insert_header(X_REQUEST_ID, request_id_value(request_id))?;
    }
    Ok(())
}

/// A request id as a header value. Marked sensitive so HPACK/QPACK encoders send it as a
/// never-indexed literal: a value that differs on every response would otherwise be inserted
/// into the connection's dynamic table and evict the fields that do repeat.
fn request_id_value(request_id: &str) -> HeaderValue {
    let mut value =
        HeaderValue::from_str(request_id).unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// `Alt-Svc`, where the door offers HTTP/3 to a client not on it yet.
pub fn add_alt_svc(
    response: &mut ResponseHeader,
    alt_svc: Option<&HeaderValue>,
) -> pingora::Result<()> {
    if let Some(alt_svc) = alt_svc {
        response.insert_header(http::header::ALT_SVC, alt_svc.clone())?;
    }
    Ok(())
}

/// Earlier hops' non-empty values of a list header, joined by ", " and followed by ", " when
/// there are any, in a buffer with `ours` more bytes of room.
fn earlier_values(headers: &HeaderMap, name: &HeaderName, ours: usize) -> String {
    let mut joined = String::new();
    let earlier = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    for value in earlier {
        if joined.is_empty() {
            joined.reserve(value.len() + 2 + ours);
        }
        joined.push_str(value);
        joined.push_str(", ");
    }
    if joined.is_empty() {
        joined.reserve(ours);
    }
    joined
}

/// A value built from valid pieces (header values, IP addresses, our own tokens).
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn push_ip(out: &mut String, ip: IpAddr) {
    use std::fmt::Write;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, *octet);
            }
        }
        // Display cannot fail on a String.
        IpAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
}

fn push_decimal(out: &mut String, n: u8) {
    if n >= 100 {
        out.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        out.push(char::from(b'0' + (n / 10) % 10));
    }
    out.push(char::from(b'0' + n % 10));
}

/// One `Forwarded` element (RFC 7239): `for=...;host=...;proto=...`, quoting where needed.
fn push_forwarded_element(out: &mut String, info: &ForwardedFor<'_>) {
    out.push_str("for=");
    match info.client_ip {
        Some(IpAddr::V6(ip)) => {
            out.push_str("\"[");
            push_ip(out, IpAddr::V6(ip));
            out.push_str("]\"");
        }
        Some(ip) => push_ip(out, ip),
        None => out.push_str("unknown"),
    }
    if let Some(host) = info.host.filter(|h| is_visible_ascii(h)) {
        if host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~".contains(&c))
        {
            out.push_str(";host=");
            out.push_str(host);
        } else {
            out.push_str(";host=\"");
            out.extend(host.chars().filter(|c| !matches!(c, '"' | '\\')));
            out.push('"');
        }
    }
    out.push_str(";proto=");
    out.push_str(info.scheme);
}

/// What a header value may hold (RFC 9110 §5.5, without obs-text): visible ASCII, spaces, tabs.
fn is_visible_ascii(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_includes_headers_named_in_connection() {
        let map = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        let mut names: Vec<String> = hop_by_hop_names(&map, false)
            .iter()
            .map(|n| n.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["connection", "keep-alive", "te", "x-secret"]);
    }

    #[test]
    fn websocket_upgrades_keep_their_upgrade_headers() {
        let map = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&map));
        assert!(hop_by_hop_names(&map, true).is_empty());
    }

    #[test]
    fn forwarding_headers_append_to_earlier_hops() {
        let map = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        let info = ForwardedFor {
            client_ip: Some("127.0.0.1".parse().unwrap()),
            scheme: "http",
            host: Some("api.example.com:8080"),
            default_host: None,
            version: http::Version::HTTP_11,
        };
        let out = forwarding_headers(&map, &info);
        let get = |name: &str| {
            out.iter()
                .find(|((n, _), _)| n == name)
                .map(|(_, v)| v.to_str().unwrap())
        };
        assert_eq!(get("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
        assert_eq!(get("x-forwarded-proto"), Some("http"));
        assert_eq!(
            get("forwarded"),
            Some("for=203.0.113.7, for=127.0.0.1;host=\"api.example.com:8080\";proto=http")
        );
        assert_eq!(get("via"), Some("1.1 parapet"));
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let info = ForwardedFor {
            client_ip: Some("::1".parse().unwrap()),
            scheme: "http",
            host: None,
            default_host: None,
            version: http::Version::HTTP_2,
        };
        let out = forwarding_headers(&HeaderMap::new(), &info);
        assert!(out
            .iter()
            .any(|((n, _), v)| n == "forwarded" && v == "for=\"[::1]\";proto=http"));
        assert!(out.iter().any(|((n, _), v)| n == "via" && v == "2 parapet"));
    }
}
