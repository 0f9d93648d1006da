//! The process: builds the Pingora server with one shared proxy, the listeners' services, the
//! admin listener, health checks and signal handling, and ends the drain early.
//!
//! The drain (SIGTERM; SIGQUIT once the sockets are handed over): Pingora stops accepting; a
//! request in flight finishes, and its HTTP/1.1 response says `Connection: close`; an idle
//! HTTP/1.1 keep-alive connection is served if a request arrives within
//! [`DRAIN_IDLE_GRACE`] (with `Connection: close`), else closed, so a client is never cut off
//! while it writes its next request; HTTP/2 and HTTP/3 connections get GOAWAY with the last
//! stream id and close once their streams are done. Pingora then sleeps `grace_period`; the
//! drain watcher ends that sleep as soon as no request, client connection or QUIC endpoint is
//! left, so a stop takes as long as the slowest request, or the idle grace.

use crate::access_log;
use crate::admin::Admin;
use crate::config::Config;
use crate::control::{self, Control};
use crate::proxy::{active_requests, Parapet, Runtime};
use crate::tls::{Resolvers, SniResolver};
use crate::upstream::health::HealthSupervisor;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

const DRAIN_POLL_INTERVAL_MS: u64 = 20;
/// During a drain, how long an idle HTTP/1.1 keep-alive connection is kept for a request its
/// client may already be sending, before it is closed.
pub const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);
/// Runtimes get this long to stop once the drain is over.
const RUNTIME_SHUTDOWN_TIMEOUT_SECS: u64 = 1;
/// Longest wait for the access log to reach its file before exiting.
const LOG_FLUSH_TIMEOUT_MS: u64 = 500;

/// Runs the proxy until it is stopped; `upgrade` takes the listening sockets over from a
/// running instance (SIGQUIT hand-over).
pub fn run(config: Config, upgrade: bool) -> ! {
    // Pingora retries a taken port for half a minute and then panics in the listener's thread,
    // leaving a process that serves nothing; on a fresh start a taken port is a config error.
    // An upgrade takes the sockets from the old process, which still holds them.
    if !upgrade {
        if let Err(taken) = crate::bind_check::addresses_free(&config) {
            eprintln!("{taken}");
            std::process::exit(1);
        }
    }
    if let Err(e) = access_log::start(&config.access_log) {
        tracing::error!(error = %e, "cannot start the access log");
        std::process::exit(1);
    }
    register_metrics();
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let conf = server_conf(&config);
    crate::upstream::metrics::set_pool_size(conf.upstream_keepalive_pool_size);
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::build(&config, None)));
    let upstreams = runtime.load().upstreams.values().cloned().collect();
    let health = Arc::new(HealthSupervisor::new(upstreams));
    let server_conf = Arc::clone(&server.configuration);
    let mut proxy = pingora::proxy::http_proxy(&server_conf, Parapet::new(Arc::clone(&runtime)));
    // CONNECT reaches the proxy's phases, which refuse it in Parapet's own words (and log it)
    // instead of Pingora's bare 405.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.allow_connect_method_proxying = true;
    options.shutdown_idle_grace = Some(DRAIN_IDLE_GRACE);
    proxy.server_options = Some(options);
    let proxy = Arc::new(proxy);
    crate::tls::install_crypto_provider();
    crate::cache::init(&config.cache);
    let resolvers = build_resolvers(&config);
    for listener in &config.listeners {
        let resolver = resolvers.get(&listener.address).cloned();
        crate::listen::add_listener(&mut server, &proxy, listener, &config, resolver);
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
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::signals::ShutdownSignals),
    });
    std::process::exit(0)
}

/// Registers every metric family at start, so `/metrics` shows them all before any traffic.
fn register_metrics() {
    crate::metrics::register_process_metrics();
    crate::proxy::register_metrics();
    crate::listen::register_metrics();
    crate::tls::register_metrics();
    crate::upstream::metrics::register();
    crate::control::register_metrics();
    crate::access_log::register_metrics();
    crate::admin::register_metrics();
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

/// One SNI resolver per TLS listener, keyed by address so a reload can swap certificates.
fn build_resolvers(config: &Config) -> Resolvers {
    config
        .listeners
        .iter()
        .filter(|l| l.is_tls())
        .map(|l| (l.address, Arc::new(SniResolver::new(l.certificate_set()))))
        .collect()
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
        if crate::signals::arrived_early(signal_hook::consts::SIGHUP) {
            self.reload();
        }
        if crate::signals::arrived_early(signal_hook::consts::SIGUSR1) {
            access_log::reopen();
        }
        loop {
            tokio::select! {
                _ = hangup.recv() => self.reload(),
                _ = user1.recv() => access_log::reopen(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Signals {
    fn reload(&self) {
        tracing::info!("SIGHUP received: reloading the config");
        let _ = self.control.reload();
    }
}

/// Ends the grace period as soon as nothing is left to drain, after flushing the access log.
fn spawn_drain_watcher(server: &Server) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || {
        while let Ok(phase) = phases.blocking_recv() {
            match phase {
                ExecutionPhase::ShutdownGracePeriod => {
                    while active_requests() > 0
                        || crate::listen::open_client_connections() > 0
                        || crate::listen::open_quic_endpoints() > 0
                    {
                        std::thread::sleep(Duration::from_millis(DRAIN_POLL_INTERVAL_MS));
                    }
                    tracing::info!("drained: no request or client connection left; exiting");
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
