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

/// Our pseudonym in `Via` (RFC 9110 §7.6.3).
pub const VIA_PSEUDONYM: &str = "parapet";

/// Hop-by-hop fields besides the connection-specific ones. `Expect` is met by Parapet itself
/// (`expect`), as nginx does, so the upstream must not answer it a second time.
static HOP_BY_HOP_EXTRA: [HeaderName; 3] = [TE, TRAILER, EXPECT];
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED: &str = "forwarded";

/// The protocol version as written in `Via`: "1.0", "1.1", "2" or "3".
pub fn via_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

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
/// Runs on every request and response, so it allocates nothing when there is nothing to drop.
pub fn hop_by_hop_names(headers: &HeaderMap, keep_upgrade: bool) -> Vec<HeaderName> {
    let mut names = Vec::new();
    // Pingora owns the framing (Transfer-Encoding) of both sides itself.
    let fixed = CONNECTION_SPECIFIC
        .iter()
        .filter(|name| **name != TRANSFER_ENCODING)
        .filter(|name| !(keep_upgrade && (**name == CONNECTION || **name == UPGRADE)))
        .chain(&HOP_BY_HOP_EXTRA);
    for name in fixed {
        if headers.contains_key(name) {
            names.push(name.clone());
        }
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

/// What the upstream should learn about the client's request.
pub struct ForwardedFor<'a> {
    pub client_ip: Option<IpAddr>,
    /// "http" or "https".
    pub scheme: &'a str,
    /// The Host (or :authority) the client asked for.
    pub host: Option<&'a str>,
    pub version: http::Version,
}

/// Appends to the forwarding headers, nginx's `$proxy_add_x_forwarded_for` style: earlier
/// hops' values are kept and ours is added at the end.
pub fn forwarding_headers(
    headers: &HeaderMap,
    info: &ForwardedFor<'_>,
) -> Vec<(HeaderName, String)> {
    let mut out = Vec::with_capacity(4);
    if let Some(ip) = info.client_ip {
        out.push((
            HeaderName::from_static(X_FORWARDED_FOR),
            append_list(headers, X_FORWARDED_FOR, &ip.to_string()),
        ));
    }
    out.push((
        HeaderName::from_static(X_FORWARDED_PROTO),
        info.scheme.to_string(),
    ));
    out.push((
        HeaderName::from_static(FORWARDED),
        append_list(headers, FORWARDED, &forwarded_element(info)),
    ));
    let via = format!("{} {VIA_PSEUDONYM}", via_version(info.version));
    out.push((VIA, append_list(headers, VIA.as_str(), &via)));
    out
}

/// The `Via` value a response gets on its way back to the client.
pub fn response_via(headers: &HeaderMap, upstream_version: http::Version) -> String {
    append_list(
        headers,
        VIA.as_str(),
        &format!("{} {VIA_PSEUDONYM}", via_version(upstream_version)),
    )
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
    for (name, value) in forwarding_headers(&request.headers, info) {
        request.insert_header(name, value)?;
    }
    request.insert_header(super::request_id::HEADER, request_id)?;
    if let Some(host) = info.host {
        if !request.headers.contains_key(http::header::HOST) {
            request.insert_header(http::header::HOST, host)?;
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

/// The upstream's response header on its way to the client: hop-by-hop headers dropped (kept
/// for a protocol switch), `Via` added.
pub fn rewrite_response(response: &mut ResponseHeader) -> pingora::Result<()> {
    let switching = response.status == http::StatusCode::SWITCHING_PROTOCOLS;
    for name in hop_by_hop_names(&response.headers, switching) {
        response.remove_header(&name);
    }
    let via = response_via(&response.headers, response.version);
    response.insert_header(VIA, via)?;
    Ok(())
}

/// The request id on every proxied or cached response.
pub fn add_request_id(response: &mut ResponseHeader, request_id: &str) -> pingora::Result<()> {
    if !request_id.is_empty() {
        response.insert_header(super::request_id::HEADER, request_id)?;
    }
    Ok(())
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

fn append_list(headers: &HeaderMap, name: &str, ours: &str) -> String {
    let earlier: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if earlier.is_empty() {
        ours.to_string()
    } else {
        format!("{}, {ours}", earlier.join(", "))
    }
}

/// One `Forwarded` element (RFC 7239): `for=...;host=...;proto=...`, quoting where needed.
fn forwarded_element(info: &ForwardedFor<'_>) -> String {
    let mut parts = Vec::with_capacity(3);
    match info.client_ip {
        Some(IpAddr::V6(ip)) => parts.push(format!("for=\"[{ip}]\"")),
        Some(ip) => parts.push(format!("for={ip}")),
        None => parts.push("for=unknown".to_string()),
    }
    if let Some(host) = info.host.filter(|h| HeaderValue::from_str(h).is_ok()) {
        if host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
        {
            parts.push(format!("host={host}"));
        } else {
            parts.push(format!("host=\"{}\"", host.replace(['"', '\\'], "")));
        }
    }
    parts.push(format!("proto={}", info.scheme));
    parts.join(";")
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
            version: http::Version::HTTP_11,
        };
        let out = forwarding_headers(&map, &info);
        let get = |name: &str| out.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
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
            version: http::Version::HTTP_2,
        };
        let out = forwarding_headers(&HeaderMap::new(), &info);
        assert!(out
            .iter()
            .any(|(n, v)| n == "forwarded" && v == "for=\"[::1]\";proto=http"));
        assert!(out.iter().any(|(n, v)| n == "via" && v == "2 parapet"));
    }
}
