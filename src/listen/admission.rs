//! Which connections a listener takes: at most `max_connections` open at once (TCP and QUIC
//! together; the rest are accepted and closed at once), and on a TLS port only TLS (plain HTTP
//! gets a plain-text 400, as nginx answers it). Refused connections are counted by reason in
//! `parapet_downstream_connections_rejected_total`.

use crate::metrics::counter_vec;
use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Peek;
use pingora::{Error, ErrorType};
use prometheus::IntCounter;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a connection was refused, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The listener already had `max_connections` open.
    MaxConnections,
    /// Plain HTTP on a TLS port.
    PlainHttpOnTls,
}

impl Rejection {
    const ALL: [Rejection; 2] = [Rejection::MaxConnections, Rejection::PlainHttpOnTls];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MaxConnections => "max_connections",
            Rejection::PlainHttpOnTls => "plain_http_on_tls",
        }
    }
}

static REJECTED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "downstream_connections_rejected_total",
        "Client connections closed at once: over the listener's max_connections, or plain HTTP on a TLS port.",
        &["listener", "reason"],
    )
});

/// Registers the rejection counters of one listener at 0 (so they show before the first one).
fn rejection_counters(listener: SocketAddr) -> [IntCounter; 2] {
    let listener = listener.to_string();
    Rejection::ALL.map(|reason| REJECTED.with_label_values(&[listener.as_str(), reason.as_str()]))
}

/// The connections one listener has open, against its `max_connections`.
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    rejected: [IntCounter; 2],
}

/// One connection's place under the limit, given back when dropped.
pub struct Slot(Arc<ConnectionLimit>);

impl ConnectionLimit {
    pub fn new(listener: SocketAddr, max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
            rejected: rejection_counters(listener),
        })
    }

    /// A place for one more connection; `None` (counted) when the listener is full.
    pub fn enter(self: &Arc<Self>) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            });
        match taken {
            Ok(_) => Some(Slot(Arc::clone(self))),
            Err(_) => {
                self.reject(Rejection::MaxConnections);
                None
            }
        }
    }

    fn is_full(&self) -> bool {
        self.open.load(Ordering::Acquire) >= self.max
    }

    pub fn reject(&self, why: Rejection) {
        self.rejected[why as usize].inc();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// nginx's answer to plain HTTP on an HTTPS port, in plain HTTP.
const PLAIN_HTTP_ON_TLS_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 54\r\nConnection: close\r\n\r\n400 Bad Request: plain HTTP was sent to an HTTPS port\n";

/// Runs on a TLS listener's connections before the handshake: a full listener closes the
/// connection without one, a client silent for `header_timeout` is dropped, and one that
/// starts with anything but a TLS handshake record gets a plain-text 400.
pub struct BeforeTls {
    pub limit: Arc<ConnectionLimit>,
    pub header_timeout: Duration,
}

#[async_trait]
impl PreTlsProcess for BeforeTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        if self.limit.is_full() {
            self.limit.reject(Rejection::MaxConnections);
            return Error::e_explain(ErrorType::AcceptError, "max_connections reached");
        }
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.header_timeout, stream.try_peek(&mut first)).await {
            Ok(Ok(true)) if first[0] == TLS_HANDSHAKE_RECORD => Ok(()),
            Ok(Ok(true)) => {
                self.limit.reject(Rejection::PlainHttpOnTls);
                answer_plain_http(stream).await;
                Error::e_explain(ErrorType::HandshakeError, "plain HTTP on a TLS port")
            }
            Ok(_) => Error::e_explain(ErrorType::HandshakeError, "client left before TLS"),
            Err(_) => Error::e_explain(
                ErrorType::HandshakeError,
                "no TLS handshake within header_timeout",
            ),
        }
    }
}

/// How long the plain-text 400 waits for the client to finish sending before closing.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes of the client's request read and dropped while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// Sends the plain-text 400, then closes the way nginx's lingering close does: our side
/// first, then read what the client still sends for a moment, so that the kernel does not
/// answer its unread request with a reset that would destroy the 400 in flight. Best effort:
/// the client may already be gone.
async fn answer_plain_http(stream: &mut L4Stream) {
    if stream.write_all(PLAIN_HTTP_ON_TLS_RESPONSE).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_admits_up_to_max_and_frees_a_slot_on_drop() {
        let limit = ConnectionLimit::new("127.0.0.1:1".parse().unwrap(), 2);
        let first = limit.enter().expect("first");
        let _second = limit.enter().expect("second");
        assert!(limit.enter().is_none());
        assert_eq!(limit.rejected[Rejection::MaxConnections as usize].get(), 1);
        drop(first);
        assert!(limit.enter().is_some());
    }

    #[test]
    fn the_plain_http_answer_declares_its_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_ON_TLS_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
