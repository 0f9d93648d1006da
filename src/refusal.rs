//! Every answer Parapet makes itself instead of the upstream's: the one place where a refusal's
//! status, body and connection fate are decided, and how it is written. Every door (HTTP/1.1,
//! h2, h2c and HTTP/3) reaches the proxy through the same phases, which refuse through
//! [`respond`] and map failures with [`Refusal::of_error`]; the compression module refuses an
//! undecodable body with [`Refusal::error`]; a request head that cannot even be read is refused
//! the same way before any phase runs. (An HTTP/3 request too malformed to reach the proxy gets
//! a stream reset, which has no status.)
//!
//! An answer is short: `STATUS REASON: what happened` and the request id, as text/plain, or as
//! JSON when the client accepts only JSON. It carries `X-Request-Id`, `Cache-Control:
//! no-store`, no `Server` header unless `[server] server_header` sets one, and keeps the client
//! connection unless the refusal or the drain says to close it.

use crate::validate_request::Violation;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorSource, ErrorType, Result};

/// Why Parapet answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoRoute,
    /// A method this listener does not take (PURGE belongs to the admin listener).
    PurgeNotHere,
    /// CONNECT: Parapet is a reverse proxy, not a tunnel.
    ConnectNotSupported,
    HeaderTooLarge,
    BodyTooLarge,
    /// `Cache-Control: only-if-cached` and nothing usable stored (RFC 9111 §5.2.1.7).
    OnlyIfCachedMiss,
    /// Every server of the upstream is down (and `try_when_all_down` is off).
    AllServersDown,
    /// Every server of the upstream was tried by this request.
    AllServersTried,
    UpstreamTimeout,
    UpstreamFailure,
    /// The upstream's body is in a coding that cannot be decoded for this client.
    UndecodableUpstreamBody,
    MalformedRequest,
    /// A request the validator refuses (RFC 9110, 9112, 9113, 9114).
    InvalidRequest(Violation),
    /// The request-target is longer than `max_request_line_size` (or than Pingora reads).
    TargetTooLong,
    /// `Expect` with an expectation other than `100-continue` (RFC 9110 §10.1.1).
    ExpectationFailed,
    ClientTimeout,
    Internal,
    /// A status Pingora chose itself (an `HTTPStatus` error it raised).
    Status(u16),
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoRoute => 404,
            Refusal::PurgeNotHere | Refusal::ConnectNotSupported => 405,
            Refusal::HeaderTooLarge => 431,
            Refusal::BodyTooLarge => 413,
            Refusal::OnlyIfCachedMiss | Refusal::UpstreamTimeout => 504,
            Refusal::AllServersDown
            | Refusal::AllServersTried
            | Refusal::UpstreamFailure
            | Refusal::UndecodableUpstreamBody => 502,
            Refusal::MalformedRequest | Refusal::InvalidRequest(_) => 400,
            Refusal::TargetTooLong => 414,
            Refusal::ExpectationFailed => 417,
            Refusal::ClientTimeout => 408,
            Refusal::Internal => 500,
            Refusal::Status(code) => code,
        }
    }

    /// What happened, for the body: one short sentence, no internal names.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoRoute => "no route for this host and path",
            Refusal::PurgeNotHere => "PURGE is accepted on the admin listener only",
            Refusal::ConnectNotSupported => "CONNECT is not supported by this reverse proxy",
            Refusal::HeaderTooLarge => "the request head is larger than this server accepts",
            Refusal::BodyTooLarge => "the request body is larger than this server accepts",
            Refusal::OnlyIfCachedMiss => "only-if-cached and no usable stored response",
            Refusal::AllServersDown => "every server of the upstream is down",
            Refusal::AllServersTried => "no server of the upstream could answer",
            Refusal::UpstreamTimeout => "the upstream server did not answer in time",
            Refusal::UpstreamFailure => "the upstream server failed to answer",
            Refusal::UndecodableUpstreamBody => "the upstream body cannot be decoded",
            Refusal::MalformedRequest => "the request could not be parsed",
            Refusal::InvalidRequest(violation) => violation.message(),
            Refusal::TargetTooLong => "the request target is longer than this server accepts",
            Refusal::ExpectationFailed => "only the expectation 100-continue is supported",
            Refusal::ClientTimeout => "the request was not received in time",
            Refusal::Internal => "an internal error occurred",
            Refusal::Status(code) => reason_phrase(code),
        }
    }

    /// Whether the client connection must close after this answer even when the request was
    /// read whole: the request stream cannot be trusted (malformed, stalled, a body left
    /// unread), or the status came from somewhere Parapet cannot vouch for.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Refusal::MalformedRequest
                | Refusal::InvalidRequest(_)
                | Refusal::TargetTooLong
                | Refusal::ExpectationFailed
                | Refusal::ClientTimeout
                | Refusal::BodyTooLarge
                | Refusal::ConnectNotSupported
                | Refusal::Internal
                | Refusal::Status(_)
        )
    }

    /// The error that carries this refusal through Pingora to `fail_to_proxy`; never retried.
    pub fn error(self, context: impl Into<String>) -> Box<Error> {
        let mut e = Error::because(ErrorType::HTTPStatus(self.status()), context.into(), self);
        e.set_retry(false);
        e
    }

    /// The refusal a failed request gets; `None` when the client is gone (nothing to send).
    pub fn of_error(e: &Error) -> Option<Refusal> {
        if let Some(refusal) = e.cause.as_ref().and_then(|c| c.downcast_ref::<Refusal>()) {
            return Some(*refusal);
        }
        let refusal = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(0), _) => return None,
            (ErrorType::HTTPStatus(408), ErrorSource::Downstream) => Refusal::ClientTimeout,
            (ErrorType::HTTPStatus(414), ErrorSource::Downstream) => Refusal::TargetTooLong,
            (ErrorType::HTTPStatus(431), ErrorSource::Downstream) => Refusal::HeaderTooLarge,
            (ErrorType::HTTPStatus(code), _) => Refusal::Status(*code),
            (_, ErrorSource::Upstream) if is_timeout(e) => Refusal::UpstreamTimeout,
            (_, ErrorSource::Upstream) => Refusal::UpstreamFailure,
            (
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => return None,
            (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Downstream) => {
                Refusal::ClientTimeout
            }
            (_, ErrorSource::Downstream) => Refusal::MalformedRequest,
            _ => Refusal::Internal,
        };
        Some(refusal)
    }
}

impl From<Violation> for Refusal {
    fn from(violation: Violation) -> Refusal {
        match violation {
            Violation::TargetTooLong => Refusal::TargetTooLong,
            other => Refusal::InvalidRequest(other),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Refusal {}

fn reason_phrase(code: u16) -> &'static str {
    StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

pub fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// What the answer to one request needs besides the refusal.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub request_id: &'a str,
    /// The request's `Accept`, when its head was read.
    pub accept: Option<&'a HeaderValue>,
    /// A HEAD request: the header only.
    pub head: bool,
    /// `[server] server_header`, when set.
    pub server_header: Option<&'a HeaderValue>,
    /// Close the connection after the answer whatever the refusal (the process is draining,
    /// or the request head was never read).
    pub close: bool,
}

/// The body's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// JSON when every media range the client accepts is a JSON type, else text.
    pub fn negotiate(accept: Option<&HeaderValue>) -> Format {
        let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
            return Format::Text;
        };
        let mut ranges = accept
            .split(',')
            .filter(|range| !is_refused(range))
            .map(|range| range.split(';').next().unwrap_or("").trim())
            .filter(|media| !media.is_empty())
            .peekable();
        if ranges.peek().is_none() {
            return Format::Text;
        }
        if ranges.all(is_json) {
            Format::Json
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// A media range given `q=0`: "not acceptable".
fn is_refused(range: &str) -> bool {
    range.split(';').skip(1).any(|param| {
        let param = param.trim();
        param.eq_ignore_ascii_case("q=0")
            || param.eq_ignore_ascii_case("q=0.0")
            || param.eq_ignore_ascii_case("q=0.00")
            || param.eq_ignore_ascii_case("q=0.000")
    })
}

fn is_json(media: &str) -> bool {
    let media = media.to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// The body of a refusal: `502 Bad Gateway: what happened` and the request id.
pub fn body(refusal: Refusal, format: Format, request_id: &str) -> String {
    let status = refusal.status();
    let reason = reason_phrase(status);
    let message = refusal.message();
    match format {
        Format::Text => format!("{status} {reason}: {message}\nrequest id: {request_id}\n"),
        Format::Json => serde_json::json!({
            "status": status,
            "error": reason,
            "message": message,
            "request_id": request_id,
        })
        .to_string(),
    }
}

/// The response header of a refusal whose body is `body_length` bytes long.
pub fn response_header(
    refusal: Refusal,
    format: Format,
    body_length: usize,
    answer: &Answer<'_>,
) -> Result<ResponseHeader> {
    let mut response = ResponseHeader::build(refusal.status(), Some(5))?;
    response.insert_header(http::header::CONTENT_TYPE, format.content_type())?;
    response.insert_header(http::header::CONTENT_LENGTH, body_length)?;
    response.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    response.insert_header(crate::fields::X_REQUEST_ID, answer.request_id)?;
    if let Some(server) = answer.server_header {
        response.insert_header(http::header::SERVER, server.clone())?;
    }
    Ok(response)
}

/// Sends the refusal; returns the body bytes written. The connection is closed afterwards when
/// the refusal or `answer.close` says so.
pub async fn respond(
    session: &mut ServerSession,
    refusal: Refusal,
    answer: &Answer<'_>,
) -> Result<usize> {
    if answer.close || refusal.closes_connection() {
        session.set_keepalive(None);
    }
    let format = Format::negotiate(answer.accept);
    let body = body(refusal, format, answer.request_id);
    let header = response_header(refusal, format, body.len(), answer)?;
    let body = if answer.head {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let length = body.len();
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(body, true).await?;
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "req-1";

    fn answer<'a>(server_header: Option<&'a HeaderValue>) -> Answer<'a> {
        Answer {
            request_id: ID,
            accept: None,
            head: false,
            server_header,
            close: false,
        }
    }

    #[test]
    fn each_cause_has_its_status_body_and_connection_fate() {
        use Refusal::*;
        let table = [
            (NoRoute, 404, "404 Not Found: no route for this host and path", false),
            (PurgeNotHere, 405, "405 Method Not Allowed: PURGE is accepted on the admin listener only", false),
            (ConnectNotSupported, 405, "405 Method Not Allowed: CONNECT is not supported by this reverse proxy", true),
            (MalformedRequest, 400, "400 Bad Request: the request could not be parsed", true),
            (InvalidRequest(Violation::MissingHost), 400, "400 Bad Request: the request has no Host header", true),
            (TargetTooLong, 414, "414 URI Too Long: the request target is longer than this server accepts", true),
            (ExpectationFailed, 417, "417 Expectation Failed: only the expectation 100-continue is supported", true),
            (ClientTimeout, 408, "408 Request Timeout: the request was not received in time", true),
            (BodyTooLarge, 413, "413 Payload Too Large: the request body is larger than this server accepts", true),
            (HeaderTooLarge, 431, "431 Request Header Fields Too Large: the request head is larger than this server accepts", false),
            (AllServersDown, 502, "502 Bad Gateway: every server of the upstream is down", false),
            (AllServersTried, 502, "502 Bad Gateway: no server of the upstream could answer", false),
            (UpstreamFailure, 502, "502 Bad Gateway: the upstream server failed to answer", false),
            (UndecodableUpstreamBody, 502, "502 Bad Gateway: the upstream body cannot be decoded", false),
            (UpstreamTimeout, 504, "504 Gateway Timeout: the upstream server did not answer in time", false),
            (OnlyIfCachedMiss, 504, "504 Gateway Timeout: only-if-cached and no usable stored response", false),
            (Internal, 500, "500 Internal Server Error: an internal error occurred", true),
            (Status(503), 503, "503 Service Unavailable: Service Unavailable", true),
            (Status(416), 416, "416 Range Not Satisfiable: Range Not Satisfiable", true),
        ];
        for (refusal, status, first_line, closes) in table {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(
                body(refusal, Format::Text, ID),
                format!("{first_line}\nrequest id: {ID}\n"),
                "{refusal:?}"
            );
            assert_eq!(refusal.closes_connection(), closes, "{refusal:?}");
        }
    }

    #[test]
    fn json_is_chosen_only_when_the_client_accepts_nothing_else() {
        let negotiate =
            |accept: &str| Format::negotiate(Some(&HeaderValue::from_str(accept).unwrap()));
        assert_eq!(negotiate("application/json"), Format::Json);
        assert_eq!(
            negotiate("application/problem+json, application/json;q=0.5"),
            Format::Json
        );
        assert_eq!(negotiate("application/json, text/plain;q=0"), Format::Json);
        assert_eq!(negotiate("application/json, */*;q=0.1"), Format::Text);
        assert_eq!(negotiate("text/html,application/json"), Format::Text);
        assert_eq!(negotiate("*/*"), Format::Text);
        assert_eq!(negotiate(""), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }

    #[test]
    fn the_json_body_says_the_same_as_the_text() {
        let json: serde_json::Value =
            serde_json::from_str(&body(Refusal::AllServersDown, Format::Json, ID)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": 502,
                "error": "Bad Gateway",
                "message": "every server of the upstream is down",
                "request_id": ID,
            })
        );
    }

    #[test]
    fn the_header_carries_the_request_id_and_a_server_only_when_configured() {
        let bare = response_header(Refusal::NoRoute, Format::Text, 10, &answer(None)).unwrap();
        assert_eq!(bare.headers.get("x-request-id").unwrap(), ID);
        assert_eq!(bare.headers.get("content-length").unwrap(), "10");
        assert_eq!(bare.headers.get("cache-control").unwrap(), "no-store");
        assert!(bare.headers.get("server").is_none());
        let named = HeaderValue::from_static("parapet");
        let with_server =
            response_header(Refusal::NoRoute, Format::Json, 10, &answer(Some(&named))).unwrap();
        assert_eq!(with_server.headers.get("server").unwrap(), "parapet");
        assert_eq!(
            with_server.headers.get("content-type").unwrap(),
            "application/json"
        );
    }

    #[test]
    fn a_refusal_survives_the_trip_through_pingora_errors() {
        let e = Refusal::BodyTooLarge.error("too big");
        assert_eq!(e.etype(), &ErrorType::HTTPStatus(413));
        assert!(!e.retry());
        assert_eq!(Refusal::of_error(&e), Some(Refusal::BodyTooLarge));
    }

    #[test]
    fn violations_are_400_except_a_long_target_which_is_414() {
        assert_eq!(Refusal::from(Violation::TargetTooLong).status(), 414);
        assert_eq!(Refusal::from(Violation::InvalidHost).status(), 400);
        assert_eq!(Refusal::from(Violation::FieldValueWhitespace).status(), 400);
    }

    #[test]
    fn failures_map_to_the_statuses_clients_get() {
        let of = |kind: ErrorType, source: ErrorSource| {
            Refusal::of_error(&Error::create(kind, source, None, None))
        };
        use ErrorSource::{Downstream, Internal, Upstream};
        assert_eq!(
            of(ErrorType::ConnectTimedout, Upstream),
            Some(Refusal::UpstreamTimeout)
        );
        assert_eq!(
            of(ErrorType::ConnectRefused, Upstream),
            Some(Refusal::UpstreamFailure)
        );
        assert_eq!(of(ErrorType::ConnectionClosed, Downstream), None);
        assert_eq!(of(ErrorType::HTTPStatus(0), Internal), None);
        assert_eq!(
            of(ErrorType::ReadTimedout, Downstream),
            Some(Refusal::ClientTimeout)
        );
        assert_eq!(
            of(ErrorType::InvalidHTTPHeader, Downstream),
            Some(Refusal::MalformedRequest)
        );
        assert_eq!(
            of(ErrorType::HTTPStatus(408), Downstream),
            Some(Refusal::ClientTimeout)
        );
        assert_eq!(
            of(ErrorType::HTTPStatus(414), Downstream),
            Some(Refusal::TargetTooLong)
        );
        assert_eq!(
            of(ErrorType::HTTPStatus(416), Internal),
            Some(Refusal::Status(416))
        );
        assert_eq!(
            of(ErrorType::InternalError, Internal),
            Some(Refusal::Internal)
        );
    }
}
