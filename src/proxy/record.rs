//! What is recorded when a request ends: the status it got, the route's metrics and the access
//! log line.

use super::ctx::{protocol_of, Ctx};
use super::runtime::UNROUTED_METRICS;
use crate::access_log;
use crate::metrics::Protocol;
use crate::refusal::Refusal;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource};
use std::net::SocketAddr;
use std::time::Duration;

/// What nginx logs for a client that left before any answer.
const CLIENT_CLOSED: u16 = 499;

/// Ends the request's last try and records the request.
pub fn finish(session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
    let server = ctx.attempts.finish();
    let status = response_status(session, e);
    let protocol = protocol_of(session);
    let elapsed = ctx.started.elapsed();
    let route_metrics = ctx
        .target
        .as_ref()
        .map_or(&*UNROUTED_METRICS, |t| &t.metrics);
    route_metrics.record(status, protocol, elapsed.as_secs_f64());
    if access_log::enabled() {
        access_log::log(&access_entry(
            session, ctx, status, protocol, elapsed, server,
        ));
    }
}

/// The status the client got; a client that left before any answer is logged as 499.
fn response_status(session: &Session, e: Option<&Error>) -> u16 {
    match session.response_written() {
        Some(response) => response.status.as_u16(),
        None if e.is_some_and(|e| e.esource() == &ErrorSource::Downstream) => CLIENT_CLOSED,
        None => e
            .and_then(Refusal::of_error)
            .map_or(CLIENT_CLOSED, Refusal::status),
    }
}

fn access_entry(
    session: &Session,
    ctx: &Ctx,
    status: u16,
    protocol: Protocol,
    elapsed: Duration,
    server: Option<SocketAddr>,
) -> access_log::Entry {
    let req = session.req_header();
    access_log::Entry {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        client: session
            .client_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        method: req.method.to_string(),
        host: ctx.host.clone().unwrap_or_default(),
        path: req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        protocol: protocol.as_str(),
        status,
        bytes: ctx.response_body_bytes,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream_server: server.map(|a| a.to_string()),
        upstream_time_ms: ctx
            .attempts
            .upstream_time()
            .map(|d| d.as_secs_f64() * 1000.0),
        cache_status: None,
        request_id: ctx.request_id.clone(),
    }
}
