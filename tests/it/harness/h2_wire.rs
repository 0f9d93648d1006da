//! HTTP/2 on the wire, for requests the h2 client library would refuse to send: frames read
//! back from raw bytes, and a HEADERS frame written with plain HPACK literals.

use super::CLIENT_TIMEOUT;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADERS: u8 = 0x1;
pub const FRAME_RST_STREAM: u8 = 0x3;
pub const FRAME_GOAWAY: u8 = 0x7;
/// The PROTOCOL_ERROR code as it appears in RST_STREAM and GOAWAY payloads.
pub const H2_PROTOCOL_ERROR: [u8; 4] = [0, 0, 0, 1];

/// One frame a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// The complete frames in `bytes` (a partial last frame is dropped).
pub fn h2_frames(mut bytes: &[u8]) -> Vec<H2Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + length {
            break;
        }
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        frames.push(H2Frame {
            kind: bytes[3],
            stream,
            payload: bytes[9..9 + length].to_vec(),
        });
        bytes = &bytes[9 + length..];
    }
    frames
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("frame length");
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// An empty SETTINGS frame (the client's half of the preface).
pub fn h2_settings() -> Vec<u8> {
    frame(0x4, 0, 0, &[])
}

/// A HEADERS frame ending the headers and the stream, each field a literal without indexing
/// (RFC 7541 §6.2.2) so no field is changed or refused on the client side.
pub fn h2_headers(stream: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        for text in [name, value] {
            let length = u8::try_from(text.len()).ok().filter(|n| *n < 0x7f);
            block.push(length.expect("short HPACK literal"));
            block.extend(text.as_bytes());
        }
    }
    const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
    frame(FRAME_HEADERS, END_STREAM_AND_HEADERS, stream, &block)
}

/// Opens an h2c connection, sends one request on stream 1 with `fields`, and returns the
/// frames received until the server answers or resets stream 1, or closes the connection.
pub async fn h2c_exchange(addr: SocketAddr, fields: &[(&str, &str)]) -> Vec<H2Frame> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let request = [H2_PREFACE, &h2_settings(), &h2_headers(1, fields)].concat();
    stream.write_all(&request).await.expect("write h2 request");
    let mut bytes = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let frames = h2_frames(&bytes);
            let answered = frames.iter().any(|f| {
                f.stream == 1 && matches!(f.kind, FRAME_HEADERS | FRAME_RST_STREAM)
                    || f.kind == FRAME_GOAWAY
            });
            if answered {
                return frames;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return frames,
                Ok(n) => bytes.extend(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(CLIENT_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("no answer on h2 stream 1 within {CLIENT_TIMEOUT:?}"))
}
