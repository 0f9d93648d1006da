//! The admin listener's bearer-token guard: which endpoints need the token, reading the
//! `Authorization` header (scheme matched case-insensitively, RFC 9110 §11.1), comparing the
//! token in constant time, counting failures in `parapet_admin_auth_failures_total`, and the
//! per-client lockout: after [`MAX_FAILURES`] wrong tokens within [`WINDOW`] of the first, that
//! address gets 429 with `Retry-After` on every guarded endpoint until the window has passed.

use crate::config::AdminConfig;
use http::HeaderMap;
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Wrong tokens from one address that lock it out for the rest of the window.
pub const MAX_FAILURES: u32 = 10;
/// The lockout window, counted from an address's first failure in it.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, windows that have passed are dropped first.
const MAX_TRACKED: usize = 4096;

/// Who may use an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone (the static status page, and the probes unless `protect_metrics`).
    Open,
    /// The token when `token_file` is set, anyone otherwise (the read-only JSON endpoints).
    TokenIfSet,
    /// Always the token; without a `token_file` the endpoint is refused (reload, purge).
    Token,
}

/// The guard of `GET`/`POST path` (and `PURGE`) under this `[admin]` table.
pub fn guard_of(path: &str, purge_method: bool, admin: &AdminConfig) -> Guard {
    let probes = if admin.protect_metrics {
        Guard::TokenIfSet
    } else {
        Guard::Open
    };
    match path {
        _ if purge_method => Guard::Token,
        "/reload" | "/purge" => Guard::Token,
        "/config" | "/upstreams" | "/status.json" => Guard::TokenIfSet,
        "/metrics" | "/healthz" | "/readyz" => probes,
        _ => Guard::Open,
    }
}

/// Why a request was refused, as the counter's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Missing,
    Wrong,
    RateLimited,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Missing => "missing_token",
            Failure::Wrong => "wrong_token",
            Failure::RateLimited => "rate_limited",
        }
    }
}

static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "admin_auth_failures_total",
        "Admin requests refused for their bearer token: missing_token, wrong_token, or rate_limited (the address is locked out after too many wrong tokens).",
        &["reason"],
    )
});

/// Registers the counter's family and its series, so `/metrics` shows them at 0 from the start.
pub fn register_metrics() {
    for reason in [Failure::Missing, Failure::Wrong, Failure::RateLimited] {
        FAILURES.with_label_values(&[reason.as_str()]);
    }
}

pub fn count(failure: Failure) {
    FAILURES.with_label_values(&[failure.as_str()]).inc();
}

/// The token after `Bearer ` in `Authorization`, the scheme in any case.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The token in `token_file`, trimmed; `None` when unset, unreadable or empty.
pub fn expected_token(admin: &AdminConfig) -> Option<String> {
    let file = admin.token_file.as_ref()?;
    let token = std::fs::read_to_string(file).ok()?;
    Some(token.trim().to_string()).filter(|token| !token.is_empty())
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right
/// (only whether its length was).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Window {
    fn passed(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= WINDOW
    }
}

/// Wrong-token failures per client address.
#[derive(Debug, Default)]
pub struct Lockout {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl Lockout {
    /// How long `client` stays locked out, or `None` when it may try.
    pub fn locked_for(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().ok()?;
        let window = windows.get(&client)?;
        (window.failures >= MAX_FAILURES && !window.passed(now))
            .then(|| WINDOW.saturating_sub(now.saturating_duration_since(window.start)))
    }

    /// Counts a wrong token from `client`.
    pub fn fail(&self, client: IpAddr, now: Instant) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&client) {
            windows.retain(|_, window| !window.passed(now));
        }
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&client) {
            return;
        }
        let window = windows.entry(client).or_insert(Window {
            start: now,
            failures: 0,
        });
        if window.passed(now) {
            *window = Window {
                start: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(value).expect("header value"),
        );
        headers
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
            assert_eq!(presented_token(&bearer(value)), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearerabc", "Bearer ", "abc"] {
            assert_eq!(presented_token(&bearer(value)), None, "{value}");
        }
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }

    #[test]
    fn tokens_compare_equal_only_when_every_byte_is() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn an_address_is_locked_out_after_ten_failures_until_the_window_passes() {
        let lockout = Lockout::default();
        let (client, other) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            lockout.fail(client, start);
        }
        assert_eq!(lockout.locked_for(client, start), None);
        lockout.fail(client, start);
        let wait = lockout.locked_for(client, start + Duration::from_secs(15));
        assert_eq!(wait, Some(Duration::from_secs(45)));
        assert_eq!(lockout.locked_for(other, start), None);
        assert_eq!(lockout.locked_for(client, start + WINDOW), None);
        lockout.fail(client, start + WINDOW);
        assert_eq!(lockout.locked_for(client, start + WINDOW), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(44_001)), 45);
        assert_eq!(retry_after_secs(Duration::from_secs(45)), 45);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
