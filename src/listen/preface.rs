//! The HTTP/2 connection preface on an h2c port (RFC 9113 §3.4): telling prior-knowledge h2c
//! from HTTP/1.1 by the first bytes, and answering a broken preface with GOAWAY.
//!
//! Pingora's own h2c detection waits for 24 bytes, so on an h2c port a shorter HTTP/1 request
//! (`GET / HTTP/1.0` plus an empty line is 18 bytes, and so is a malformed line) would hang
//! there. This compares byte by byte and decides at the first byte that differs from the
//! preface. A client that began the preface (`PRI `, a method RFC 9113 reserves for it) and
//! then broke it, or did not follow it with a SETTINGS frame, gets GOAWAY(PROTOCOL_ERROR), as
//! RFC 9113 §3.4 asks, rather than an HTTP/1 answer or silence.

use pingora::protocols::Stream;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The HTTP/2 connection preface that prior-knowledge h2c clients send first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface's method: no HTTP/1 request uses it.
const PRI_METHOD: &[u8] = b"PRI ";
/// An HTTP/2 frame header: length (3 bytes), type, flags, stream (4 bytes).
const FRAME_HEADER_LEN: usize = 9;
const FRAME_TYPE_OFFSET: usize = 3;
/// The frame that must follow the client's preface.
const SETTINGS_FRAME: u8 = 0x4;

/// An empty SETTINGS frame (the server's own preface), then GOAWAY with last stream 0 and
/// PROTOCOL_ERROR (RFC 9113 §6.5, §6.8).
const SETTINGS_THEN_GOAWAY_PROTOCOL_ERROR: [u8; 26] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, empty
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes of payload, stream 0
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 0x1, // PROTOCOL_ERROR
];

/// What the first bytes on an h2c port say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    H2,
    Http1,
    /// The h2 preface begun and broken.
    Invalid,
    /// The client left, or stayed silent past the header timeout.
    Gone,
}

/// Peeks at the first bytes (nothing is consumed) for at most `timeout`.
pub async fn read(stream: &mut Stream, timeout: Duration) -> Preface {
    tokio::time::timeout(timeout, compare(stream))
        .await
        .unwrap_or(Preface::Gone)
}

async fn compare(stream: &mut Stream) -> Preface {
    let mut seen = [0u8; H2_PREFACE.len() + FRAME_HEADER_LEN];
    for length in 1..=H2_PREFACE.len() {
        match stream.try_peek(&mut seen[..length]).await {
            Ok(true) => {}
            Ok(false) => return Preface::Http1,
            Err(_) => return Preface::Gone,
        }
        if let Some(verdict) = verdict(&seen[..length]) {
            return verdict;
        }
    }
    // The h2 crate would take any first frame; RFC 9113 §3.4 wants SETTINGS.
    match stream.try_peek(&mut seen).await {
        Ok(true) if seen[H2_PREFACE.len() + FRAME_TYPE_OFFSET] == SETTINGS_FRAME => Preface::H2,
        Ok(true) => Preface::Invalid,
        Ok(false) => Preface::H2,
        Err(_) => Preface::Gone,
    }
}

/// The verdict once `seen` (a prefix of the client's bytes) ends in a byte that differs from
/// the preface; `None` while it still matches.
fn verdict(seen: &[u8]) -> Option<Preface> {
    let last = seen.len() - 1;
    if seen[last] == H2_PREFACE[last] {
        return None;
    }
    Some(if seen.len() > PRI_METHOD.len() {
        Preface::Invalid
    } else {
        Preface::Http1
    })
}

/// Answers a broken preface: SETTINGS, GOAWAY(PROTOCOL_ERROR), close.
pub async fn refuse(stream: &mut Stream) {
    // Best effort: the client may already be gone.
    let _ = stream.write_all(&SETTINGS_THEN_GOAWAY_PROTOCOL_ERROR).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_byte_decides() {
        let table: [(&[u8], Option<Preface>); 7] = [
            (b"G", Some(Preface::Http1)),
            (b"PRO", Some(Preface::Http1)),
            (b"PRI", None),
            (b"PRI /", Some(Preface::Invalid)),
            (b"PRI * HTTP/1.1", Some(Preface::Invalid)),
            (b"PRI * HTTP/2.0\r\n\r\nXX", Some(Preface::Invalid)),
            (H2_PREFACE, None),
        ];
        for (seen, expected) in table {
            assert_eq!(verdict(seen), expected, "{}", seen.escape_ascii());
        }
    }
}
