//! Streaming compressors: one per response, fed the body piece by piece.
//!
//! Each piece is flushed through the compressor (gzip sync flush, brotli flush, zstd block end),
//! so whatever the origin has sent is decodable by the client at once: streamed responses
//! (server-sent events, long polls, progressively flushed pages) stay live, and the
//! compressor holds no more than its window between pieces. The cost is a few bytes per piece.

use super::negotiate::Algorithm;
use bytes::Bytes;
use std::io::{self, Write};

/// Brotli window: 1 MiB (`lgwin` 20). The default 4 MiB gains nothing measurable on web
/// bodies and costs memory per concurrent response.
const BROTLI_WINDOW_BITS: u32 = 20;
/// Brotli's internal output buffer.
const BROTLI_BUFFER_BYTES: usize = 16 * 1024;

/// Compression levels per algorithm (validated: gzip 1..=9, brotli 0..=11, zstd 1..=19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub gzip: u32,
    pub brotli: u32,
    pub zstd: i32,
}

/// A compressor for one response body.
pub struct Encoder {
    inner: Inner,
}

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    // `into_inner` finishes a brotli stream, so the writer is taken out at the end.
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    pub fn new(algorithm: Algorithm, levels: &Levels) -> io::Result<Encoder> {
        let inner = match algorithm {
            Algorithm::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip),
            )),
            Algorithm::Br => Inner::Br(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER_BYTES,
                levels.brotli,
                BROTLI_WINDOW_BITS,
            )))),
            Algorithm::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?;
                // The content size is unknown while streaming; leave it out of the frame.
                encoder.include_contentsize(false)?;
                Inner::Zstd(encoder)
            }
        };
        Ok(Encoder { inner })
    }

    /// Compresses `input` and returns every byte the client can decode so far; with `end`,
    /// also the end of the stream (after which the encoder must not be used again).
    pub fn encode(&mut self, input: &[u8], end: bool) -> io::Result<Bytes> {
        match &mut self.inner {
            Inner::Gzip(encoder) => {
                encoder.write_all(input)?;
                if end {
                    encoder.try_finish()?;
                } else {
                    encoder.flush()?;
                }
                Ok(std::mem::take(encoder.get_mut()).into())
            }
            Inner::Br(slot) => {
                let encoder = slot
                    .as_mut()
                    .ok_or_else(|| io::Error::other("brotli stream already finished"))?;
                encoder.write_all(input)?;
                if end {
                    let writer = slot.take().expect("checked above: the writer is present");
                    return Ok(writer.into_inner().into());
                }
                encoder.flush()?;
                Ok(std::mem::take(encoder.get_mut()).into())
            }
            Inner::Zstd(encoder) => {
                encoder.write_all(input)?;
                if end {
                    encoder.do_finish()?;
                } else {
                    encoder.flush()?;
                }
                Ok(std::mem::take(encoder.get_mut()).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const LEVELS: Levels = Levels {
        gzip: 1,
        brotli: 3,
        zstd: 1,
    };

    fn sample() -> Vec<u8> {
        (0..20_000)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"item {}\"}},", i % 97).into_bytes())
            .collect()
    }

    pub(crate) fn decode_all(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match algorithm {
            Algorithm::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .expect("gzip");
            }
            Algorithm::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .expect("br");
            }
            Algorithm::Zstd => out = zstd::stream::decode_all(data).expect("zstd"),
        }
        out
    }

    #[test]
    fn every_algorithm_round_trips_a_body_sent_in_pieces() {
        let body = sample();
        for algorithm in Algorithm::ALL {
            let mut encoder = Encoder::new(algorithm, &LEVELS).expect("encoder");
            let mut compressed = Vec::new();
            for piece in body.chunks(7_000) {
                compressed.extend_from_slice(&encoder.encode(piece, false).expect("encode"));
            }
            compressed.extend_from_slice(&encoder.encode(&[], true).expect("finish"));
            assert!(
                compressed.len() < body.len() / 4,
                "{algorithm:?} compresses"
            );
            assert_eq!(decode_all(algorithm, &compressed), body, "{algorithm:?}");
        }
    }

    #[test]
    fn each_piece_is_decodable_before_the_end() {
        let piece = b"data: an event that must reach the client now\n\n";
        let mut encoder = Encoder::new(Algorithm::Gzip, &LEVELS).expect("encoder");
        let flushed = encoder.encode(piece, false).expect("encode");
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        decoder.write_all(&flushed).expect("decode");
        decoder.flush().expect("flush");
        assert_eq!(decoder.get_ref().as_slice(), piece.as_slice());
    }

    #[test]
    fn an_empty_body_still_makes_a_valid_stream() {
        for algorithm in Algorithm::ALL {
            let mut encoder = Encoder::new(algorithm, &LEVELS).expect("encoder");
            let stream = encoder.encode(&[], true).expect("finish");
            assert!(decode_all(algorithm, &stream).is_empty(), "{algorithm:?}");
        }
    }
}
