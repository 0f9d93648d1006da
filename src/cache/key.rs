//! Cache keys: scheme, host, port, path and query, so that two hosts or two schemes never
//! share an entry (leaving the host out is how CVE-2026-2836 poisoned caches), plus the
//! variance for `Vary`, computed from normalized request header values.

use pingora::cache::key::CacheKey;

/// The URL text a response is stored under: `scheme://host:port/path?query`, host
/// lower-cased, port always explicit.
pub fn url(scheme: &str, host: &str, path_and_query: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let has_port = if host.starts_with('[') {
        host.contains("]:")
    } else {
        host.contains(':')
    };
    let authority = if has_port {
        host
    } else {
        format!("{host}:{default_port}")
    };
    format!("{scheme}://{authority}{path_and_query}")
}

/// The stored-URL form of an absolute URL (`http://Host/path` → `http://host:80/path`).
pub fn normalize_url(text: &str) -> Option<String> {
    let uri: http::Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    Some(url(
        scheme,
        authority,
        uri.path_and_query().map_or("/", |p| p.as_str()),
    ))
}

/// The pingora-cache key for a URL; the URL is the primary key, so purges can find it.
pub fn cache_key(url: &str) -> CacheKey {
    CacheKey::new(url.to_string(), "")
}

/// Normalizes a request header's values for `Vary` matching (RFC 9111 §4.1): several lines
/// joined, whitespace inside list members removed, case folded (content negotiation values
/// are case-insensitive). For the `Accept` family (`unordered`), whose preferences are carried
/// by weights and not by position, members are also sorted.
pub fn normalize_vary_value<'a>(values: impl Iterator<Item = &'a [u8]>, unordered: bool) -> String {
    let mut members: Vec<String> = values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|member| {
            member
                .split(';')
                .map(|part| {
                    part.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_ascii_lowercase()
                })
                .collect::<Vec<_>>()
                .join(";")
        })
        .filter(|member| !member.is_empty())
        .collect();
    if unordered {
        members.sort_unstable();
    }
    members.join(",")
}

/// Request fields whose list order carries no meaning (RFC 9110 §12.5: preference is by weight).
fn unordered_list(name: &str) -> bool {
    [
        "accept",
        "accept-language",
        "accept-charset",
        "accept-encoding",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// The normalized value of request field `name` for `Vary` matching.
pub fn vary_value(name: &str, request: &http::HeaderMap) -> String {
    let values = request.get_all(name).iter().map(|v| v.as_bytes());
    normalize_vary_value(values, unordered_list(name))
}

/// True when a response's `Vary` names `Accept-Encoding` and nothing else (checked without
/// allocating: it is the common case on every hit of a compressible response).
pub fn varies_only_on_accept_encoding(headers: &http::HeaderMap) -> bool {
    let mut names = headers
        .get_all(http::header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|n| !n.is_empty())
        .peekable();
    names.peek().is_some() && names.all(|n| n.eq_ignore_ascii_case(b"accept-encoding"))
}

/// The header names in a response's `Vary`, lower-cased, sorted, without duplicates.
pub fn vary_names(headers: &http::HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_scheme_host_and_an_explicit_port() {
        assert_eq!(
            url("http", "Example.COM", "/a?b=1"),
            "http://example.com:80/a?b=1"
        );
        assert_eq!(url("https", "example.com", "/"), "https://example.com:443/");
        assert_eq!(
            url("http", "example.com:8080", "/"),
            "http://example.com:8080/"
        );
        assert_eq!(url("http", "[::1]", "/"), "http://[::1]:80/");
        assert_ne!(url("http", "a.test", "/x"), url("http", "b.test", "/x"));
    }

    fn normalized(lines: &[&str], unordered: bool) -> String {
        normalize_vary_value(lines.iter().map(|l| l.as_bytes()), unordered)
    }

    #[test]
    fn vary_values_are_normalized() {
        let a = normalized(&["en-US,fr"], false);
        assert_eq!(a, normalized(&["en-us,  fr"], false));
        assert_eq!(a, normalized(&["en-us", "fr"], false));
        assert_ne!(a, normalized(&["fr, en-us"], false));
    }

    #[test]
    fn accept_language_values_match_whatever_their_order_case_and_spacing() {
        let a = normalized(&["en-US, fr;q=0.5"], true);
        assert_eq!(a, normalized(&["FR; Q=0.5,en-us"], true));
        assert_eq!(a, normalized(&["fr;q=0.5", "EN-us"], true));
        assert_ne!(a, normalized(&["fr;q=0.4, en-us"], true));
        assert!(unordered_list("Accept-Language"));
        assert!(!unordered_list("x-custom"));
    }

    #[test]
    fn vary_values_differ_by_value_and_ignore_unlisted_headers() {
        let mut en = http::HeaderMap::new();
        en.insert("accept-language", "en".parse().unwrap());
        let mut fr = en.clone();
        fr.insert("accept-language", "fr".parse().unwrap());
        let mut en_other = en.clone();
        en_other.insert("user-agent", "x".parse().unwrap());
        assert_ne!(
            vary_value("accept-language", &en),
            vary_value("accept-language", &fr)
        );
        assert_eq!(
            vary_value("accept-language", &en),
            vary_value("accept-language", &en_other)
        );
    }

    #[test]
    fn only_a_vary_of_accept_encoding_alone_is_recognized_as_such() {
        let vary = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append("vary", value.parse().unwrap());
            }
            varies_only_on_accept_encoding(&headers)
        };
        assert!(vary(&["Accept-Encoding"]));
        assert!(vary(&["accept-encoding, Accept-Encoding"]));
        assert!(!vary(&["Accept-Encoding, Accept-Language"]));
        assert!(!vary(&["Accept-Encoding", "Cookie"]));
        assert!(!vary(&[]));
    }
}
