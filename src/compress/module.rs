//! The upstream module that runs one response's encoder or decoder (lifecycle in the parent
//! module's doc). A Pingora module rather than `upstream_response_body_filter`, because only a
//! module sees the trailers and end-of-response tasks, where an HTTP/2 upstream that ends its
//! body with trailers leaves the encoder's tail to be written. Pingora then sends that tail as
//! the last body piece in place of the trailers, so a compressed response loses its trailers
//! (gRPC, their usual user, is not a compressed type).

use super::decoder::Decoder;
use super::derive::{decode_counted, encode_counted};
use super::encoder::Encoder;
use super::metrics::COMPRESSION;
use super::negotiate::Algorithm;
use super::policy::{self, Action};
use super::Plan;
use crate::refusal::Refusal;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;
use pingora::http::ResponseHeader;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora::{Error, ErrorType, Result};
use std::any::Any;

/// Error type of a compressor failure (not expected: it writes to memory).
const COMPRESSION_ERROR: ErrorType = ErrorType::new("CompressionError");

/// Registers [`CompressionModule`] with Pingora's upstream modules.
pub struct CompressionModuleBuilder;

impl HttpModuleBuilder for CompressionModuleBuilder {
    fn init(&self) -> Module {
        Box::new(CompressionModule {
            plan: None,
            state: State::AwaitingHeader,
        })
    }
}

/// One response's compression state.
pub struct CompressionModule {
    plan: Option<Plan>,
    state: State,
}

enum State {
    /// No final response header yet.
    AwaitingHeader,
    /// Nothing to do with the body.
    PassThrough,
    Encoding(Algorithm, Box<Encoder>),
    Decoding(Algorithm, Box<Decoder>),
    /// The body's end was handled (or decoding failed).
    Done,
}

impl CompressionModule {
    pub(super) fn arm(&mut self, plan: Option<Plan>) {
        self.plan = plan;
    }

    /// The state for the body after `action` (header edits already applied).
    fn start(plan: &Plan, action: Action) -> State {
        match action {
            Action::Compress(algorithm) => match Encoder::new(algorithm, &plan.config.levels) {
                Ok(encoder) => {
                    COMPRESSION.compressions[algorithm.index()].inc();
                    State::Encoding(algorithm, Box::new(encoder))
                }
                Err(e) => {
                    tracing::warn!(algorithm = algorithm.as_str(), error = %e, "cannot start a compressor");
                    State::PassThrough
                }
            },
            Action::Decompress(algorithm) => match Decoder::new(algorithm, plan.config.bounds) {
                Ok(decoder) => {
                    COMPRESSION.decompressions[algorithm.index()].inc();
                    State::Decoding(algorithm, Box::new(decoder))
                }
                Err(e) => {
                    tracing::warn!(algorithm = algorithm.as_str(), error = %e, "cannot start a decompressor");
                    State::PassThrough
                }
            },
            Action::Untouched | Action::VaryOnly => State::PassThrough,
        }
    }

    /// Runs one piece (and, with `end`, the end of the body) through the encoder or decoder;
    /// `None` when the body passes untouched.
    fn transform(&mut self, input: &[u8], end: bool) -> Result<Option<Bytes>> {
        let result = match &mut self.state {
            State::Encoding(algorithm, encoder) => encode(*algorithm, encoder, input, end),
            State::Decoding(algorithm, decoder) => decode(*algorithm, decoder, input, end),
            State::AwaitingHeader | State::PassThrough | State::Done => return Ok(None),
        };
        if end || result.is_err() {
            self.state = State::Done;
        }
        result.map(Some)
    }

    /// The tail of the body when the upstream ended it without a last body piece.
    fn finish(&mut self) -> Result<Option<Bytes>> {
        Ok(self.transform(&[], true)?.filter(|tail| !tail.is_empty()))
    }
}

#[async_trait]
impl HttpModule for CompressionModule {
    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        end_of_stream: bool,
    ) -> Result<()> {
        if resp.status.is_informational() {
            // 101 switches protocols: what follows is not an HTTP body.
            if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
                self.state = State::PassThrough;
            }
            return Ok(());
        }
        // A final header starts afresh: it is this response's first, or a retry's after the
        // previous server failed before anything reached the client.
        self.state = State::PassThrough;
        let Some(plan) = &self.plan else {
            return Ok(());
        };
        // A response without a body: a HEAD answer gets the headers its GET would, any other
        // (Content-Length: 0, ...) nothing. Whether a body follows is the upstream's answer,
        // not the client's method: with the cache on, Pingora turns a HEAD into a GET
        // upstream, and that body is compressed and stored like any GET's.
        if end_of_stream {
            if plan.head {
                let action = policy::decide(resp, &plan.accept, plan.preferred, &plan.config);
                policy::apply(action, resp)?;
            }
            self.state = State::PassThrough;
            return Ok(());
        }
        let action = policy::decide(resp, &plan.accept, plan.preferred, &plan.config);
        let state = Self::start(plan, action);
        let action = match state {
            // The coder could not start: only the Vary decision stands.
            State::PassThrough if matches!(action, Action::Compress(_)) => Action::VaryOnly,
            State::PassThrough if matches!(action, Action::Decompress(_)) => Action::VaryOnly,
            _ => action,
        };
        policy::apply(action, resp)?;
        self.state = state;
        Ok(())
    }

    fn response_body_filter(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<()> {
        let input = body.as_deref().unwrap_or_default();
        if let Some(output) = self.transform(input, end_of_stream)? {
            *body = (!output.is_empty()).then_some(output);
        }
        Ok(())
    }

    fn response_trailer_filter(
        &mut self,
        _trailers: &mut Option<Box<HeaderMap>>,
    ) -> Result<Option<Bytes>> {
        self.finish()
    }

    fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        self.finish()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

fn encode(algorithm: Algorithm, encoder: &mut Encoder, input: &[u8], end: bool) -> Result<Bytes> {
    encode_counted(algorithm, encoder, input, end)
        .map_err(|e| Error::because(COMPRESSION_ERROR, algorithm.as_str(), e).into_in())
}

fn decode(algorithm: Algorithm, decoder: &mut Decoder, input: &[u8], end: bool) -> Result<Bytes> {
    decode_counted(algorithm, decoder, input, end).map_err(|e| {
        // A bad answer from the upstream: refused when the response header has not left yet,
        // else the response is cut. The source is internal, so the server is not marked down
        // (a bad file is not a sick server) and the request is not retried.
        Refusal::UndecodableUpstreamBody
            .error(format!(
                "decoding the upstream's {} body: {e}; response cut",
                algorithm.as_str()
            ))
            .into_in()
    })
}
