//! HTTP/1.1 and HTTP/2 over TCP (TLS for https URLs) with hyper: the connector, the HTTP/1.1
//! pool of one-request-at-a-time connections, and the HTTP/2 opener for the multiplexed set.

use super::multiplexed::Opener;
use super::{tls, Answer, Failure, RequestTemplate};
use crate::load::plan::Target;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A byte stream to the target, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Opens TCP connections to the target, with TLS (and ALPN) for https URLs.
pub struct Connector {
    address: SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Connector {
    pub fn new(
        address: SocketAddr,
        target: &Target,
        cacert: Option<&Path>,
        alpn: &[u8],
    ) -> Result<Connector, String> {
        if !target.https {
            return Ok(Connector { address, tls: None });
        }
        let config = tls::client_config(cacert, &[alpn])?;
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{}: not a TLS server name: {e}", target.host))?;
        Ok(Connector {
            address,
            tls: Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name)),
        })
    }

    async fn stream(&self) -> Result<Box<dyn Io>, Failure> {
        let tcp = TcpStream::connect(self.address)
            .await
            .map_err(|e| Failure::Connect(e.kind().to_string()))?;
        // Requests are small and latency is what is measured: never wait to coalesce writes.
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| Failure::Tls(e.to_string()))?;
        Ok(Box::new(tls))
    }
}

fn hyper_failure(error: hyper::Error) -> Failure {
    if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        return Failure::Closed;
    }
    Failure::Protocol(error.to_string())
}

/// The status of a response and the size of its body, read to its end.
async fn read_answer(
    response: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<Answer, Failure> {
    let response = response.map_err(hyper_failure)?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut body_bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(hyper_failure)?.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    Ok(Answer { status, body_bytes })
}

/// Runs a connection's I/O in a task of its own until the connection closes.
fn drive(connection: impl Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    tokio::spawn(async move {
        let _ = connection.await;
    });
}

type Http1Sender = http1::SendRequest<Full<Bytes>>;

/// At most N HTTP/1.1 connections, one request at a time on each; idle ones are reused.
pub struct Http1Pool {
    connector: Connector,
    template: RequestTemplate,
    host: HeaderValue,
    idle: parking_lot::Mutex<Vec<Http1Sender>>,
    slots: Semaphore,
}

impl Http1Pool {
    pub fn new(
        connector: Connector,
        template: RequestTemplate,
        connections: usize,
    ) -> Result<Http1Pool, String> {
        let host = HeaderValue::from_str(
            template
                .absolute
                .authority()
                .map_or("", |authority| authority.as_str()),
        )
        .map_err(|e| format!("Host header: {e}"))?;
        Ok(Http1Pool {
            connector,
            template,
            host,
            idle: parking_lot::Mutex::new(Vec::new()),
            slots: Semaphore::new(connections.max(1)),
        })
    }

    pub async fn send(&self, sent_at: &mut Option<Instant>) -> Result<Answer, Failure> {
        // Waiting here means every connection is busy: the request leaves late, and the caller
        // counts it as a missed send slot.
        let _slot = self.slots.acquire().await.map_err(|_| Failure::Closed)?;
        *sent_at = Some(Instant::now());
        let mut connection = self.connection().await?;
        let body = Full::new(self.template.body.clone());
        let request = self.template.http1(&self.host, body);
        let answer = read_answer(connection.send_request(request).await).await?;
        self.idle.lock().push(connection);
        Ok(answer)
    }

    /// An idle connection that is still open, else a new one.
    async fn connection(&self) -> Result<Http1Sender, Failure> {
        while let Some(mut idle) = self.take_idle() {
            if idle.ready().await.is_ok() {
                return Ok(idle);
            }
        }
        let io = self.connector.stream().await?;
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(hyper_failure)?;
        drive(connection);
        Ok(sender)
    }

    fn take_idle(&self) -> Option<Http1Sender> {
        self.idle.lock().pop()
    }
}

/// Opens HTTP/2 connections (ALPN h2 over TLS, prior knowledge over clear text).
pub struct Http2Opener {
    connector: Connector,
    template: RequestTemplate,
}

impl Http2Opener {
    pub fn new(connector: Connector, template: RequestTemplate) -> Self {
        Http2Opener {
            connector,
            template,
        }
    }
}

impl Opener for Http2Opener {
    type Connection = http2::SendRequest<Full<Bytes>>;

    async fn open(&self) -> Result<Self::Connection, Failure> {
        let io = self.connector.stream().await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(hyper_failure)?;
        drive(connection);
        Ok(sender)
    }

    fn is_closed(connection: &Self::Connection) -> bool {
        connection.is_closed()
    }

    async fn exchange(&self, mut connection: Self::Connection) -> Result<Answer, Failure> {
        connection.ready().await.map_err(hyper_failure)?;
        let request = self
            .template
            .absolute(Full::new(self.template.body.clone()));
        read_answer(connection.send_request(request).await).await
    }
}
