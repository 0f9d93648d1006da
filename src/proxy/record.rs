//! What is recorded when a request ends: the status it got, the route's metrics and the access
//! log line; also the answer and record of a request whose head could not even be read.

use super::ctx::{protocol_of, Ctx};
use super::runtime::{Runtime, UNROUTED_METRICS};
use crate::access_log;
use crate::cache::status::Outcome;
use crate::metrics::Protocol;
use crate::refusal::{self, Refusal};
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
        let req = session.req_header();
        access_log::log(&access_log::Entry {
            time: now_rfc3339(),
            client: client_of(session.as_ref()),
            method: req.method.to_string(),
            host: ctx.host.clone().unwrap_or_default(),
            path: req
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            protocol: protocol.as_str(),
            status,
            bytes: session.body_bytes_sent() as u64,
            duration_ms: millis(elapsed),
            upstream_server: server.map(|a: SocketAddr| a.to_string()),
            upstream_time_ms: ctx.attempts.upstream_time().map(millis),
            cache_status: ctx.cache.outcome(&session.cache).map(Outcome::as_str),
            request_id: ctx.request_id.clone(),
            reason: None,
        });
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

/// A request head that could not be read: answers it (400 malformed, 408 stalled, ...) when
/// the client is still there, counts it as unrouted and logs it; the connection then closes.
pub async fn unreadable_request(session: &mut ServerSession, e: &Error, runtime: &Runtime) {
    let Some(refusal) = Refusal::of_error(e) else {
        return;
    };
    let started = Instant::now();
    let request_id = super::request_id::generate();
    let answer = refusal::Answer {
        request_id: &request_id,
        accept: None,
        head: false,
        server_header: runtime.settings.server_header.as_ref(),
        close: true,
    };
    let bytes = match refusal::respond(session, refusal, &answer).await {
        Ok(bytes) => bytes,
        Err(write_error) => {
            tracing::debug!(error = %write_error, "could not send the error response");
            0
        }
    };
    let protocol = protocol_of_session(session);
    let status = refusal.status();
    UNROUTED_METRICS.record(status, protocol, started.elapsed().as_secs_f64());
    super::metrics::count_body_out(protocol, bytes as u64);
    let reason = refusal_reason(e);
    let (method, path) = request_line_read(e);
    tracing::debug!(status, reason, method, path, error = %e, "request head refused");
    if access_log::enabled() {
        access_log::log(&access_log::Entry {
            time: now_rfc3339(),
            client: client_of(session),
            method,
            host: String::new(),
            path,
            protocol: protocol.as_str(),
            status,
            bytes: bytes as u64,
            duration_ms: millis(started.elapsed()),
            upstream_server: None,
            upstream_time_ms: None,
            cache_status: None,
            request_id,
            reason: Some(reason),
        });
    }
}

/// Why a head was refused, in the parser's words: its cause (`invalid header name`, `too many
/// headers`...), else what the reader explained (`request header not complete within 10s`).
fn refusal_reason(e: &Error) -> String {
    if let Some(cause) = &e.cause {
        return cause.to_string();
    }
    match e.context.as_ref().map(|c| c.as_str()) {
        Some(context) if !context.starts_with("buf: ") => context.to_string(),
        _ => e.etype().as_str().to_string(),
    }
}

/// The method and target of the head's request line, when the reader got that far: taken
/// from the bytes Pingora's error quotes (`buf: GET /x HTTP/1.1\r\n...`). Empty otherwise.
fn request_line_read(e: &Error) -> (String, String) {
    let Some(quoted) = e
        .context
        .as_ref()
        .and_then(|c| c.as_str().strip_prefix("buf: "))
    else {
        return (String::new(), String::new());
    };
    let quoted = quoted.trim_start_matches('"');
    let Some((line, _)) = quoted.split_once("\\r\\n") else {
        return (String::new(), String::new());
    };
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(method), Some(target))
            if !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            (method.to_string(), target.to_string())
        }
        _ => (String::new(), String::new()),
    }
}

fn protocol_of_session(session: &ServerSession) -> Protocol {
    match session {
        ServerSession::H2(_) => Protocol::H2,
        ServerSession::Custom(_) => Protocol::H3,
        _ => Protocol::Http1,
    }
}

fn client_of(session: &ServerSession) -> String {
    session
        .client_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Milliseconds with microsecond precision: a whole number of µs divided by 1000 is the f64
/// nearest that 3-decimal value, so the log shows `0.034`, not `0.03381000000000001`.
fn millis(duration: Duration) -> f64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX) as f64 / 1000.0
}
