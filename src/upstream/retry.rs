//! Whether a failed try is tried again, as pure functions of what happened (nginx's
//! `proxy_next_upstream error timeout`, plus pooled connections the server had closed).
//!
//! What counts against a server's passive health: connect failures, timeouts, and connections
//! that break on a fresh connection or after the response began. What does not: a pooled
//! keep-alive connection that fails before any response byte (the server closed it while it
//! was idle, or as the request arrived); the request is sent again on a new connection.

/// Retries on a new connection after pooled connections turned out closed, on top of
/// `retries`. (The retry itself never takes a pooled connection, so one is the usual need.)
pub const MAX_STALE_CONNECTION_RETRIES: usize = 2;

/// What went wrong with a try that had connected.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyFailure {
    /// The upstream side broke (not the client, not Parapet).
    pub upstream_fault: bool,
    /// The try went over a pooled keep-alive connection.
    pub reused_connection: bool,
    pub timeout: bool,
    /// No response header had arrived from the server.
    pub before_response: bool,
    /// The method is idempotent (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// Sending the request again is possible: no body, or all of it still held for a replay,
    /// and nothing sent to the client yet.
    pub replayable: bool,
}

impl ProxyFailure {
    /// A pooled connection that failed before any response byte: the server had closed it.
    pub fn is_stale_connection(&self) -> bool {
        self.upstream_fault && self.reused_connection && self.before_response && !self.timeout
    }
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
    /// The retry replaces a pooled connection the server had already closed: it goes over a
    /// new connection and does not count as a try of another server.
    pub stale_connection: bool,
}

/// Connecting failed: another server is tried while `retries` allows.
pub fn after_connect_failure(tries: usize, retries: usize) -> bool {
    tries <= retries
}

/// A try failed after connecting. A stale pooled connection is nobody's fault and any
/// replayable request (POST with a small body included) is sent again on a new connection;
/// other upstream failures count against the server and are retried on another one within
/// `retries` for idempotent requests, except timeouts (the server may still be working on it).
pub fn after_proxy_failure(failure: &ProxyFailure, count: &TryCount) -> RetryDecision {
    let stale = failure.is_stale_connection();
    if stale && failure.replayable && count.stale_connection_retries < MAX_STALE_CONNECTION_RETRIES
    {
        return RetryDecision {
            retry: true,
            server_at_fault: false,
            stale_connection: true,
        };
    }
    let within_budget = count.retries.is_some_and(|retries| count.tries <= retries);
    let retry = failure.upstream_fault
        && failure.idempotent
        && failure.replayable
        && within_budget
        && !failure.timeout;
    RetryDecision {
        retry,
        server_at_fault: failure.upstream_fault && !stale,
        stale_connection: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKEN: ProxyFailure = ProxyFailure {
        upstream_fault: true,
        reused_connection: false,
        timeout: false,
        before_response: true,
        idempotent: true,
        replayable: true,
    };

    const STALE: ProxyFailure = ProxyFailure {
        reused_connection: true,
        ..BROKEN
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
    fn a_broken_fresh_connection_is_retried_on_another_server_and_blamed() {
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
    fn timeouts_and_non_idempotent_or_unreplayable_requests_are_not_retried_elsewhere() {
        let timeout = ProxyFailure {
            timeout: true,
            ..BROKEN
        };
        let decision = after_proxy_failure(&timeout, &count(1, 2));
        assert!(!decision.retry && decision.server_at_fault);
        let post = ProxyFailure {
            idempotent: false,
            ..BROKEN
        };
        assert!(!after_proxy_failure(&post, &count(1, 2)).retry);
        let streamed = ProxyFailure {
            replayable: false,
            ..BROKEN
        };
        assert!(!after_proxy_failure(&streamed, &count(1, 2)).retry);
    }

    #[test]
    fn a_stale_pooled_connection_is_retried_without_blame_or_budget_even_for_post() {
        let expected = RetryDecision {
            retry: true,
            server_at_fault: false,
            stale_connection: true,
        };
        assert_eq!(after_proxy_failure(&STALE, &count(3, 0)), expected);
        let post = ProxyFailure {
            idempotent: false,
            ..STALE
        };
        assert_eq!(after_proxy_failure(&post, &count(1, 0)), expected);
    }

    #[test]
    fn a_stale_connection_that_cannot_be_replayed_fails_without_blame() {
        let streamed = ProxyFailure {
            replayable: false,
            ..STALE
        };
        let decision = after_proxy_failure(&streamed, &count(1, 2));
        assert!(!decision.retry && !decision.server_at_fault);
        let mut spent = count(1, 0);
        spent.stale_connection_retries = MAX_STALE_CONNECTION_RETRIES;
        let decision = after_proxy_failure(&STALE, &spent);
        assert!(!decision.retry && !decision.server_at_fault);
    }

    #[test]
    fn pooled_connections_that_time_out_or_break_mid_response_count_as_failures() {
        let timeout = ProxyFailure {
            timeout: true,
            ..STALE
        };
        assert!(after_proxy_failure(&timeout, &count(1, 2)).server_at_fault);
        let mid_response = ProxyFailure {
            before_response: false,
            replayable: false,
            ..STALE
        };
        let decision = after_proxy_failure(&mid_response, &count(1, 2));
        assert!(!decision.retry && decision.server_at_fault);
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
