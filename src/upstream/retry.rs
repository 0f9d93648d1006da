//! Whether a failed try is tried again, as pure functions of what happened (nginx's
//! `proxy_next_upstream error timeout`, plus Pingora's stale pooled connections).

/// Retries allowed for pooled connections that turn out closed, on top of `retries`.
pub const MAX_STALE_CONNECTION_RETRIES: usize = 2;

/// What went wrong with a try that had connected.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyFailure {
    /// The upstream side broke (not the client, not Parapet).
    pub upstream_fault: bool,
    /// The try went over a pooled keep-alive connection.
    pub reused_connection: bool,
    pub timeout: bool,
    /// Sending the request again is safe: an idempotent method, a body still held for a replay,
    /// and nothing sent to the client yet.
    pub repeatable: bool,
}

/// The request's tries so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct TryCount {
    /// Tries made, the failed one included.
    pub tries: usize,
    /// The upstream's `retries`; `None` without a route.
    pub retries: Option<usize>,
    /// Retries already spent on stale pooled connections.
    pub stale_connection_retries: usize,
}

/// What a failed try leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDecision {
    pub retry: bool,
    /// The failure counts against the server's passive health.
    pub server_at_fault: bool,
    /// The retry replaces a pooled connection the server had already closed: it does not count
    /// as a try of another server.
    pub stale_connection: bool,
}

/// Connecting failed: another server is tried while `retries` allows.
pub fn after_connect_failure(tries: usize, retries: usize) -> bool {
    tries <= retries
}

/// A try failed after connecting. A pooled connection the server had already closed is not the
/// server's fault and is retried on a fresh connection; other upstream failures are retried on
/// another server within `retries`, except timeouts (the server may still be working on it).
pub fn after_proxy_failure(failure: &ProxyFailure, count: &TryCount) -> RetryDecision {
    let stale_connection = failure.upstream_fault
        && failure.reused_connection
        && count.stale_connection_retries < MAX_STALE_CONNECTION_RETRIES;
    let within_budget = count.retries.is_some_and(|retries| count.tries <= retries);
    let retry = failure.repeatable
        && failure.upstream_fault
        && (stale_connection || (within_budget && !failure.timeout));
    RetryDecision {
        retry,
        server_at_fault: failure.upstream_fault && !stale_connection,
        stale_connection: retry && stale_connection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKEN: ProxyFailure = ProxyFailure {
        upstream_fault: true,
        reused_connection: false,
        timeout: false,
        repeatable: true,
    };

    fn count(tries: usize, retries: usize) -> TryCount {
        TryCount {
            tries,
            retries: Some(retries),
            stale_connection_retries: 0,
        }
    }

    #[test]
    fn connect_failures_are_retried_within_the_budget() {
        assert!(after_connect_failure(1, 2));
        assert!(!after_connect_failure(3, 2));
        assert!(after_connect_failure(2, 2));
    }

    #[test]
    fn a_broken_upstream_is_retried_on_another_server_and_blamed() {
        let decision = after_proxy_failure(&BROKEN, &count(1, 2));
        assert_eq!(
            decision,
            RetryDecision {
                retry: true,
                server_at_fault: true,
                stale_connection: false
            }
        );
        assert!(!after_proxy_failure(&BROKEN, &count(3, 2)).retry);
    }

    #[test]
    fn timeouts_and_unrepeatable_requests_are_not_retried() {
        let timeout = ProxyFailure {
            timeout: true,
            ..BROKEN
        };
        let decision = after_proxy_failure(&timeout, &count(1, 2));
        assert!(!decision.retry && decision.server_at_fault);
        let post = ProxyFailure {
            repeatable: false,
            ..BROKEN
        };
        assert!(!after_proxy_failure(&post, &count(1, 2)).retry);
    }

    #[test]
    fn a_stale_pooled_connection_is_retried_without_blame_a_few_times() {
        let stale = ProxyFailure {
            reused_connection: true,
            timeout: true,
            ..BROKEN
        };
        let mut tries = count(3, 0);
        let decision = after_proxy_failure(&stale, &tries);
        assert_eq!(
            decision,
            RetryDecision {
                retry: true,
                server_at_fault: false,
                stale_connection: true
            }
        );
        tries.stale_connection_retries = MAX_STALE_CONNECTION_RETRIES;
        let spent = after_proxy_failure(&stale, &tries);
        assert!(!spent.retry && spent.server_at_fault);
    }

    #[test]
    fn client_side_failures_are_neither_retried_nor_blamed() {
        let client = ProxyFailure {
            upstream_fault: false,
            ..BROKEN
        };
        let decision = after_proxy_failure(&client, &count(1, 2));
        assert!(!decision.retry && !decision.server_at_fault);
    }
}
