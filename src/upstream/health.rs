//! Active health checks: one background loop per server of every upstream that has a
//! `[upstream.NAME.health_check]`, probing with Pingora's HTTP or TCP check and flipping the
//! server's state after `healthy` / `unhealthy` consecutive results.

use super::{FailureKind, ServerState, StateChange, Upstream};
use crate::config::{HealthCheckConfig, HealthCheckKind};
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::{Arc, OnceLock};
use tokio::task::JoinSet;

/// Runs the probe loops and replaces them all when the config is reloaded. Server state
/// (and so health) is kept across reloads; only the consecutive-result streaks restart.
pub struct HealthSupervisor {
    initial: Vec<Arc<Upstream>>,
    runtime: OnceLock<tokio::runtime::Handle>,
    loops: Mutex<JoinSet<()>>,
}

impl HealthSupervisor {
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        HealthSupervisor {
            initial: upstreams,
            runtime: OnceLock::new(),
            loops: Mutex::new(JoinSet::new()),
        }
    }

    /// Stops every probe loop and starts one per server of `upstreams` that has a check.
    pub fn restart(&self, upstreams: &[Arc<Upstream>]) {
        let Some(runtime) = self.runtime.get() else {
            return;
        };
        let mut loops = self.loops.lock();
        loops.abort_all();
        *loops = JoinSet::new();
        for upstream in upstreams {
            let Some(check) = &upstream.config.health_check else {
                continue;
            };
            for server in &upstream.servers {
                loops.spawn_on(probe_loop(Arc::clone(server), check.clone()), runtime);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthSupervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        self.restart(&self.initial);
        let _ = shutdown.changed().await;
        self.loops.lock().abort_all();
    }
}

/// Consecutive results of one kind, reset when the other kind arrives.
#[derive(Debug, Default)]
struct Streak {
    passes: u32,
    failures: u32,
}

impl Streak {
    /// Records a result; returns the new verdict once a threshold is crossed.
    fn observe(&mut self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.passes += 1;
            (self.passes >= config.healthy).then_some(true)
        } else {
            self.passes = 0;
            self.failures += 1;
            (self.failures >= config.unhealthy).then_some(false)
        }
    }
}

async fn probe_loop(server: Arc<ServerState>, config: HealthCheckConfig) {
    let probe = build_probe(&server, &config);
    let Ok(backend) = Backend::new(&server.address.to_string()) else {
        return;
    };
    let mut streak = Streak::default();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let outcome = tokio::time::timeout(config.timeout, probe.check(&backend)).await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(super::failure_reason(&e)),
            Err(_) => Some(format!(
                "no answer within {}",
                humantime::format_duration(config.timeout)
            )),
        };
        let passed = failure.is_none();
        if let Some(reason) = failure {
            tracing::debug!(upstream = %server.upstream, server = %server.address, reason, "health check failed");
            server.note_failure(FailureKind::Active, reason);
        }
        match streak.observe(passed, &config) {
            Some(true) => server.set_active_up(true, StateChange::ActiveCheckPassed),
            Some(false) => server.set_active_up(false, StateChange::ActiveCheckFailed),
            None => {}
        }
    }
}

fn build_probe(
    server: &ServerState,
    config: &HealthCheckConfig,
) -> Box<dyn HealthCheck + Send + Sync> {
    match &config.kind {
        HealthCheckKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.peer_template.options.connection_timeout = Some(config.timeout);
            check
        }
        HealthCheckKind::Http {
            path,
            expect_status,
            host,
        } => {
            let host = host.clone().unwrap_or_else(|| server.address.to_string());
            let mut check = HttpHealthCheck::new(&host, false);
            check.req.set_uri(
                http::Uri::try_from(path.as_str()).unwrap_or_else(|_| http::Uri::from_static("/")),
            );
            check.peer_template.options.connection_timeout = Some(config.timeout);
            check.peer_template.options.read_timeout = Some(config.timeout);
            let expected = *expect_status;
            check.validator = Some(Box::new(move |response| {
                if response.status.as_u16() == expected {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode(
                            "unexpected health check status",
                            response.status.as_u16(),
                        ),
                        format!("expected {expected}"),
                    )
                }
            }));
            Box::new(check)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(healthy: u32, unhealthy: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            kind: HealthCheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy,
            unhealthy,
        }
    }

    #[test]
    fn verdicts_need_consecutive_results() {
        let config = config(2, 3);
        let mut streak = Streak::default();
        assert_eq!(streak.observe(false, &config), None);
        assert_eq!(streak.observe(false, &config), None);
        assert_eq!(streak.observe(true, &config), None);
        assert_eq!(streak.observe(false, &config), None);
        assert_eq!(streak.observe(false, &config), None);
        assert_eq!(streak.observe(false, &config), Some(false));
        assert_eq!(streak.observe(true, &config), None);
        assert_eq!(streak.observe(true, &config), Some(true));
    }
}
