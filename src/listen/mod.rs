//! Listeners and the process: builds the Pingora server with one shared `HttpProxy`, one
//! service per `[[listener]]` (its own protocol options), the health-check service, and the
//! drain on SIGTERM.
//!
//! Lifecycle: SIGTERM → Pingora stops accepting and closes idle keep-alive connections →
//! Pingora sleeps `grace_period` → runtimes stop → exit 0. The drain watcher ends that sleep
//! early, as soon as no request is in flight, so a stop takes as long as the slowest request.

mod quic;

use crate::access_log;
use crate::admin::Admin;
use crate::config::{Config, Http2Limits, ListenerConfig};
use crate::control::{self, Control};
use crate::metrics::{Protocol, METRICS};
use crate::proxy::{active_requests, Parapet, Runtime};
use crate::tls::{CertificateSet, SniResolver};
use crate::upstream::health::HealthSupervisor;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora::protocols::http::ServerSession;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const DRAIN_POLL_INTERVAL_MS: u64 = 20;
/// Runtimes get this long to stop once the drain is over.
const RUNTIME_SHUTDOWN_TIMEOUT_SECS: u64 = 1;
/// Longest wait for the access log to reach its file before exiting.
const LOG_FLUSH_TIMEOUT_MS: u64 = 500;

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

/// The HTTP/2 connection preface (RFC 9113 §3.4) that prior-knowledge h2c clients send first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One listener's front door: tells h2c from HTTP/1.1 and counts the open connection.
///
/// Pingora's own h2c detection waits for 24 bytes, so on an h2c port a shorter HTTP/1 request
/// (`GET / HTTP/1.0` plus an empty line is 18 bytes, and so is a malformed line) would hang
/// there. This door compares byte by byte and decides at the first byte that differs from the
/// preface, then keeps a keep-alive HTTP/1.1 connection on the HTTP/1 path without peeking again.
struct Door {
    http1: Arc<HttpDoor>,
    h2c: Option<Arc<HttpDoor>>,
}

impl Door {
    fn new(
        proxy: &Arc<HttpProxy<Parapet>>,
        listener: &ListenerConfig,
        h2_limits: &Http2Limits,
    ) -> Self {
        let door = |h2c: bool| {
            let mut options = HttpServerOptions::default();
            options.h2c = h2c;
            Arc::new(HttpDoor {
                proxy: Arc::clone(proxy),
                options,
                h2_limits: h2_limits.clone(),
            })
        };
        Door {
            http1: door(false),
            h2c: listener.h2c.then(|| door(true)),
        }
    }
}

/// True when the client starts with the h2 preface; `None` when it left before deciding.
async fn starts_with_h2_preface(stream: &mut Stream) -> Option<bool> {
    let mut seen = [0u8; H2_PREFACE.len()];
    for length in 1..=H2_PREFACE.len() {
        if !stream.try_peek(&mut seen[..length]).await.ok()? {
            return Some(false);
        }
        if seen[length - 1] != H2_PREFACE[length - 1] {
            return Some(false);
        }
    }
    Some(true)
}

#[async_trait]
impl ServerApp for Door {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if let Some(h2c) = &self.h2c {
            if starts_with_h2_preface(&mut stream).await? {
                let _open = OpenConnection::count(Protocol::H2);
                return h2c.process_new(stream, shutdown).await;
            }
        }
        let protocol = match stream.selected_alpn_proto() {
            Some(ALPN::H2) => Protocol::H2,
            _ => Protocol::Http1,
        };
        let _open = OpenConnection::count(protocol);
        let mut next = self.http1.process_new(stream, shutdown).await;
        while let Some(reused) = next {
            next = self.http1.process_new(reused, shutdown).await;
        }
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
        METRICS.downstream_open_connections[protocol as usize].inc();
        METRICS.downstream_connections[protocol as usize].inc();
        OpenConnection(protocol)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.downstream_open_connections[self.0 as usize].dec();
    }
}

fn server_conf(config: &Config) -> ServerConf {
    let pool_size: usize = config
        .upstreams
        .values()
        .map(|u| u.keepalive * u.servers.len())
        .sum();
    ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_TIMEOUT_SECS),
        upstream_keepalive_pool_size: pool_size.max(1),
        upgrade_sock: config.server.upgrade_socket.display().to_string(),
        ..ServerConf::default()
    }
}

fn door_service(
    proxy: &Arc<HttpProxy<Parapet>>,
    listener: &ListenerConfig,
    h2_limits: &Http2Limits,
    resolver: Option<Arc<SniResolver>>,
) -> Service<Door> {
    let door = Door::new(proxy, listener, h2_limits);
    let mut service = Service::new(format!("listener {}", listener.address), door);
    let address = listener.address.to_string();
    match resolver {
        Some(resolver) => {
            service.add_tls_with_settings(&address, None, tls_settings(listener, resolver))
        }
        None => service.add_tcp(&address),
    }
    service
}

/// Counts completed TLS handshakes on TCP listeners.
struct HandshakeCounter;

#[async_trait]
impl TlsAccept for HandshakeCounter {
    async fn handshake_complete_callback(
        &self,
        _tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        METRICS.tls_handshakes.inc();
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

/// One SNI resolver per TLS listener, keyed by address so a reload can swap certificates.
pub type Resolvers = HashMap<SocketAddr, Arc<SniResolver>>;

fn build_resolvers(config: &Config) -> Resolvers {
    config
        .listeners
        .iter()
        .filter(|l| l.is_tls())
        .map(|l| (l.address, Arc::new(SniResolver::new(certificate_set(l)))))
        .collect()
}

/// The SNI index of a listener's certificates.
pub fn certificate_set(listener: &ListenerConfig) -> CertificateSet {
    let loaded: Vec<_> = listener
        .certificates
        .iter()
        .map(|c| Arc::clone(&c.loaded))
        .collect();
    CertificateSet::new(&loaded)
}

/// Runs the proxy until it is stopped; `upgrade` takes the listening sockets over from a
/// running instance (SIGQUIT hand-over).
pub fn run(config: Config, upgrade: bool) -> ! {
    if let Err(e) = access_log::start(&config.access_log) {
        tracing::error!(error = %e, "cannot start the access log");
        std::process::exit(1);
    }
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let conf = server_conf(&config);
    METRICS
        .upstream_pool_size
        .set(i64::try_from(conf.upstream_keepalive_pool_size).unwrap_or(i64::MAX));
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::build(&config, None)));
    let upstreams = runtime.load().upstreams.values().cloned().collect();
    let health = Arc::new(HealthSupervisor::new(upstreams));
    let server_conf = Arc::clone(&server.configuration);
    let proxy = Arc::new(pingora::proxy::http_proxy(
        &server_conf,
        Parapet::new(Arc::clone(&runtime)),
    ));
    crate::tls::install_crypto_provider();
    crate::cache::init(&config.cache);
    let resolvers = build_resolvers(&config);
    for listener in &config.listeners {
        let resolver = resolvers.get(&listener.address).cloned();
        server.add_service(door_service(
            &proxy,
            listener,
            &config.http2,
            resolver.clone(),
        ));
        if let (true, Some(resolver)) = (listener.h3, resolver) {
            server.add_service(quic::quic_service(
                listener,
                resolver,
                &config.http3,
                Arc::clone(&proxy),
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
    let text = std::fs::read_to_string(&config.source).unwrap_or_default();
    control::record_loaded(&control::config_hash(&text));
    let admin = config.admin.clone();
    let control = Arc::new(Control::new(
        config,
        runtime,
        Arc::clone(&health),
        resolvers,
    ));
    if let Some(admin) = admin {
        let mut service = Service::new(
            "admin".to_string(),
            HttpServer::new_app(Admin::new(Arc::clone(&control))),
        );
        service.add_tcp(&admin.listen.to_string());
        server.add_service(service);
        tracing::info!(address = %admin.listen, "admin listening");
    }
    server.add_service(background_service("health checks", ArcHealth(health)));
    server.add_service(background_service("signals", Signals { control }));
    spawn_drain_watcher(&server);
    server.run_forever()
}

/// Lets the shared supervisor run as a Pingora background service.
struct ArcHealth(Arc<HealthSupervisor>);

#[async_trait]
impl BackgroundService for ArcHealth {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.start(shutdown).await
    }
}

/// SIGHUP reloads the config; SIGUSR1 reopens the access log (after rotation).
struct Signals {
    control: Arc<Control>,
}

#[async_trait]
impl BackgroundService for Signals {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut hangup), Ok(mut user1)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) else {
            tracing::error!(
                "cannot install SIGHUP/SIGUSR1 handlers; reload by signal is unavailable"
            );
            return;
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP received: reloading the config");
                    let _ = self.control.reload();
                }
                _ = user1.recv() => access_log::reopen(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Ends the grace period as soon as no request is in flight, after flushing the access log.
fn spawn_drain_watcher(server: &Server) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || {
        while let Ok(phase) = phases.blocking_recv() {
            match phase {
                ExecutionPhase::ShutdownGracePeriod => {
                    while active_requests() > 0 || quic::open_endpoints() > 0 {
                        std::thread::sleep(Duration::from_millis(DRAIN_POLL_INTERVAL_MS));
                    }
                    tracing::info!("all in-flight requests finished; exiting");
                    access_log::flush(Duration::from_millis(LOG_FLUSH_TIMEOUT_MS));
                    std::process::exit(0);
                }
                ExecutionPhase::ShutdownRuntimes => {
                    access_log::flush(Duration::from_millis(LOG_FLUSH_TIMEOUT_MS))
                }
                _ => {}
            }
        }
    });
}
