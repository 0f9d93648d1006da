//! Routing: request host and path to a route. Pure, no I/O.
//!
//! The most specific host group wins: the exact host, then the longest matching `*.suffix`,
//! then routes without a host. Within a group the longest path prefix (plain string prefix, as
//! nginx's prefix locations) wins. A group with no prefix for the path falls through to the
//! next less specific group.

use std::borrow::Cow;
use std::collections::HashMap;

/// A route host that is neither a host name nor `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host \"{0}\": use a host name such as \"api.example.com\" or \"*.example.com\" (no port)")]
pub struct InvalidHostPattern(pub String);

/// Checks a route's host pattern: a plain host name or `*.suffix`.
pub fn check_host_pattern(pattern: &str) -> Result<(), InvalidHostPattern> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(InvalidHostPattern(pattern.to_string()))
    }
}

/// Lower-cases a Host header value and strips its port and any trailing dot.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = without_port.trim_end_matches('.');
    // Borrowed in the usual case (already lower case): this runs on every request.
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Routes of one host group, longest prefix first.
struct Group<T> {
    by_prefix: Vec<(String, T)>,
}

impl<T> Group<T> {
    fn new() -> Self {
        Group {
            by_prefix: Vec::new(),
        }
    }

    fn find(&self, path: &str) -> Option<&T> {
        self.by_prefix
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, target)| target)
    }

    fn sort(&mut self) {
        self.by_prefix
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    }
}

/// A routing table from (host pattern, path prefix) to a target.
pub struct Router<T> {
    exact: HashMap<String, Group<T>>,
    /// Keyed by the suffix including its leading dot, longest suffix first.
    wildcard: Vec<(String, Group<T>)>,
    any_host: Group<T>,
}

impl<T> Router<T> {
    /// Builds the table; `host` is `None`, an exact host or `*.suffix` (already validated).
    pub fn new(routes: impl IntoIterator<Item = (Option<String>, String, T)>) -> Self {
        let mut router = Router {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any_host: Group::new(),
        };
        for (host, prefix, target) in routes {
            router.group_for(host).by_prefix.push((prefix, target));
        }
        router.exact.values_mut().for_each(Group::sort);
        router
            .wildcard
            .iter_mut()
            .for_each(|(_, group)| group.sort());
        router
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        router.any_host.sort();
        router
    }

    fn group_for(&mut self, host: Option<String>) -> &mut Group<T> {
        let Some(host) = host.map(|h| h.to_ascii_lowercase()) else {
            return &mut self.any_host;
        };
        match host.strip_prefix('*') {
            Some(suffix) => {
                let position = match self.wildcard.iter().position(|(s, _)| s == suffix) {
                    Some(position) => position,
                    None => {
                        self.wildcard.push((suffix.to_string(), Group::new()));
                        self.wildcard.len() - 1
                    }
                };
                &mut self.wildcard[position].1
            }
            None => self.exact.entry(host).or_insert_with(Group::new),
        }
    }

    /// The route for a request; `host` must already be normalized (see [`normalize_host`]).
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        let exact = self.exact.get(host).and_then(|group| group.find(path));
        exact
            .or_else(|| {
                self.wildcard
                    .iter()
                    .filter(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .find_map(|(_, group)| group.find(path))
            })
            .or_else(|| self.any_host.find(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Router<&'static str> {
        Router::new([
            (None, "/".to_string(), "default"),
            (None, "/api/".to_string(), "any-api"),
            (
                Some("api.example.com".to_string()),
                "/".to_string(),
                "exact-root",
            ),
            (
                Some("api.example.com".to_string()),
                "/v2/".to_string(),
                "exact-v2",
            ),
            (Some("*.example.com".to_string()), "/w/".to_string(), "wild"),
            (
                Some("*.eu.example.com".to_string()),
                "/w/".to_string(),
                "wild-eu",
            ),
            (
                Some("static.test".to_string()),
                "/img/".to_string(),
                "static-img",
            ),
        ])
    }

    #[test]
    fn exact_host_beats_wildcard_and_longest_prefix_wins() {
        let router = table();
        assert_eq!(
            router.lookup("api.example.com", "/v2/users"),
            Some(&"exact-v2")
        );
        assert_eq!(
            router.lookup("api.example.com", "/w/x"),
            Some(&"exact-root")
        );
    }

    #[test]
    fn longest_wildcard_suffix_wins_and_never_matches_the_bare_suffix() {
        let router = table();
        assert_eq!(router.lookup("a.eu.example.com", "/w/1"), Some(&"wild-eu"));
        assert_eq!(router.lookup("a.b.example.com", "/w/1"), Some(&"wild"));
        assert_eq!(router.lookup("example.com", "/w/1"), Some(&"default"));
    }

    #[test]
    fn a_host_without_a_matching_prefix_falls_through_to_hostless_routes() {
        let router = table();
        assert_eq!(
            router.lookup("static.test", "/img/a.png"),
            Some(&"static-img")
        );
        assert_eq!(router.lookup("static.test", "/api/x"), Some(&"any-api"));
    }

    #[test]
    fn no_match_gives_none() {
        let router = Router::new([(Some("only.test".to_string()), "/".to_string(), 1)]);
        assert_eq!(router.lookup("other.test", "/"), None);
    }

    #[test]
    fn hosts_are_normalized_without_port_or_case() {
        assert_eq!(normalize_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert!(check_host_pattern("*.example.com").is_ok());
        assert!(check_host_pattern("example.com:80").is_err());
    }
}
