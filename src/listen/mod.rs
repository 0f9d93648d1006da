//! The front doors: one service per `[[listener]]` on the shared proxy, each with its own
//! protocol options (HTTP/1.1, h2c told apart from HTTP/1.1 by the preface, TLS with ALPN h2
//! and http/1.1), the HTTP/3 door on the same port (`quic`), and the count of open client
//! connections. `admission` decides which connections a listener takes (`max_connections`,
//! TLS only on a TLS port), `preface` reads the h2c preface, and `http1` runs an HTTP/1.x
//! connection's requests with the client timeouts.

mod admission;
mod http1;
mod preface;
mod quic;

use crate::config::{Config, Http2Limits, ListenerConfig};
use crate::metrics::{counter_vec, gauge_vec, per_protocol, Protocol};
use crate::proxy::Parapet;
use crate::tls::{SniResolver, TLS_METRICS};
use admission::ConnectionLimit;
use async_trait::async_trait;
use http1::ClientTimeouts;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use preface::Preface;
use prometheus::{IntCounter, IntGauge};
use std::sync::{Arc, LazyLock};

/// Client connection counts, by [`Protocol`] index.
struct ConnectionMetrics {
    open: [IntGauge; 3],
    accepted: [IntCounter; 3],
}

static CONNECTION_METRICS: LazyLock<ConnectionMetrics> = LazyLock::new(|| ConnectionMetrics {
    open: {
        let vec = gauge_vec(
            "downstream_open_connections",
            "Client connections open now.",
            &["protocol"],
        );
        Protocol::ALL.map(|p| vec.with_label_values(&[p.as_str()]))
    },
    accepted: per_protocol(counter_vec(
        "downstream_connections_total",
        "Client connections accepted.",
        &["protocol"],
    )),
});

/// Registers the connection metrics (at start, so they show before the first client).
pub fn register_metrics() {
    LazyLock::force(&CONNECTION_METRICS);
}

/// HTTP/1.1 and HTTP/2 client connections open now (TLS or not); the drain waits for them.
pub fn open_client_connections() -> usize {
    let open = &CONNECTION_METRICS.open;
    [Protocol::Http1, Protocol::H2]
        .iter()
        .map(|&p| usize::try_from(open[p as usize].get()).unwrap_or(0))
        .sum()
}

/// QUIC endpoints still open (serving or draining); the drain waits for them.
pub fn open_quic_endpoints() -> usize {
    quic::open_endpoints()
}

/// Adds the services of one `[[listener]]`: its TCP door, and its QUIC door when it serves h3.
pub fn add_listener(
    server: &mut Server,
    proxy: &Arc<HttpProxy<Parapet>>,
    listener: &ListenerConfig,
    config: &Config,
    resolver: Option<Arc<SniResolver>>,
) {
    let limit = ConnectionLimit::new(listener.address, listener.max_connections);
    server.add_service(door_service(
        proxy,
        listener,
        config,
        &limit,
        resolver.clone(),
    ));
    if let (true, Some(resolver)) = (listener.h3, resolver) {
        server.add_service(quic::quic_service(
            listener,
            resolver,
            &config.http3,
            Arc::clone(proxy),
            limit,
        ));
    }
    tracing::info!(
        address = %listener.address,
        tls = listener.is_tls(),
        http1 = listener.http1,
        h2c = listener.h2c,
        h2 = listener.h2,
        h3 = listener.h3,
        "listening"
    );
}

/// The shared proxy behind one set of HTTP options.
struct HttpDoor {
    proxy: Arc<HttpProxy<Parapet>>,
    options: HttpServerOptions,
    h2_limits: Http2Limits,
}

#[async_trait]
impl HttpServerApp for HttpDoor {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.proxy.process_new_http(session, shutdown).await
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    fn h2_options(&self) -> Option<H2Options> {
        let limits = &self.h2_limits;
        let mut options = default_h2_options();
        options
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_list_size)
            .initial_window_size(limits.initial_stream_window)
            .initial_connection_window_size(limits.initial_connection_window);
        Some(options)
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await
    }
}

/// One listener's front door: takes the connection if the listener has room, tells h2c from
/// HTTP/1.1, counts the open connection, and serves HTTP/1.x with the client timeouts.
struct Door {
    http1: Arc<HttpDoor>,
    h2c: Option<Arc<HttpDoor>>,
    /// HTTP/1.x is served when the first bytes are not the h2 preface (false on an h2c-only
    /// listener, where they get GOAWAY(PROTOCOL_ERROR) instead, RFC 9113 §3.4).
    serves_http1: bool,
    limit: Arc<ConnectionLimit>,
    timeouts: ClientTimeouts,
}

impl Door {
    fn new(
        proxy: &Arc<HttpProxy<Parapet>>,
        listener: &ListenerConfig,
        h2_limits: &Http2Limits,
        limit: Arc<ConnectionLimit>,
        timeouts: ClientTimeouts,
    ) -> Self {
        let door = |h2c: bool| {
            let mut options = HttpServerOptions::default();
            options.h2c = h2c;
            options.h2_idle_timeout = timeouts.keepalive;
            Arc::new(HttpDoor {
                proxy: Arc::clone(proxy),
                options,
                h2_limits: h2_limits.clone(),
            })
        };
        Door {
            http1: door(false),
            h2c: listener.h2c.then(|| door(true)),
            serves_http1: listener.http1 || listener.is_tls(),
            limit,
            timeouts,
        }
    }
}

#[async_trait]
impl ServerApp for Door {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _slot = self.limit.enter()?;
        if let Some(h2c) = &self.h2c {
            match preface::read(&mut stream, self.timeouts.header).await {
                Preface::H2 => {
                    let _open = OpenConnection::count(Protocol::H2);
                    return h2c.process_new(stream, shutdown).await;
                }
                Preface::Http1 if self.serves_http1 => {}
                Preface::Invalid | Preface::Http1 => {
                    preface::refuse(&mut stream).await;
                    return None;
                }
                Preface::Gone => return None,
            }
        }
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            let _open = OpenConnection::count(Protocol::H2);
            return self.http1.process_new(stream, shutdown).await;
        }
        let _open = OpenConnection::count(Protocol::Http1);
        http1::serve(&self.http1, self.timeouts, stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.http1.http_cleanup().await
    }
}

/// Holds one connection in `parapet_downstream_open_connections` while it lives.
struct OpenConnection(Protocol);

impl OpenConnection {
    fn count(protocol: Protocol) -> Self {
        CONNECTION_METRICS.open[protocol as usize].inc();
        CONNECTION_METRICS.accepted[protocol as usize].inc();
        OpenConnection(protocol)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        CONNECTION_METRICS.open[self.0 as usize].dec();
    }
}

fn door_service(
    proxy: &Arc<HttpProxy<Parapet>>,
    listener: &ListenerConfig,
    config: &Config,
    limit: &Arc<ConnectionLimit>,
    resolver: Option<Arc<SniResolver>>,
) -> Service<Door> {
    let settings = &config.server;
    let timeouts = ClientTimeouts::new(settings.header_timeout, settings.keepalive_timeout);
    let door = Door::new(proxy, listener, &config.http2, Arc::clone(limit), timeouts);
    let mut service = Service::new(format!("listener {}", listener.address), door);
    let address = listener.address.to_string();
    match resolver {
        Some(resolver) => {
            service.add_tls_with_settings(&address, None, tls_settings(listener, resolver));
            service
                .endpoints()
                .set_pre_tls_callback(Arc::new(admission::BeforeTls {
                    limit: Arc::clone(limit),
                    header_timeout: settings.header_timeout,
                }));
        }
        None => service.add_listener(
            pingora::listeners::ListenerConfig::tcp(address).l4_buffer(plain_tcp_buffers()),
        ),
    }
    service
}

/// Socket buffering for cleartext listeners: no L4 read buffer. The HTTP/1 and h2 codecs
/// read into buffers of their own, so Pingora's default 64 KiB read buffer only adds a copy,
/// and an idle keep-alive connection kept it allocated. (TLS listeners keep the default: rustls
/// reads in small records, where the buffer saves system calls.)
fn plain_tcp_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

/// Counts completed TLS handshakes on TCP listeners.
struct HandshakeCounter;

#[async_trait]
impl TlsAccept for HandshakeCounter {
    async fn handshake_complete_callback(
        &self,
        _tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        TLS_METRICS.handshakes.inc();
        None
    }
}

/// TLS 1.2 and 1.3 with certificates chosen by SNI; ALPN offers h2 and/or http/1.1 as the
/// listener's protocols say.
fn tls_settings(listener: &ListenerConfig, resolver: Arc<SniResolver>) -> TlsSettings {
    let mut settings = TlsSettings::with_callbacks(Box::new(HandshakeCounter))
        .expect("TLS settings without files cannot fail");
    settings.set_cert_resolver(resolver);
    let alpn = match (listener.h2, listener.http1) {
        (true, true) => ALPN::H2H1,
        (true, false) => ALPN::H2,
        _ => ALPN::H1,
    };
    settings.set_alpn(alpn);
    settings
}
