//! Listeners and the process: builds the Pingora server with one shared `HttpProxy`, one
//! service per `[[listener]]` (its own protocol options), the health-check service, and the
//! drain on SIGTERM.
//!
//! Lifecycle: SIGTERM → Pingora stops accepting and closes idle keep-alive connections →
//! Pingora sleeps `grace_period` → runtimes stop → exit 0. The drain watcher ends that sleep
//! early, as soon as no request is in flight, so a stop takes as long as the slowest request.

use crate::config::{Config, ListenerConfig};
use crate::proxy::{active_requests, Parapet, Runtime};
use crate::upstream::health::ActiveHealthChecks;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server, ShutdownWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

const DRAIN_POLL_INTERVAL_MS: u64 = 20;
/// Runtimes get this long to stop once the drain is over.
const RUNTIME_SHUTDOWN_TIMEOUT_SECS: u64 = 1;
const UPGRADE_SOCKET: &str = "/tmp/parapet_upgrade.sock";

/// One front door: a listener's protocol options in front of the shared proxy.
struct Door {
    proxy: Arc<HttpProxy<Parapet>>,
    options: HttpServerOptions,
}

#[async_trait]
impl HttpServerApp for Door {
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

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await
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
        upgrade_sock: UPGRADE_SOCKET.to_string(),
        ..ServerConf::default()
    }
}

fn door_service(proxy: &Arc<HttpProxy<Parapet>>, listener: &ListenerConfig) -> Service<Door> {
    let mut options = HttpServerOptions::default();
    options.h2c = listener.h2c;
    let door = Door {
        proxy: Arc::clone(proxy),
        options,
    };
    let mut service = Service::new(format!("listener {}", listener.address), door);
    service.add_tcp(&listener.address.to_string());
    service
}

/// Runs the proxy until it is stopped; `upgrade` takes the listening sockets over from a
/// running instance (SIGQUIT hand-over).
pub fn run(config: Config, upgrade: bool) -> ! {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();

    let runtime = Runtime::build(&config, None);
    let upstreams = runtime.upstreams.values().cloned().collect();
    let server_conf = Arc::clone(&server.configuration);
    let proxy = Arc::new(pingora::proxy::http_proxy(
        &server_conf,
        Parapet::new(runtime),
    ));
    for listener in &config.listeners {
        server.add_service(door_service(&proxy, listener));
        tracing::info!(address = %listener.address, http1 = listener.http1, h2c = listener.h2c, "listening");
    }
    server.add_service(background_service(
        "health checks",
        ActiveHealthChecks::new(upstreams),
    ));
    spawn_drain_watcher(&server);
    server.run_forever()
}

/// Ends the grace period as soon as no request is in flight.
fn spawn_drain_watcher(server: &Server) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || {
        while let Ok(phase) = phases.blocking_recv() {
            if matches!(phase, ExecutionPhase::ShutdownGracePeriod) {
                while active_requests() > 0 {
                    std::thread::sleep(Duration::from_millis(DRAIN_POLL_INTERVAL_MS));
                }
                tracing::info!("all in-flight requests finished; exiting");
                std::process::exit(0);
            }
        }
    });
}
