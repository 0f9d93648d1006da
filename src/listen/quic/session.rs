//! One HTTP/3 request stream as a Pingora custom downstream session.
//!
//! Pingora's proxy drives the session exactly as it drives an HTTP/2 stream: it reads the request
//! header (already parsed here), streams the request body with [`read_body_bytes`] /
//! [`read_body_or_idle`], and writes the response as header, body pieces and trailers. The h3
//! request stream is split into its send and receive halves; each half sits in a `Mutex` only so
//! that the session is `Sync` as the trait requires: every use goes through `&mut self` and
//! `Mutex::get_mut`, so the lock is never taken.
//!
//! HTTP/3 has no "this request has no body" signal in the header: the body ends with the stream
//! (FIN). The session learns it in three ways: `content-length: 0`; a FIN that had already
//! arrived with the header (checked once, without waiting, when the session is made); and, for
//! GET and HEAD without `content-length`, by treating the body as absent as HTTP/1.1 does (data
//! that comes anyway gets STOP_SENDING with H3_NO_ERROR). Everything else is streamed until
//! `recv_data` gives `None`.
//!
//! [`read_body_bytes`]: custom::Session::read_body_bytes
//! [`read_body_or_idle`]: custom::Session::read_body_or_idle

use super::request::validated_content_length;
use crate::fields::CONNECTION_SPECIFIC;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h3::error::{Code, StreamError};
use h3::server::RequestStream;
use http::{header, HeaderMap, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::body_buffer::FixedBuffer;
use pingora::protocols::http::custom::server as custom;
use pingora::protocols::http::custom::CustomMessageWrite;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::http::HttpTask;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::Digest;
use pingora::{Error, ErrorType, Result};

pub(super) type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
pub(super) type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// What a retry may replay of the request body (as Pingora's own sessions).
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

/// Connection-wide facts every request of one QUIC connection shares.
pub(super) struct ConnectionInfo {
    pub connection: quinn::Connection,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub digest: Digest,
}

fn h3_error(kind: ErrorType, context: &'static str, e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(kind, format!("{context}: {e}"))
}

/// The request side of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiving {
    /// A body is read from the stream until its end.
    Body,
    /// The request has no body (declared empty, or GET/HEAD without a length), but the half
    /// is open: data that comes anyway is refused.
    NoBody,
    /// The half is over: FIN (or trailers) seen, or reading was stopped.
    Closed,
}

/// The response side of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    Open,
    /// FIN sent: the response is complete.
    Finished,
    /// Reset, or ended without its FIN going out: the client sees it incomplete.
    Stopped,
}

/// An h3 request stream, adapted to Pingora's custom downstream session.
pub(super) struct H3Session {
    request: RequestHeader,
    send: Mutex<SendHalf>,
    recv: Mutex<RecvHalf>,
    info: Arc<ConnectionInfo>,
    digest: Digest,
    content_length: Option<u64>,
    receiving: Receiving,
    /// Body bytes taken off the stream when the session was made.
    stashed: Option<Bytes>,
    body_read: usize,
    body_sent: usize,
    /// The final (non-1xx) response header, once sent.
    response_written: Option<Box<ResponseHeader>>,
    sending: Sending,
    retry_buffer: Option<FixedBuffer>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
    /// A read of the request stream was started and has not completed (it may have been
    /// cancelled): h3-quinn 0.0.10 then holds the stream inside that read, and its
    /// `stop_sending` would panic (hyperium/h3#330), so STOP_SENDING is left to the stream's drop.
    read_in_flight: bool,
}

impl H3Session {
    pub(super) fn new(
        request: RequestHeader,
        send: SendHalf,
        recv: RecvHalf,
        info: Arc<ConnectionInfo>,
    ) -> Self {
        // Validated by `request_header`.
        let content_length = validated_content_length(&request.headers);
        let mut session = H3Session {
            digest: info.digest.clone(),
            request,
            send: Mutex::new(send),
            recv: Mutex::new(recv),
            info,
            content_length,
            receiving: if content_length == Some(0) {
                Receiving::NoBody
            } else {
                Receiving::Body
            },
            stashed: None,
            body_read: 0,
            body_sent: 0,
            response_written: None,
            sending: Sending::Open,
            retry_buffer: None,
            read_timeout: None,
            write_timeout: None,
            drain_timeout: None,
            read_in_flight: false,
        };
        if content_length.is_none() {
            session.peek_body();
        }
        session
    }

    /// Looks, without waiting, whether the body has already ended or begun.
    fn peek_body(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        let recv = self.recv.get_mut().unwrap_or_else(|e| e.into_inner());
        match recv.poll_recv_data(&mut cx) {
            Poll::Ready(Ok(None)) => self.receiving = Receiving::Closed,
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                if !bytes.is_empty() {
                    self.stashed = Some(bytes);
                }
            }
            // An error will come again on the first real read.
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                self.read_in_flight = true;
                if matches!(self.request.method, Method::GET | Method::HEAD) {
                    self.receiving = Receiving::NoBody;
                }
            }
        }
    }

    fn send_half(&mut self) -> &mut SendHalf {
        self.send.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the client to stop sending the request body; with a read in flight the stream's
    /// drop does it instead (see `read_in_flight`).
    fn stop_receiving(&mut self, code: Code) {
        if !self.read_in_flight {
            self.recv_half().stop_sending(code);
        }
    }

    fn recv_half(&mut self) -> &mut RecvHalf {
        self.recv.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    fn body_done(&self) -> bool {
        self.stashed.is_none()
            && (self.receiving != Receiving::Body
                || self
                    .content_length
                    .is_some_and(|l| self.body_read as u64 >= l))
    }

    /// Resets both directions: the request is malformed (RFC 9114 §4.1.2).
    fn reject_malformed(&mut self, why: &str) -> Box<Error> {
        self.send_half().stop_stream(Code::H3_MESSAGE_ERROR);
        self.stop_receiving(Code::H3_MESSAGE_ERROR);
        self.sending = Sending::Stopped;
        self.receiving = Receiving::Closed;
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            format!("malformed h3 request: {why}"),
        )
    }

    /// The next non-empty piece of the body from the stream; `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let timeout = self.read_timeout;
        let recv = self.recv.get_mut().unwrap_or_else(|e| e.into_inner());
        loop {
            self.read_in_flight = true;
            let read = recv.recv_data();
            let data = match timeout {
                Some(t) => tokio::time::timeout(t, read).await.map_err(|_| {
                    Error::explain(
                        ErrorType::ReadTimedout,
                        format!("h3 request body, timeout: {t:?}"),
                    )
                })?,
                None => read.await,
            };
            self.read_in_flight = false;
            match data.map_err(|e| {
                h3_error(ErrorType::ReadError, "while reading the h3 request body", e)
            })? {
                Some(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    if !bytes.is_empty() {
                        return Ok(Some(bytes));
                    }
                }
                None => return Ok(None),
            }
        }
    }

    /// Trailers end the request; Pingora cannot forward request trailers, so they are read and
    /// dropped.
    async fn skip_trailers(&mut self) {
        let timeout = self.read_timeout.unwrap_or(Duration::from_secs(5));
        self.read_in_flight = true;
        let read = tokio::time::timeout(timeout, self.recv_half().recv_trailers()).await;
        self.read_in_flight = read.is_err();
        if let Ok(Ok(Some(trailers))) = read {
            tracing::debug!(
                fields = trailers.len(),
                "h3 request trailers dropped (not forwarded)"
            );
        }
    }

    /// Waits until the client gives up the request (resets the stream or closes the
    /// connection); body data arriving meanwhile is dropped. Always an error.
    async fn idle(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.receiving == Receiving::Closed {
                let reason = self.info.connection.closed().await;
                return Error::e_explain(
                    ErrorType::ConnectionClosed,
                    format!("h3 client closed the connection: {reason}"),
                );
            }
            let connection = self.info.connection.clone();
            let recv = self.recv.get_mut().unwrap_or_else(|e| e.into_inner());
            self.read_in_flight = true;
            tokio::select! {
                data = recv.recv_data() => {
                    self.read_in_flight = false;
                    match data {
                        Ok(Some(data)) => {
                            let length = data.remaining();
                            if length > 0 && self.content_length.is_some_and(|l| self.body_read as u64 >= l) {
                                return Err(self.reject_malformed("body longer than content-length"));
                            }
                            // A body nobody will read (a GET's, or the rest once the upstream is
                            // done): ask the client to stop sending it (RFC 9114 §4.1).
                            tracing::debug!(length, "h3 request body not wanted; STOP_SENDING");
                            self.receiving = Receiving::Closed;
                            self.stop_receiving(Code::H3_NO_ERROR);
                        }
                        Ok(None) => self.receiving = Receiving::Closed,
                        Err(e) => return Err(h3_error(ErrorType::ReadError, "h3 client gave up the request", e)),
                    }
                }
                reason = connection.closed() => {
                    return Error::e_explain(ErrorType::ConnectionClosed, format!("h3 client closed the connection: {reason}"));
                }
            }
        }
    }

    async fn write_with_timeout<F, T>(timeout: Option<Duration>, write: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, StreamError>>,
    {
        let written = match timeout {
            Some(t) => tokio::time::timeout(t, write).await.map_err(|_| {
                Error::explain(
                    ErrorType::WriteTimedout,
                    format!("writing the h3 response, timeout: {t:?}"),
                )
            })?,
            None => write.await,
        };
        written.map_err(|e| {
            h3_error(ErrorType::WriteError, "while writing the h3 response", e).into_down()
        })
    }

    async fn send_header(&mut self, header: &ResponseHeader) -> Result<()> {
        let mut parts = header.as_owned_parts();
        // A peer would treat them as malformed (RFC 9114 §4.2).
        for name in &CONNECTION_SPECIFIC {
            parts.headers.remove(name);
        }
        if !parts.headers.contains_key(header::DATE) && !header.status.is_informational() {
            parts.headers.insert(header::DATE, get_cached_date());
        }
        parts.version = http::Version::HTTP_3;
        let response = http::Response::from_parts(parts, ());
        let timeout = self.write_timeout;
        Self::write_with_timeout(timeout, self.send_half().send_response(response)).await
    }

    /// Ends the response with FIN.
    async fn end_stream(&mut self) -> Result<()> {
        if self.sending != Sending::Open {
            return Ok(());
        }
        let timeout = self.write_timeout;
        // Should the FIN not go out, the response stays incomplete.
        self.sending = Sending::Stopped;
        Self::write_with_timeout(timeout, self.send_half().finish()).await?;
        self.sending = Sending::Finished;
        Ok(())
    }

    /// Gives the response up so that the client sees it incomplete (a stream reset).
    fn reset(&mut self, code: Code) {
        if self.sending == Sending::Open {
            self.sending = Sending::Stopped;
            self.send_half().stop_stream(code);
        }
        if self.receiving != Receiving::Closed {
            self.receiving = Receiving::Closed;
            self.stop_receiving(Code::H3_REQUEST_CANCELLED);
        }
    }
}

impl Drop for H3Session {
    fn drop(&mut self) {
        // An h3-quinn send half dropped unfinished would end the stream cleanly; a response that
        // was not completed must look incomplete to the client.
        if self.sending == Sending::Open {
            self.sending = Sending::Stopped;
            self.send_half().stop_stream(Code::H3_INTERNAL_ERROR);
        }
        if self.receiving != Receiving::Closed {
            // A complete response may leave the rest of the request unread (RFC 9114 §4.1).
            let code = if self.sending == Sending::Finished {
                Code::H3_NO_ERROR
            } else {
                Code::H3_REQUEST_CANCELLED
            };
            self.stop_receiving(code);
        }
    }
}

#[async_trait]
impl custom::Session for H3Session {
    fn req_header(&self) -> &RequestHeader {
        &self.request
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.request
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        if self.body_done() {
            return Ok(None);
        }
        let chunk = match self.stashed.take() {
            Some(bytes) => Some(bytes),
            None => self.next_chunk().await?,
        };
        match chunk {
            Some(bytes) => {
                self.body_read += bytes.len();
                if self
                    .content_length
                    .is_some_and(|l| self.body_read as u64 > l)
                {
                    return Err(self.reject_malformed("body longer than content-length"));
                }
                if let Some(buffer) = self.retry_buffer.as_mut() {
                    buffer.write_to_buffer(&bytes);
                }
                Ok(Some(bytes))
            }
            None => {
                self.receiving = Receiving::Closed;
                if self
                    .content_length
                    .is_some_and(|l| (self.body_read as u64) < l)
                {
                    return Err(self.reject_malformed("body shorter than content-length"));
                }
                self.skip_trailers().await;
                Ok(None)
            }
        }
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        if self.body_done() {
            return Ok(());
        }
        // No need to read what is not wanted: ask the client to stop sending (RFC 9114 §4.1).
        self.stashed = None;
        self.receiving = Receiving::Closed;
        self.stop_receiving(Code::H3_NO_ERROR);
        Ok(())
    }

    async fn write_response_header(&mut self, resp: Box<ResponseHeader>, end: bool) -> Result<()> {
        if self.sending != Sending::Open {
            return Ok(());
        }
        if resp.status.is_informational() {
            if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "101 Switching Protocols cannot be sent over HTTP/3",
                );
            }
            if self.response_written.is_none() {
                self.send_header(&resp).await?;
            }
            return Ok(());
        }
        if self.response_written.is_some() {
            tracing::warn!("h3 response header already sent; a second one is dropped");
            return Ok(());
        }
        self.send_header(&resp).await?;
        self.response_written = Some(resp);
        if end {
            self.end_stream().await?;
        }
        Ok(())
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        self.write_response_header(Box::new(resp.clone()), end)
            .await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if self.sending != Sending::Open {
            tracing::debug!("h3 response body after the end of the stream dropped");
            return Ok(());
        }
        if self.response_written.is_none() {
            return Error::e_explain(
                ErrorType::InternalError,
                "h3 response body before its header",
            );
        }
        if !data.is_empty() {
            let length = data.len();
            let timeout = self.write_timeout;
            Self::write_with_timeout(timeout, self.send_half().send_data(data)).await?;
            self.body_sent += length;
        }
        if end {
            self.end_stream().await?;
        }
        Ok(())
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        if self.sending != Sending::Open {
            return Ok(());
        }
        if self.response_written.is_none() {
            return Error::e_explain(
                ErrorType::InternalError,
                "h3 response trailers before the header",
            );
        }
        let timeout = self.write_timeout;
        Self::write_with_timeout(timeout, self.send_half().send_trailers(trailers)).await?;
        self.end_stream().await
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let mut end_stream = false;
        for task in tasks {
            let end = match task {
                HttpTask::Header(header, end) => {
                    self.write_response_header(header, end).await?;
                    end
                }
                HttpTask::Body(data, end) => {
                    if let Some(data) = data.filter(|d| !d.is_empty()) {
                        self.write_body(data, end).await?;
                    }
                    end
                }
                HttpTask::UpgradedBody(..) => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "upgraded body on an h3 session",
                    );
                }
                HttpTask::Trailer(Some(trailers)) => {
                    self.write_trailers(*trailers).await?;
                    true
                }
                HttpTask::Trailer(None) | HttpTask::Done => true,
                HttpTask::Failed(e) => return Err(e),
            };
            end_stream = end_stream || end;
        }
        if end_stream && self.response_written.is_some() {
            self.end_stream().await?;
        }
        Ok(end_stream)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.drain_timeout = timeout;
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout
    }

    fn request_summary(&self) -> String {
        format!(
            "{} {}, Host: {}",
            self.request.method,
            self.request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str()),
            self.request.uri.authority().map_or("", |a| a.as_str()),
        )
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response_written.as_deref()
    }

    async fn shutdown(&mut self, _code: u32, ctx: &str) {
        tracing::debug!(ctx, "h3 stream reset");
        self.reset(Code::H3_INTERNAL_ERROR);
    }

    async fn abandon(&mut self, ctx: &str) {
        tracing::debug!(ctx, "h3 response abandoned");
        self.reset(Code::H3_INTERNAL_ERROR);
    }

    fn is_body_done(&mut self) -> bool {
        self.body_done()
    }

    async fn finish(&mut self) -> Result<()> {
        // Without a response header there is nothing to end cleanly; dropping resets the stream.
        if self.response_written.is_some() {
            self.end_stream().await?;
        }
        Ok(())
    }

    fn is_body_empty(&mut self) -> bool {
        match self.receiving {
            Receiving::NoBody => true,
            Receiving::Closed => self.body_read == 0 && self.stashed.is_none(),
            Receiving::Body => false,
        }
    }

    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        if no_body_expected || self.body_done() {
            self.idle().await
        } else {
            self.read_body_bytes().await
        }
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    fn digest(&self) -> Option<&Digest> {
        Some(&self.digest)
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        Some(&mut self.digest)
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        Some(&self.info.client)
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        Some(&self.info.server)
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(512);
        buf.put_slice(self.request.method.as_str().as_bytes());
        buf.put_u8(b' ');
        buf.put_slice(self.request.raw_path());
        buf.put_slice(b" HTTP/1.1\r\n");
        self.request.header_to_h1_wire(&mut buf);
        buf.put_slice(b"\r\n");
        buf.freeze()
    }

    fn enable_retry_buffering(&mut self) {
        if self.retry_buffer.is_none() {
            self.retry_buffer = Some(FixedBuffer::new(RETRY_BUFFER_LIMIT));
        }
    }

    fn retry_buffer_truncated(&self) -> bool {
        self.retry_buffer.as_ref().is_some_and(|b| b.is_truncated())
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        self.retry_buffer.as_ref().and_then(|b| {
            if b.is_truncated() {
                None
            } else {
                b.get_buffer()
            }
        })
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(
        &mut self,
    ) -> Option<Box<dyn futures_core::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>>
    {
        None
    }

    fn restore_custom_message_reader(
        &mut self,
        _reader: Box<
            dyn futures_core::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static,
        >,
    ) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(
        &mut self,
        _writer: Box<dyn CustomMessageWrite>,
    ) -> Result<()> {
        Ok(())
    }
}

/// The adapter against a real h3 client over an in-process QUIC connection.
#[cfg(test)]
mod wire_tests {
    use super::super::harness::{body_of, get, pair, reset_code, Pair};
    use super::*;
    use custom::Session as _;
    use http::HeaderValue;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_get_whose_stream_is_still_open_is_dropped_without_a_panic() {
        // The client has not finished its stream, so the first look at the body leaves a read
        // in flight; dropping the session must not call h3-quinn's panicking stop_sending.
        let pair = pair(get("/open"), None, false).await;
        assert!(
            pair.session.read_in_flight,
            "the peek left a read in flight"
        );
        drop(pair);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn header_body_and_trailers_reach_the_client() {
        let mut pair = pair(get("/t"), None, true).await;
        assert!(
            pair.session.is_body_empty(),
            "a GET that ended with its header has no body"
        );
        assert_eq!(pair.session.read_body_bytes().await.expect("read"), None);
        let mut response = ResponseHeader::build(200, None).expect("response");
        response.insert_header("x-test", "1").expect("header");
        // Connection-specific fields from an HTTP/1.1 upstream must not reach an h3 client.
        response
            .insert_header("connection", "keep-alive")
            .expect("header");
        response
            .insert_header("transfer-encoding", "chunked")
            .expect("header");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        let tasks = vec![
            HttpTask::Header(Box::new(response), false),
            HttpTask::Body(Some(Bytes::from_static(b"hello ")), false),
            HttpTask::Body(Some(Bytes::from_static(b"world")), false),
            HttpTask::Trailer(Some(Box::new(trailers))),
        ];
        assert!(pair
            .session
            .response_duplex_vec(tasks)
            .await
            .expect("written"));
        assert_eq!(pair.session.body_bytes_sent(), 11);
        let client = &mut pair.client;
        let head = client.recv_response().await.expect("response");
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers().get("x-test").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(
            head.headers().get("connection").is_none()
                && head.headers().get("transfer-encoding").is_none()
        );
        assert!(head.headers().contains_key("date"));
        assert_eq!(body_of(client).await.expect("body"), b"hello world");
        let trailers = client
            .recv_trailers()
            .await
            .expect("trailers")
            .expect("some trailers");
        assert_eq!(
            trailers.get("x-checksum").map(|v| v.as_bytes()),
            Some(&b"abc"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_body_streams_and_a_short_body_is_a_message_error() {
        let request = http::Request::post("https://localhost/up")
            .header("content-length", "10")
            .body(())
            .expect("request");
        let mut pair = pair(request, Some(b"12345"), true).await;
        assert!(!pair.session.is_body_empty());
        let mut read = Vec::new();
        let error = loop {
            match pair.session.read_body_bytes().await {
                Ok(Some(bytes)) => read.extend_from_slice(&bytes),
                Ok(None) => panic!("a body shorter than content-length was accepted"),
                Err(e) => break e,
            }
        };
        assert_eq!(read, b"12345");
        assert_eq!(error.etype(), &ErrorType::InvalidHTTPHeader);
        let outcome = pair.client.recv_response().await;
        assert_eq!(
            outcome.as_ref().err().and_then(reset_code),
            Some(Code::H3_MESSAGE_ERROR),
            "{outcome:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_response_is_reset_not_ended() {
        let mut pair = pair(get("/cut"), None, true).await;
        let response = ResponseHeader::build(200, None).expect("response");
        pair.session
            .write_response_header(Box::new(response), false)
            .await
            .expect("header");
        pair.session
            .write_body(Bytes::from_static(b"part"), false)
            .await
            .expect("body");
        let Pair {
            session,
            mut client,
            _keep,
        } = pair;
        drop(session);
        // A reset may overtake the data it follows (QUIC discards it): the client must see the
        // reset at some point, and never a clean end.
        let outcome = match client.recv_response().await {
            Ok(head) => {
                assert_eq!(head.status(), 200);
                body_of(&mut client).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        assert_eq!(
            outcome.as_ref().err().and_then(reset_code),
            Some(Code::H3_INTERNAL_ERROR),
            "{outcome:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_reset_fails_the_body_read() {
        let request = http::Request::post("https://localhost/up")
            .body(())
            .expect("request");
        let mut pair = pair(request, Some(b"abc"), false).await;
        assert_eq!(
            pair.session
                .read_body_bytes()
                .await
                .expect("first piece")
                .as_deref(),
            Some(&b"abc"[..])
        );
        pair.client.stop_stream(Code::H3_REQUEST_CANCELLED);
        let error = pair
            .session
            .read_body_bytes()
            .await
            .expect_err("reset must fail the read");
        assert_eq!(error.etype(), &ErrorType::ReadError);
    }
}
