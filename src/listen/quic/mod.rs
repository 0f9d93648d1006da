//! HTTP/3: a QUIC endpoint (quinn + h3) on a TLS listener's port over UDP, feeding each
//! request into the same Pingora proxy as the TCP doors through a custom downstream session.
//!
//! - TLS: rustls, TLS 1.3 only, ALPN `h3`, certificates from the listener's [`SniResolver`]
//!   (shared with the TCP door, so a reload's new certificates apply to both).
//! - Limits from `[http3]`: concurrent request streams, stream and connection receive windows
//!   and the idle timeout (QUIC transport), the field section size (h3).
//! - Each request stream's header is converted and checked (`request`), then the stream
//!   becomes a [`session::H3Session`] handed to `HttpProxy::process_new_http`, so routing,
//!   balancing, pools, refusals and metrics are the TCP ones. `harness` (tests only) pairs a
//!   real h3 client with a session in process.
//! - Graceful upgrade: the UDP socket sits in Pingora's listen-fd table under `udp://ADDR`, so
//!   SIGQUIT hands it to the new process with the TCP sockets; a process started with
//!   `--upgrade` takes it from there instead of binding.
//! - Shutdown (SIGTERM, or the end of an upgrade): every connection gets GOAWAY, running
//!   requests finish, then the connection closes; new connection attempts are ignored, so that
//!   on an upgrade their retransmissions reach the new process.

#[cfg(test)]
mod harness;
mod request;
mod session;

use super::admission::{ConnectionLimit, Slot};
use super::OpenConnection;
use crate::config::{Http3Limits, ListenerConfig};
use crate::metrics::Protocol;
use crate::proxy::Parapet;
use crate::tls::{SniResolver, TLS_METRICS};
use async_trait::async_trait;
use bytes::Bytes;
use h3::error::Code;
use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{Digest, SocketDigest, TimingDigest};
use pingora::proxy::HttpProxy;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use quinn::crypto::rustls::QuicServerConfig;
use session::{ConnectionInfo, H3Session};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;

/// Unidirectional streams a client may open: h3 needs three (control, QPACK encoder and
/// decoder); the rest is room for reserved (grease) stream types.
const MAX_CLIENT_UNI_STREAMS: u32 = 16;
/// After GOAWAY and the last response, the longest a connection waits before closing (closing
/// discards response bytes not yet delivered): well inside the shortest grace period (1 s).
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// A draining connection with no datagram either way for this many round trips has delivered
/// what it had to deliver.
const QUIET_ROUND_TRIPS: u32 = 3;
/// ... and never less than this.
const MIN_QUIET: Duration = Duration::from_millis(20);
/// Time for the endpoint to send the CONNECTION_CLOSE frames before the service returns.
const CLOSE_FLUSH: Duration = Duration::from_millis(100);

/// QUIC endpoints that have not finished closing: the process exit at the end of a drain waits
/// for them, so that clients get their last bytes and a CONNECTION_CLOSE rather than silence.
static OPEN_ENDPOINTS: AtomicUsize = AtomicUsize::new(0);

/// How many QUIC endpoints are still open (serving or draining).
pub fn open_endpoints() -> usize {
    OPEN_ENDPOINTS.load(Ordering::SeqCst)
}

/// Counts one endpoint in [`OPEN_ENDPOINTS`] while it lives.
struct EndpointOpen;

impl EndpointOpen {
    fn count() -> Self {
        OPEN_ENDPOINTS.fetch_add(1, Ordering::SeqCst);
        EndpointOpen
    }
}

impl Drop for EndpointOpen {
    fn drop(&mut self) {
        OPEN_ENDPOINTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The QUIC listener of one `[[listener]]` with "h3" in its protocols.
pub struct QuicService {
    name: String,
    address: SocketAddr,
    resolver: Arc<SniResolver>,
    limits: Http3Limits,
    proxy: Arc<HttpProxy<Parapet>>,
    connection_limit: Arc<ConnectionLimit>,
}

pub fn quic_service(
    listener: &ListenerConfig,
    resolver: Arc<SniResolver>,
    limits: &Http3Limits,
    proxy: Arc<HttpProxy<Parapet>>,
    connection_limit: Arc<ConnectionLimit>,
) -> QuicService {
    QuicService {
        name: format!("quic {}", listener.address),
        address: listener.address,
        resolver,
        limits: limits.clone(),
        proxy,
        connection_limit,
    }
}

/// Why the QUIC listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("cannot duplicate the inherited UDP socket: {0}")]
    DuplicateInherited(std::io::Error),
    #[error("cannot bind UDP {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot duplicate the UDP socket: {0}")]
    Duplicate(std::io::Error),
    #[error("cannot make the UDP socket non-blocking: {0}")]
    NonBlocking(std::io::Error),
    #[error("cannot start the QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("TLS 1.3 for QUIC: {0}")]
    Tls13(rustls::Error),
    #[error("TLS config for QUIC: {0}")]
    QuicTls(quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("idle_timeout {0:?} is too long for QUIC")]
    IdleTimeout(Duration),
}

/// The key of the UDP socket in Pingora's listen-fd table (TCP sockets use the bare address).
fn fd_key(address: SocketAddr) -> String {
    format!("udp://{address}")
}

#[async_trait]
impl Service for QuicService {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let (endpoint, socket_fd) = match self.endpoint(fds) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                // Like a TCP port that cannot be bound: the listener the config asks for is missing.
                tracing::error!(address = %self.address, error = %e, "cannot start the HTTP/3 (QUIC) listener");
                std::process::exit(1);
            }
        };
        let _open = EndpointOpen::count();
        tracing::info!(address = %self.address, "HTTP/3 listening (UDP)");
        let shared = Arc::new(Shared {
            proxy: Arc::clone(&self.proxy),
            limits: self.limits.clone(),
            connection_limit: Arc::clone(&self.connection_limit),
            port: self.address.port(),
            ip: self.address.ip(),
            socket_fd,
        });
        serve(endpoint, shared, shutdown).await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![fd_key(self.address)])
    }
}

impl QuicService {
    /// The UDP socket: inherited from the previous process on an upgrade, else bound here and
    /// registered so the next upgrade inherits it.
    fn socket(&self, fds: Option<ListenFds>) -> Result<UdpSocket, QuicError> {
        let key = fd_key(self.address);
        let inherited = fds.as_ref().and_then(|fds| fds.lock().get(&key).copied());
        if let Some(fd) = inherited {
            // SAFETY: the fd table keeps `fd` open for the life of the process; it is only
            // borrowed here to duplicate it.
            let owned = unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .map_err(QuicError::DuplicateInherited)?;
            let socket = UdpSocket::from(owned);
            match socket.local_addr() {
                Ok(local) if local == self.address => {
                    tracing::info!(address = %self.address, "took the UDP socket over from the previous process");
                    return Ok(socket);
                }
                other => {
                    tracing::warn!(address = %self.address, found = ?other, "inherited UDP socket is not the listener's; binding anew");
                }
            }
        }
        let socket = UdpSocket::bind(self.address).map_err(|source| QuicError::Bind {
            address: self.address,
            source,
        })?;
        if let Some(fds) = fds {
            // The table gets its own descriptor, so it stays valid whatever happens to ours.
            let copy: OwnedFd = socket
                .try_clone()
                .map(OwnedFd::from)
                .map_err(QuicError::Duplicate)?;
            fds.lock().add(key, copy.into_raw_fd());
        }
        Ok(socket)
    }

    fn endpoint(&self, fds: Option<ListenFds>) -> Result<(quinn::Endpoint, RawFd), QuicError> {
        let socket = self.socket(fds)?;
        socket
            .set_nonblocking(true)
            .map_err(QuicError::NonBlocking)?;
        let raw = socket.as_raw_fd();
        let server_config = server_config(&self.resolver, &self.limits)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(QuicError::Endpoint)?;
        Ok((endpoint, raw))
    }
}

/// rustls for QUIC: TLS 1.3 only, ALPN exactly `h3`, certificates by SNI; QUIC transport limits.
fn server_config(
    resolver: &Arc<SniResolver>,
    limits: &Http3Limits,
) -> Result<quinn::ServerConfig, QuicError> {
    crate::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(QuicError::Tls13)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(QuicError::QuicTls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_concurrent_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_CLIENT_UNI_STREAMS))
        .stream_receive_window(quinn::VarInt::from_u32(limits.stream_receive_window))
        .receive_window(quinn::VarInt::from_u32(limits.receive_window))
        .send_window(u64::from(limits.receive_window).max(u64::from(limits.stream_receive_window)));
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|_| QuicError::IdleTimeout(limits.idle_timeout))?;
    transport.max_idle_timeout(Some(idle));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// What every connection of one endpoint needs.
struct Shared {
    proxy: Arc<HttpProxy<Parapet>>,
    limits: Http3Limits,
    /// The listener's `max_connections`, shared with its TCP door.
    connection_limit: Arc<ConnectionLimit>,
    ip: std::net::IpAddr,
    port: u16,
    /// The endpoint's UDP socket, for the socket digest.
    socket_fd: RawFd,
}

impl Shared {
    fn h3_builder(&self) -> h3::server::Builder {
        let mut builder = h3::server::builder();
        builder.max_field_section_size(self.limits.max_field_section_size);
        builder
    }
}

/// Accepts connections until shutdown, then lets them drain.
async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, mut shutdown: ShutdownWatch) {
    let mut connections = JoinSet::new();
    while !*shutdown.borrow() {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { return };
                let Some(slot) = shared.connection_limit.enter() else {
                    incoming.refuse();
                    continue;
                };
                connections.spawn(serve_connection(incoming, slot, Arc::clone(&shared), shutdown.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    tracing::info!(
        open = connections.len(),
        "HTTP/3 listener draining: GOAWAY to every connection"
    );
    // New connection attempts are dropped unanswered: on an upgrade the client's retransmission
    // may reach the new process, which shares the socket.
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming.ignore(),
                None => break,
            },
            joined = connections.join_next() => if joined.is_none() { break },
        }
    }
    // Lets the CONNECTION_CLOSE frames go out.
    let _ = tokio::time::timeout(CLOSE_FLUSH, endpoint.wait_idle()).await;
    tracing::info!("HTTP/3 listener closed");
}

/// Connection-wide request facts: addresses, and a digest that says TLS 1.3.
fn connection_info(
    connection: &quinn::Connection,
    local_ip: Option<std::net::IpAddr>,
    shared: &Shared,
) -> ConnectionInfo {
    let client = PingoraAddr::Inet(connection.remote_address());
    let server = PingoraAddr::Inet(SocketAddr::new(local_ip.unwrap_or(shared.ip), shared.port));
    let socket_digest = SocketDigest::from_raw_fd(shared.socket_fd);
    let _ = socket_digest.peer_addr.set(Some(client.clone()));
    let _ = socket_digest.local_addr.set(Some(server.clone()));
    let digest = Digest {
        ssl_digest: Some(Arc::new(SslDigest::new(
            "",
            "TLSv1_3",
            None,
            None,
            Vec::new(),
        ))),
        timing_digest: vec![Some(TimingDigest {
            established_ts: SystemTime::now(),
            ..TimingDigest::default()
        })],
        proxy_digest: None,
        socket_digest: Some(Arc::new(socket_digest)),
    };
    ConnectionInfo {
        connection: connection.clone(),
        client,
        server,
        digest,
    }
}

/// One QUIC connection: handshake, then one task per request stream until the client leaves or
/// the server drains.
async fn serve_connection(
    incoming: quinn::Incoming,
    _slot: Slot,
    shared: Arc<Shared>,
    mut shutdown: ShutdownWatch,
) {
    let local_ip = incoming.local_ip();
    let remote = incoming.remote_address();
    let connection = match incoming.accept() {
        Ok(connecting) => connecting.await,
        Err(e) => Err(e),
    };
    let connection = match connection {
        Ok(connection) => connection,
        Err(e) => {
            tracing::debug!(client = %remote, error = %e, "QUIC handshake failed");
            return;
        }
    };
    TLS_METRICS.handshakes.inc();
    let _open = OpenConnection::count(Protocol::H3);
    let info = Arc::new(connection_info(&connection, local_ip, &shared));
    let mut h3 = match shared
        .h3_builder()
        .build::<_, Bytes>(h3_quinn::Connection::new(connection.clone()))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(client = %remote, error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    let mut requests = JoinSet::new();
    let mut goaway_sent = false;
    loop {
        if !goaway_sent && *shutdown.borrow() {
            goaway_sent = true;
            // GOAWAY: requests already accepted finish, later ones are refused.
            match tokio::time::timeout(CLOSE_LINGER, h3.shutdown(1)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(client = %remote, error = %e, "sending GOAWAY failed");
                    break;
                }
                Err(_) => {
                    tracing::debug!(client = %remote, "GOAWAY not written in time");
                    break;
                }
            }
        }
        if goaway_sent && requests.is_empty() {
            break;
        }
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let refuse = goaway_sent;
                    let task = serve_request(resolver, Arc::clone(&info), Arc::clone(&shared), shutdown.clone(), refuse);
                    requests.spawn(task);
                }
                Ok(None) => break,
                Err(e) => {
                    if e.is_h3_no_error() {
                        tracing::debug!(client = %remote, "HTTP/3 connection closed");
                    } else {
                        tracing::debug!(client = %remote, error = %e, "HTTP/3 connection ended with an error");
                    }
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            changed = shutdown.changed(), if !goaway_sent => {
                if changed.is_err() {
                    // The server is gone; treat it as a shutdown.
                    goaway_sent = true;
                    let _ = tokio::time::timeout(CLOSE_LINGER, h3.shutdown(1)).await;
                }
            }
        }
    }
    // Requests still running end by themselves (finished, or failing on the closed connection);
    // waiting lets Pingora log them.
    while requests.join_next().await.is_some() {}
    if goaway_sent {
        linger(&connection).await;
    }
    // Dropping the h3 connection closes it with H3_NO_ERROR.
    drop(h3);
}

/// Before a draining connection is closed (which would discard response bytes not yet
/// delivered): waits until the client closes it, or until no datagram has gone either way for a
/// few round trips (everything sent was acknowledged), at most [`CLOSE_LINGER`].
async fn linger(connection: &quinn::Connection) {
    let traffic = || {
        let stats = connection.stats();
        (stats.udp_tx.datagrams, stats.udp_rx.datagrams)
    };
    let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
    let mut seen = traffic();
    loop {
        let quiet = (connection.rtt() * QUIET_ROUND_TRIPS).max(MIN_QUIET);
        let wake = (tokio::time::Instant::now() + quiet).min(deadline);
        tokio::select! {
            _ = connection.closed() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = traffic();
        if now == seen || tokio::time::Instant::now() >= deadline {
            return;
        }
        seen = now;
    }
}

type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// One request stream: the request header, then the shared proxy.
async fn serve_request(
    resolver: Resolver,
    info: Arc<ConnectionInfo>,
    shared: Arc<Shared>,
    shutdown: ShutdownWatch,
    refuse: bool,
) {
    let header_timeout = shared.limits.idle_timeout;
    let (request, stream) = match tokio::time::timeout(header_timeout, resolver.resolve_request())
        .await
    {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(e)) => {
            // h3 has answered already (431, or a stream or connection error).
            tracing::debug!(client = %info.client, error = %e, "h3 request refused");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %info.client, "no h3 request header within the idle timeout");
            return;
        }
    };
    let (mut send, mut recv) = stream.split();
    if refuse {
        // Arrived after GOAWAY: not processed, the client may retry elsewhere.
        send.stop_stream(Code::H3_REQUEST_REJECTED);
        recv.stop_sending(Code::H3_REQUEST_REJECTED);
        return;
    }
    let header = match request::request_header(request) {
        Ok(header) => header,
        Err(why) => {
            tracing::debug!(client = %info.client, %why, "malformed h3 request");
            send.stop_stream(Code::H3_MESSAGE_ERROR);
            recv.stop_sending(Code::H3_MESSAGE_ERROR);
            return;
        }
    };
    let session = H3Session::new(header, send, recv, info);
    let _ = shared
        .proxy
        .process_new_http(ServerSession::new_custom(Box::new(session)), &shutdown)
        .await;
}
