//! `Expect` (RFC 9110 §10.1.1), answered the way nginx answers it: `100 Continue` once the
//! request is admitted and its body will be read, the final status at once when it is refused
//! (the connection then closes, since the body was never read), 417 for any other expectation.
//! The field is hop-by-hop in effect: the upstream never sees it (`headers`).

use http::header::EXPECT;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// What the client's `Expect` asks of us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expectation {
    #[default]
    Nothing,
    /// `100-continue`: the client waits for 100 (or a final status) before sending the body.
    Continue,
    /// Anything else: 417.
    Unsupported,
}

impl Expectation {
    /// An HTTP/1.0 client cannot take a 100, so its expectation is ignored (RFC 9110 §10.1.1).
    pub fn of(req: &RequestHeader) -> Expectation {
        let Some(value) = req.headers.get(EXPECT) else {
            return Expectation::Nothing;
        };
        match value.as_bytes() {
            _ if req.version <= http::Version::HTTP_10 => Expectation::Nothing,
            v if v.eq_ignore_ascii_case(b"100-continue") => Expectation::Continue,
            _ => Expectation::Unsupported,
        }
    }
}

/// Sends `100 Continue` when the admitted request expects it and has a body to send.
pub async fn send_continue(session: &mut Session, expectation: Expectation) -> pingora::Result<()> {
    if expectation == Expectation::Continue && !session.as_mut().is_body_empty() {
        session.as_mut().write_continue_response().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_100_continue_is_met_and_http_1_0_expects_nothing() {
        let of = |version: http::Version, value: Option<&str>| {
            let mut req = RequestHeader::build("POST", b"/", None).unwrap();
            req.set_version(version);
            if let Some(value) = value {
                req.insert_header(EXPECT, value).unwrap();
            }
            Expectation::of(&req)
        };
        use http::Version;
        assert_eq!(of(Version::HTTP_11, None), Expectation::Nothing);
        assert_eq!(
            of(Version::HTTP_11, Some("100-continue")),
            Expectation::Continue
        );
        assert_eq!(
            of(Version::HTTP_11, Some("100-Continue")),
            Expectation::Continue
        );
        assert_eq!(
            of(Version::HTTP_2, Some("100-continue")),
            Expectation::Continue
        );
        assert_eq!(
            of(Version::HTTP_11, Some("200-ok")),
            Expectation::Unsupported
        );
        assert_eq!(
            of(Version::HTTP_10, Some("100-continue")),
            Expectation::Nothing
        );
    }
}
