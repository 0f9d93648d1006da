//! Streaming, bounded decompressors: for a client that does not accept the coding the origin
//! used.
//!
//! A body is decoded piece by piece as it arrives, never whole. Two bounds stop a decompression
//! bomb before it takes memory: each piece may inflate to at most `max_ratio` times its size
//! (plus [`RATIO_ALLOWANCE_BYTES`]), so one call holds at most about `max_ratio` × 64 KiB (the
//! largest piece Pingora reads); and the whole body may not pass `max_decompressed_size`.
//! Decoders write into a sink that refuses output past the bound, so the check happens while
//! inflating, in pieces of at most the decoder's buffer, not after.
//!
//! Decoder state besides the output is the window: 32 KiB for gzip, up to 16 MiB for brotli,
//! and at most 8 MiB for zstd (RFC 9659 caps the `zstd` content coding's window at 8 MiB;
//! larger frames are refused).

use super::negotiate::Algorithm;
use bytes::Bytes;
use std::io::{self, Write};

/// Output every piece may have on top of `max_ratio` × its size: tiny pieces (a few bytes that
/// finish a long match) legitimately inflate far beyond any ratio.
pub const RATIO_ALLOWANCE_BYTES: u64 = 1 << 20;
/// Largest zstd window accepted (`2^23` = 8 MiB, RFC 9659 §3).
const ZSTD_MAX_WINDOW_LOG: u32 = 23;
/// Brotli's internal output buffer (also the granularity of the bound check).
const BROTLI_BUFFER_BYTES: usize = 16 * 1024;

/// The limits on one decoded body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most decoded bytes one body may produce.
    pub max_decompressed_size: u64,
    /// Most decoded bytes per compressed byte in one piece (plus the allowance).
    pub max_ratio: u64,
}

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The compressed body is malformed or ends early.
    #[error("the compressed body is corrupt or truncated")]
    Corrupt,
    /// The body inflates past `max_ratio` or `max_decompressed_size`.
    #[error("the decoded body exceeds max_ratio or max_decompressed_size")]
    OverBound,
}

impl DecodeError {
    pub const ALL: [DecodeError; 2] = [DecodeError::Corrupt, DecodeError::OverBound];

    /// The `reason` label of `parapet_decompression_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Corrupt => "corrupt",
            DecodeError::OverBound => "over_bound",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Collects decoded output and refuses any past `limit`.
#[derive(Default)]
struct Sink {
    out: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.out.len() + data.len() > self.limit {
            self.over = true;
            return Err(io::Error::other("decoded output over the bound"));
        }
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A decompressor for one response body.
pub struct Decoder {
    inner: Inner,
    bounds: Bounds,
    total_in: u64,
    total_out: u64,
}

enum Inner {
    Gzip(Gzip),
    Br(Box<brotli::DecompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
}

impl Inner {
    fn sink(&mut self) -> &mut Sink {
        match self {
            Inner::Gzip(gzip) => gzip.sink(),
            Inner::Br(decoder) => decoder.get_mut(),
            Inner::Zstd(decoder) => decoder.get_mut(),
        }
    }

    /// Decodes `input` and pushes all the output it yields into the sink.
    fn write(&mut self, input: &[u8]) -> io::Result<()> {
        match self {
            Inner::Gzip(gzip) => gzip.write(input),
            Inner::Br(decoder) => {
                decoder.write_all(input)?;
                // With its input used up, the brotli writer may still hold output that did
                // not fit its buffer; empty writes push it out.
                loop {
                    let before = decoder.get_ref().out.len();
                    let _pushed_only = decoder.write(&[])?;
                    if decoder.get_ref().out.len() == before {
                        return Ok(());
                    }
                }
            }
            Inner::Zstd(decoder) => {
                decoder.write_all(input)?;
                decoder.flush()
            }
        }
    }

    /// Drains what the decoder still holds and fails when the stream is incomplete.
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Inner::Gzip(gzip) => gzip.finish(),
            Inner::Br(decoder) => decoder.close(),
            Inner::Zstd(decoder) => decoder.do_finish(),
        }
    }
}

/// gzip, member after member (RFC 1952 §2.2: a file may hold several).
///
/// flate2's writer keeps up to 32 KiB of output back until its next write, and its `flush`
/// demands a complete stream; empty writes push the held output to the sink instead.
struct Gzip {
    member: Option<flate2::write::GzDecoder<Sink>>,
}

impl Gzip {
    fn new() -> Gzip {
        Gzip {
            member: Some(flate2::write::GzDecoder::new(Sink::default())),
        }
    }

    fn decoder(&mut self) -> &mut flate2::write::GzDecoder<Sink> {
        self.member
            .as_mut()
            .expect("a member decoder is always present between calls")
    }

    fn sink(&mut self) -> &mut Sink {
        self.decoder().get_mut()
    }

    fn write(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            let taken = self.decoder().write(input)?;
            if taken == 0 {
                self.next_member()?;
                continue;
            }
            input = &input[taken..];
        }
        self.drain()
    }

    /// Checks the finished member's CRC and length, then starts the next member.
    fn next_member(&mut self) -> io::Result<()> {
        let finished = self
            .member
            .take()
            .expect("a member decoder is always present between calls");
        let sink = finished.finish()?;
        self.member = Some(flate2::write::GzDecoder::new(sink));
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        loop {
            let before = self.sink().out.len();
            let _pushed_only = self.decoder().write(&[])?;
            if self.sink().out.len() == before {
                return Ok(());
            }
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.decoder().try_finish()
    }
}

impl Decoder {
    pub fn new(algorithm: Algorithm, bounds: Bounds) -> io::Result<Decoder> {
        let inner = match algorithm {
            Algorithm::Gzip => Inner::Gzip(Gzip::new()),
            Algorithm::Br => Inner::Br(Box::new(brotli::DecompressorWriter::new(
                Sink::default(),
                BROTLI_BUFFER_BYTES,
            ))),
            Algorithm::Zstd => {
                let mut decoder = zstd::stream::write::Decoder::new(Sink::default())?;
                decoder.window_log_max(ZSTD_MAX_WINDOW_LOG)?;
                Inner::Zstd(decoder)
            }
        };
        Ok(Decoder {
            inner,
            bounds,
            total_in: 0,
            total_out: 0,
        })
    }

    /// Decodes `input` and returns the bytes it yields; with `end`, also checks that the
    /// compressed stream is complete. A body with no bytes at all decodes to nothing.
    pub fn decode(&mut self, input: &[u8], end: bool) -> Result<Bytes, DecodeError> {
        self.total_in += input.len() as u64;
        if end && self.total_in == 0 {
            return Ok(Bytes::new());
        }
        let remaining = self
            .bounds
            .max_decompressed_size
            .saturating_sub(self.total_out);
        let per_piece = (input.len() as u64)
            .saturating_mul(self.bounds.max_ratio)
            .saturating_add(RATIO_ALLOWANCE_BYTES);
        let limit = usize::try_from(remaining.min(per_piece)).unwrap_or(usize::MAX);
        let sink = self.inner.sink();
        sink.limit = limit;
        sink.over = false;
        let mut result = self.inner.write(input);
        if result.is_ok() && end {
            result = self.inner.finish();
        }
        let sink = self.inner.sink();
        let out = std::mem::take(&mut sink.out);
        match result {
            Ok(()) => {
                self.total_out += out.len() as u64;
                Ok(out.into())
            }
            Err(_) if sink.over => Err(DecodeError::OverBound),
            Err(_) => Err(DecodeError::Corrupt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::encoder::{Encoder, Levels};

    const LEVELS: Levels = Levels {
        gzip: 6,
        brotli: 5,
        zstd: 3,
    };
    const GENEROUS: Bounds = Bounds {
        max_decompressed_size: 1 << 30,
        max_ratio: 100,
    };

    fn compress(algorithm: Algorithm, body: &[u8]) -> Vec<u8> {
        let mut encoder = Encoder::new(algorithm, &LEVELS).expect("encoder");
        encoder.encode(body, true).expect("encode").to_vec()
    }

    fn decode_in_pieces(
        algorithm: Algorithm,
        data: &[u8],
        piece: usize,
        bounds: Bounds,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = Decoder::new(algorithm, bounds).expect("decoder");
        let mut out = Vec::new();
        let mut pieces = data.chunks(piece).peekable();
        if pieces.peek().is_none() {
            return decoder.decode(&[], true).map(|b| b.to_vec());
        }
        while let Some(chunk) = pieces.next() {
            out.extend_from_slice(&decoder.decode(chunk, pieces.peek().is_none())?);
        }
        Ok(out)
    }

    fn text(len: usize) -> Vec<u8> {
        (0..)
            .flat_map(|i: u32| {
                format!("line {i} of some log text, value={}\n", i * 7919 % 1000).into_bytes()
            })
            .take(len)
            .collect()
    }

    #[test]
    fn every_algorithm_decodes_what_it_encoded() {
        let body = text(300_000);
        for algorithm in Algorithm::ALL {
            let data = compress(algorithm, &body);
            for piece in [1, 1000, 65536] {
                let decoded = decode_in_pieces(algorithm, &data, piece, GENEROUS);
                assert_eq!(
                    decoded.as_deref(),
                    Ok(body.as_slice()),
                    "{algorithm:?}/{piece}"
                );
            }
        }
    }

    #[test]
    fn each_flushed_piece_decodes_before_the_end_of_the_body() {
        for algorithm in Algorithm::ALL {
            let mut encoder = Encoder::new(algorithm, &LEVELS).expect("encoder");
            let mut decoder = Decoder::new(algorithm, GENEROUS).expect("decoder");
            for piece in [&b"data: first\n\n"[..], b"data: second\n\n", &text(100_000)] {
                let compressed = encoder.encode(piece, false).expect("encode");
                let decoded = decoder.decode(&compressed, false).expect("decode");
                assert!(
                    decoded.as_ref() == piece,
                    "{algorithm:?}: {} bytes decoded of {}",
                    decoded.len(),
                    piece.len()
                );
            }
            let tail = encoder.encode(&[], true).expect("finish");
            assert_eq!(decoder.decode(&tail, true).map(|b| b.len()), Ok(0));
        }
    }

    #[test]
    fn several_gzip_members_decode_as_one_body() {
        let mut data = compress(Algorithm::Gzip, b"first member, ");
        data.extend_from_slice(&compress(Algorithm::Gzip, b"second member"));
        let decoded = decode_in_pieces(Algorithm::Gzip, &data, 7, GENEROUS);
        assert_eq!(decoded.as_deref(), Ok(&b"first member, second member"[..]));
    }

    #[test]
    fn a_truncated_stream_is_corrupt() {
        let body = text(100_000);
        for algorithm in Algorithm::ALL {
            let data = compress(algorithm, &body);
            for cut in [data.len() / 2, data.len() - 1] {
                let decoded = decode_in_pieces(algorithm, &data[..cut], 4096, GENEROUS);
                assert_eq!(
                    decoded,
                    Err(DecodeError::Corrupt),
                    "{algorithm:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        let garbage: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for algorithm in Algorithm::ALL {
            let decoded = decode_in_pieces(algorithm, &garbage, 1000, GENEROUS);
            assert_eq!(decoded, Err(DecodeError::Corrupt), "{algorithm:?}");
        }
    }

    #[test]
    fn a_flipped_byte_inside_a_gzip_body_is_caught_by_its_checksum_at_the_latest() {
        let body = text(50_000);
        let mut data = compress(Algorithm::Gzip, &body);
        let middle = data.len() / 2;
        data[middle] ^= 0x55;
        let decoded = decode_in_pieces(Algorithm::Gzip, &data, 4096, GENEROUS);
        assert_ne!(decoded.as_deref(), Ok(body.as_slice()));
        assert!(decoded.is_err());
    }

    #[test]
    fn trailing_garbage_after_a_complete_stream_is_corrupt() {
        for algorithm in Algorithm::ALL {
            let mut data = compress(algorithm, b"hello");
            data.extend_from_slice(b"this is not compressed data at all");
            let decoded = decode_in_pieces(algorithm, &data, 4096, GENEROUS);
            assert_eq!(decoded, Err(DecodeError::Corrupt), "{algorithm:?}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_ratio_bound() {
        let zeros = vec![0u8; 64 << 20];
        for algorithm in Algorithm::ALL {
            let data = compress(algorithm, &zeros);
            assert!(data.len() < 1 << 20, "{algorithm:?} bomb is small");
            let decoded = decode_in_pieces(algorithm, &data, 65536, GENEROUS);
            assert_eq!(decoded, Err(DecodeError::OverBound), "{algorithm:?}");
        }
    }

    #[test]
    fn a_body_stops_at_the_size_bound() {
        let body = text(3 << 20);
        let tight = Bounds {
            max_decompressed_size: 1 << 20,
            max_ratio: 1000,
        };
        for algorithm in Algorithm::ALL {
            let data = compress(algorithm, &body);
            let decoded = decode_in_pieces(algorithm, &data, 16384, tight);
            assert_eq!(decoded, Err(DecodeError::OverBound), "{algorithm:?}");
        }
    }

    #[test]
    fn a_body_without_bytes_and_an_empty_stream_both_decode_to_nothing() {
        for algorithm in Algorithm::ALL {
            let decoded = decode_in_pieces(algorithm, &[], 4096, GENEROUS);
            assert_eq!(decoded, Ok(Vec::new()), "{algorithm:?} no bytes");
            let data = compress(algorithm, b"");
            let decoded = decode_in_pieces(algorithm, &data, 4096, GENEROUS);
            assert_eq!(decoded, Ok(Vec::new()), "{algorithm:?} empty stream");
        }
    }

    #[test]
    fn a_zstd_frame_with_a_window_over_8_mib_is_refused() {
        let body = text(200_000);
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        encoder.long_distance_matching(true).expect("ldm");
        encoder.window_log(27).expect("window");
        encoder.write_all(&body).expect("write");
        let data = encoder.finish().expect("finish");
        let decoded = decode_in_pieces(Algorithm::Zstd, &data, 4096, GENEROUS);
        assert_eq!(decoded, Err(DecodeError::Corrupt));
    }
}
