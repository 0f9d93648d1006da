//! Every answer Parapet makes itself instead of the upstream's: the one place where a refusal's
//! status and body are decided. Every door (HTTP/1.1, h2, h2c and HTTP/3) reaches the proxy
//! through the same phases, which refuse through [`respond`] and map failures with
//! [`Refusal::of_error`]; the compression module refuses an undecodable body with
//! [`Refusal::error`]. (An HTTP/3 request too malformed to reach the proxy gets a stream reset,
//! which has no status.)

use crate::validate_request::Violation;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

/// Why Parapet answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no route for this host and path")]
    NoRoute,
    /// A method this listener does not take (PURGE belongs to the admin listener).
    #[error("PURGE is accepted on the admin listener only")]
    PurgeNotHere,
    #[error("request head larger than max_request_header_size")]
    HeaderTooLarge,
    #[error("request body larger than max_request_body_size")]
    BodyTooLarge,
    /// `Cache-Control: only-if-cached` and nothing usable stored (RFC 9111 §5.2.1.7).
    #[error("only-if-cached and no usable stored response")]
    OnlyIfCachedMiss,
    /// Every server of the upstream is down (and `try_when_all_down` is off).
    #[error("every server of the upstream is down")]
    AllServersDown,
    /// Every server of the upstream was tried by this request.
    #[error("every server of the upstream was tried")]
    AllServersTried,
    #[error("the upstream timed out")]
    UpstreamTimeout,
    #[error("the upstream failed")]
    UpstreamFailure,
    /// The upstream's body is in a coding that cannot be decoded for this client.
    #[error("the upstream body cannot be decoded")]
    UndecodableUpstreamBody,
    #[error("malformed request")]
    MalformedRequest,
    /// A request the validator refuses (RFC 9110, 9112, 9113, 9114).
    #[error("invalid request: {0}")]
    InvalidRequest(Violation),
    /// The request-target is longer than `max_request_line_size`.
    #[error("request target longer than max_request_line_size")]
    TargetTooLong,
    /// `Expect` with an expectation other than `100-continue` (RFC 9110 §10.1.1).
    #[error("unsupported expectation")]
    ExpectationFailed,
    #[error("the client was too slow")]
    ClientTimeout,
    #[error("internal error")]
    Internal,
    /// A status Pingora chose itself (an `HTTPStatus` error it raised).
    #[error("status {0}")]
    Status(u16),
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoRoute => 404,
            Refusal::PurgeNotHere => 405,
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

    /// The plain-text body, for refusals that keep the client connection usable; `None`:
    /// Pingora's empty error response, and the connection is closed.
    pub fn body(self) -> Option<&'static [u8]> {
        match self {
            Refusal::NoRoute => Some(b"404 Not Found: no route for this host and path\n"),
            Refusal::PurgeNotHere => {
                Some(b"405 Method Not Allowed: PURGE is accepted on the admin listener only\n")
            }
            Refusal::OnlyIfCachedMiss => {
                Some(b"504 Gateway Timeout: only-if-cached and no usable stored response\n")
            }
            _ => None,
        }
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

pub fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// Sends the refusal: a short plain-text response that keeps the connection usable when it has
/// a body, else Pingora's error response.
pub async fn respond(session: &mut Session, refusal: Refusal) -> Result<()> {
    match refusal.body() {
        Some(body) => respond_text(session, refusal.status(), body).await,
        None => session.respond_error(refusal.status()).await,
    }
}

async fn respond_text(session: &mut Session, status: u16, body: &'static [u8]) -> Result<()> {
    let mut response = ResponseHeader::build(status, Some(3))?;
    response.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    response.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    response.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body)), true)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_only_the_text_ones_a_body() {
        let table = [
            (Refusal::NoRoute, 404, true),
            (Refusal::PurgeNotHere, 405, true),
            (Refusal::HeaderTooLarge, 431, false),
            (Refusal::BodyTooLarge, 413, false),
            (Refusal::OnlyIfCachedMiss, 504, true),
            (Refusal::AllServersDown, 502, false),
            (Refusal::AllServersTried, 502, false),
            (Refusal::UpstreamTimeout, 504, false),
            (Refusal::UpstreamFailure, 502, false),
            (Refusal::UndecodableUpstreamBody, 502, false),
            (Refusal::MalformedRequest, 400, false),
            (Refusal::InvalidRequest(Violation::MissingHost), 400, false),
            (Refusal::TargetTooLong, 414, false),
            (Refusal::ExpectationFailed, 417, false),
            (Refusal::ClientTimeout, 408, false),
            (Refusal::Internal, 500, false),
            (Refusal::Status(416), 416, false),
        ];
        for (refusal, status, has_body) in table {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(refusal.body().is_some(), has_body, "{refusal:?}");
            if let Some(body) = refusal.body() {
                assert!(body.starts_with(status.to_string().as_bytes()));
            }
        }
    }

    #[test]
    fn violations_are_400_except_a_long_target_which_is_414() {
        assert_eq!(Refusal::from(Violation::TargetTooLong).status(), 414);
        assert_eq!(Refusal::from(Violation::InvalidHost).status(), 400);
        assert_eq!(Refusal::from(Violation::FieldValueWhitespace).status(), 400);
    }

    #[test]
    fn a_refusal_survives_the_trip_through_pingora_errors() {
        let e = Refusal::BodyTooLarge.error("too big");
        assert_eq!(e.etype(), &ErrorType::HTTPStatus(413));
        assert!(!e.retry());
        assert_eq!(Refusal::of_error(&e), Some(Refusal::BodyTooLarge));
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
            of(ErrorType::HTTPStatus(416), Internal),
            Some(Refusal::Status(416))
        );
        assert_eq!(
            of(ErrorType::InternalError, Internal),
            Some(Refusal::Internal)
        );
    }
}
