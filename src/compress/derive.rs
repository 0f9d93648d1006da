//! Derived variants: one stored representation served in every coding a client negotiates.
//!
//! The cache stores the origin's representation once. A client that negotiates another coding
//! gets it derived from the stored copy: an identity body compressed, or an origin coding
//! decoded (and re-encoded when the client wants a coding of its own). This module decides what
//! a stored representation allows ([`Derivable::of`], once per stored response) and what a
//! request needs from it ([`plan`]), runs one derivation ([`Transcoder`], [`derive_whole`]) and
//! rewrites the stored header for it ([`rewrite_header`]). The cache store keeps the results,
//! one per coding, beside the stored body.

use super::decoder::{DecodeError, Decoder};
use super::encoder::Encoder;
use super::metrics::COMPRESSION;
use super::negotiate::{Algorithm, Encoding};
use super::policy::{self, Action, Coding};
use super::{CompressionConfig, RequestCompression};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::ResponseHeader;
use std::io;
use std::time::Instant;

/// What a stored representation allows, decided once from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derivable {
    /// Served as stored to every client: no-transform, a coding Parapet does not know or
    /// several, an identity body of a type or length that is not compressed, no body.
    AsStored,
    /// An identity body of a compressible type: every coding can be derived.
    Identity,
    /// A body in one known coding; `compressible`: once decoded it may be re-encoded.
    Coded {
        algorithm: Algorithm,
        compressible: bool,
    },
}

impl Derivable {
    /// What the stored response with this header allows under `config`.
    pub fn of(header: &ResponseHeader, config: &CompressionConfig) -> Derivable {
        if !config.enabled
            || header.status.is_informational()
            || matches!(header.status.as_u16(), 204 | 206 | 304)
            || policy::has_no_transform(&header.headers)
        {
            return Derivable::AsStored;
        }
        match policy::content_coding(&header.headers) {
            Coding::Identity if policy::compressible(&header.headers, config) => {
                Derivable::Identity
            }
            Coding::Identity | Coding::Other => Derivable::AsStored,
            // The stored length is the coded one: the decoded body is longer, so only its type
            // decides whether it is worth re-encoding.
            Coding::One(algorithm) => Derivable::Coded {
                algorithm,
                compressible: policy::compressible_type(&header.headers, config),
            },
        }
    }

    /// True when clients may be sent something else than the stored body, so the response
    /// varies on `Accept-Encoding`.
    pub fn varies(self) -> bool {
        self != Derivable::AsStored
    }
}

/// A derivation: the stored coding `from` turned into `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Derivation {
    pub from: Encoding,
    pub to: Encoding,
}

impl Derivation {
    /// Slot of the target coding among a stored response's variants (`0..VARIANT_SLOTS`).
    pub fn slot(self) -> usize {
        match self.to {
            Encoding::Identity => 0,
            Encoding::Compressed(algorithm) => 1 + algorithm.index(),
        }
    }

    /// The header edits the derivation makes.
    fn action(self) -> Action {
        match (self.from, self.to) {
            (_, Encoding::Compressed(algorithm)) => Action::Compress(algorithm),
            (Encoding::Compressed(algorithm), Encoding::Identity) => Action::Decompress(algorithm),
            (Encoding::Identity, Encoding::Identity) => Action::Untouched,
        }
    }
}

/// How many codings a stored response can be derived into: identity, br, zstd, gzip.
pub const VARIANT_SLOTS: usize = 4;

/// The derivation `request` needs from a stored representation, `None` to serve it as stored.
/// A request with `Range` takes the stored representation whenever it can, so that its ranges
/// are ranges of the stored bytes.
pub fn plan(
    stored: Derivable,
    request: &RequestCompression,
    range_requested: bool,
) -> Option<Derivation> {
    let plan = request.plan.as_ref()?;
    match stored {
        Derivable::AsStored => None,
        Derivable::Identity => match plan.preferred {
            Encoding::Identity => None,
            Encoding::Compressed(_) if range_requested && plan.accept.accepts_identity() => None,
            Encoding::Compressed(_) => Some(Derivation {
                from: Encoding::Identity,
                to: plan.preferred,
            }),
        },
        Derivable::Coded {
            algorithm,
            compressible,
        } => {
            if plan.accept.accepts(algorithm) {
                return None;
            }
            let to = if compressible {
                plan.preferred
            } else {
                Encoding::Identity
            };
            Some(Derivation {
                from: Encoding::Compressed(algorithm),
                to,
            })
        }
    }
}

/// Rewrites a stored response's header for a derived body of `length` bytes (`None`: not
/// known yet, sent chunked): `Content-Encoding`, weakened ETag, `Vary`, no digests and no
/// `Accept-Ranges`. A 304 keeps only the validator and `Vary` edits.
pub fn rewrite_header(
    derivation: Derivation,
    header: &mut ResponseHeader,
    length: Option<usize>,
) -> pingora::Result<()> {
    if header.status == http::StatusCode::NOT_MODIFIED {
        return policy::apply_validators_only(header);
    }
    policy::apply(derivation.action(), header)?;
    match length {
        Some(length) => {
            header.remove_header(&TRANSFER_ENCODING);
            header.insert_header(CONTENT_LENGTH, length)
        }
        None => header.insert_header(TRANSFER_ENCODING, HeaderValue::from_static("chunked")),
    }
}

/// Why a derivation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    #[error("cannot start the coder: {0}")]
    Start(io::Error),
    #[error("compressing: {0}")]
    Encode(io::Error),
    #[error("decoding the stored body: {0}")]
    Decode(DecodeError),
}

/// Turns a body in one coding into another, piece by piece; counted in the compression
/// metrics like the upstream module's work.
pub struct Transcoder {
    decoder: Option<(Algorithm, Decoder)>,
    encoder: Option<(Algorithm, Encoder)>,
}

impl Transcoder {
    pub fn new(
        derivation: Derivation,
        config: &CompressionConfig,
    ) -> Result<Transcoder, DeriveError> {
        let decoder = match derivation.from {
            Encoding::Identity => None,
            Encoding::Compressed(algorithm) => {
                let decoder = Decoder::new(algorithm, config.bounds).map_err(DeriveError::Start)?;
                COMPRESSION.decompressions[algorithm.index()].inc();
                Some((algorithm, decoder))
            }
        };
        let encoder = match derivation.to {
            Encoding::Identity => None,
            Encoding::Compressed(algorithm) => {
                let encoder =
                    Encoder::new(algorithm, &config.levels).map_err(DeriveError::Start)?;
                COMPRESSION.compressions[algorithm.index()].inc();
                Some((algorithm, encoder))
            }
        };
        Ok(Transcoder { decoder, encoder })
    }

    /// Transforms `input` (with `end`, the end of the body too) and returns what it yields.
    pub fn push(&mut self, input: &[u8], end: bool) -> Result<Bytes, DeriveError> {
        let decoded;
        let plain = match &mut self.decoder {
            Some((algorithm, decoder)) => {
                decoded =
                    decode_counted(*algorithm, decoder, input, end).map_err(DeriveError::Decode)?;
                &decoded[..]
            }
            None => input,
        };
        match &mut self.encoder {
            Some((algorithm, encoder)) => {
                encode_counted(*algorithm, encoder, plain, end).map_err(DeriveError::Encode)
            }
            None => Ok(Bytes::copy_from_slice(plain)),
        }
    }
}

/// A stored body is fed to the coders in pieces of this size, the most the upstream module
/// hands them at once, so the decoders' per-piece bounds apply as they do there.
pub const DERIVE_PIECE_BYTES: usize = 64 * 1024;

/// Derives a whole stored body at once (fed in pieces, so the coders keep their usual bounds).
pub fn derive_whole(
    derivation: Derivation,
    body: &[u8],
    config: &CompressionConfig,
) -> Result<Bytes, DeriveError> {
    let mut transcoder = Transcoder::new(derivation, config)?;
    let mut out = BytesMut::new();
    let mut pieces = body.chunks(DERIVE_PIECE_BYTES).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&transcoder.push(&[], true)?);
    }
    while let Some(piece) = pieces.next() {
        let end = pieces.peek().is_none();
        out.extend_from_slice(&transcoder.push(piece, end)?);
    }
    Ok(out.freeze())
}

/// Runs the encoder over one piece, counting bytes and time by algorithm.
pub(super) fn encode_counted(
    algorithm: Algorithm,
    encoder: &mut Encoder,
    input: &[u8],
    end: bool,
) -> io::Result<Bytes> {
    let index = algorithm.index();
    let started = Instant::now();
    let result = encoder.encode(input, end);
    COMPRESSION.seconds[index].inc_by(started.elapsed().as_secs_f64());
    let output = result?;
    COMPRESSION.bytes_in[index].inc_by(input.len() as u64);
    COMPRESSION.bytes_out[index].inc_by(output.len() as u64);
    Ok(output)
}

/// Runs the decoder over one piece, counting failures by algorithm and reason.
pub(super) fn decode_counted(
    algorithm: Algorithm,
    decoder: &mut Decoder,
    input: &[u8],
    end: bool,
) -> Result<Bytes, DecodeError> {
    decoder.decode(input, end).inspect_err(|e| {
        COMPRESSION.decompression_errors[algorithm.index()][e.index()].inc();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;
    use std::sync::Arc;
    use Algorithm::{Br, Gzip, Zstd};

    fn header(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut header = ResponseHeader::build(200, None).expect("status");
        for (name, value) in headers {
            header
                .append_header(name.to_string(), *value)
                .expect("header");
        }
        header
    }

    fn request(accept_encoding: Option<&str>) -> RequestCompression {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        if let Some(value) = accept_encoding {
            req.insert_header("accept-encoding", value).expect("header");
        }
        RequestCompression::new(Some(&Arc::new(CompressionConfig::default())), &req)
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn an_identity_body_of_a_listed_type_can_be_derived_into_every_coding() {
        let config = CompressionConfig::default();
        assert_eq!(
            Derivable::of(&header(&[JSON]), &config),
            Derivable::Identity
        );
        assert_eq!(
            Derivable::of(&header(&[("content-type", "image/png")]), &config),
            Derivable::AsStored
        );
        assert_eq!(
            Derivable::of(&header(&[JSON, ("cache-control", "no-transform")]), &config),
            Derivable::AsStored
        );
        assert_eq!(
            Derivable::of(&header(&[JSON, ("content-encoding", "gzip")]), &config),
            Derivable::Coded {
                algorithm: Gzip,
                compressible: true
            }
        );
        assert_eq!(
            Derivable::of(&header(&[JSON, ("content-encoding", "gzip, br")]), &config),
            Derivable::AsStored
        );
        // A coded body shorter than min_length may decode to far more: its type decides.
        let short_gzip = [JSON, ("content-encoding", "gzip"), ("content-length", "90")];
        assert_eq!(
            Derivable::of(&header(&short_gzip), &config),
            Derivable::Coded {
                algorithm: Gzip,
                compressible: true
            }
        );
    }

    #[test]
    fn each_client_gets_its_preferred_coding_derived_from_the_stored_one() {
        let to = |stored, ae, range| plan(stored, &request(ae), range).map(|d| d.to);
        let identity = Derivable::Identity;
        assert_eq!(
            to(identity, Some("gzip, br"), false),
            Some(Encoding::Compressed(Br))
        );
        assert_eq!(to(identity, None, false), None);
        assert_eq!(
            to(identity, Some("gzip, br"), true),
            None,
            "ranges of stored bytes"
        );
        let gzip = Derivable::Coded {
            algorithm: Gzip,
            compressible: true,
        };
        assert_eq!(
            to(gzip, Some("gzip, br"), false),
            None,
            "accepted as stored"
        );
        assert_eq!(
            to(gzip, Some("zstd"), false),
            Some(Encoding::Compressed(Zstd))
        );
        assert_eq!(to(gzip, None, false), Some(Encoding::Identity));
        let png_gzip = Derivable::Coded {
            algorithm: Gzip,
            compressible: false,
        };
        assert_eq!(to(png_gzip, Some("br"), false), Some(Encoding::Identity));
        assert_eq!(to(Derivable::AsStored, Some("br"), false), None);
    }

    #[test]
    fn a_derived_body_decodes_to_the_stored_one() {
        let config = CompressionConfig::default();
        let body: Vec<u8> = (0..200_000).map(|i| b"abcdefgh"[i % 8]).collect();
        let gzip = derive_whole(
            Derivation {
                from: Encoding::Identity,
                to: Encoding::Compressed(Gzip),
            },
            &body,
            &config,
        )
        .expect("gzip");
        assert!(gzip.len() < body.len() / 10);
        let br = derive_whole(
            Derivation {
                from: Encoding::Compressed(Gzip),
                to: Encoding::Compressed(Br),
            },
            &gzip,
            &config,
        )
        .expect("transcoded");
        let back = derive_whole(
            Derivation {
                from: Encoding::Compressed(Br),
                to: Encoding::Identity,
            },
            &br,
            &config,
        )
        .expect("decoded");
        assert_eq!(&back[..], &body[..]);
    }

    #[test]
    fn the_header_names_the_derived_coding_and_length() {
        let mut derived = header(&[JSON, ("content-length", "5000"), ("etag", "\"v1\"")]);
        let to_br = Derivation {
            from: Encoding::Identity,
            to: Encoding::Compressed(Br),
        };
        rewrite_header(to_br, &mut derived, Some(120)).expect("rewrite");
        let get = |name: &str| {
            derived
                .headers
                .get(name)
                .map(|v| v.to_str().expect("text").to_string())
        };
        assert_eq!(get("content-encoding").as_deref(), Some("br"));
        assert_eq!(get("content-length").as_deref(), Some("120"));
        assert_eq!(get("etag").as_deref(), Some("W/\"v1\""));
        assert_eq!(get("vary").as_deref(), Some("Accept-Encoding"));
        let mut streamed = header(&[JSON, ("content-length", "5000")]);
        rewrite_header(to_br, &mut streamed, None).expect("rewrite");
        assert!(streamed.headers.get("content-length").is_none());
        assert_eq!(
            streamed
                .headers
                .get("transfer-encoding")
                .map(|v| v.as_bytes()),
            Some(&b"chunked"[..])
        );
    }
}
