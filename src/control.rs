//! Reload: re-reads the config file, validates it whole, and swaps routes, upstreams, health
//! checks and certificates in one step while requests keep flowing. A bad file changes
//! nothing. Also the config's hash and the reload metrics.

use crate::config::{Config, ConfigError, ListenerConfig};
use crate::metrics::{counter_vec, gauge, gauge_vec};
use crate::proxy::Runtime;
use crate::tls::Resolvers;
use crate::upstream::health::HealthSupervisor;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

const RELOAD_OK: &str = "success";
const RELOAD_FAILED: &str = "failure";

/// Reloads and the config in force.
struct ConfigMetrics {
    reloads: IntCounterVec,
    info: IntGaugeVec,
    loaded_time: IntGauge,
}

static CONFIG_METRICS: LazyLock<ConfigMetrics> = LazyLock::new(|| ConfigMetrics {
    reloads: counter_vec(
        "config_reloads_total",
        "Config reloads, by result.",
        &["result"],
    ),
    info: gauge_vec(
        "config_info",
        "The running config's SHA-256 (first 16 hex digits); always 1.",
        &["hash"],
    ),
    loaded_time: gauge(
        "config_loaded_timestamp_seconds",
        "When the running config was loaded (Unix time).",
    ),
});

/// Registers the config metrics (at start).
pub fn register_metrics() {
    LazyLock::force(&CONFIG_METRICS);
}

/// What a reload did, for the log and the admin answer.
#[derive(Debug)]
pub struct ReloadReport {
    pub config_hash: String,
    /// Set when the new file changes listeners, which only an upgrade can apply.
    pub listeners_unchanged_note: Option<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}: cannot read the config file: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The running config and the handles a reload swaps.
pub struct Control {
    config_path: PathBuf,
    current: Mutex<Config>,
    runtime: Arc<ArcSwap<Runtime>>,
    health: Arc<HealthSupervisor>,
    resolvers: Resolvers,
}

/// Short SHA-256 of the config text, shown in metrics and reload answers.
pub fn config_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Records the loaded config's hash and time in metrics.
pub fn record_loaded(hash: &str) {
    CONFIG_METRICS.info.reset();
    CONFIG_METRICS.info.with_label_values(&[hash]).set(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CONFIG_METRICS
        .loaded_time
        .set(i64::try_from(now).unwrap_or(i64::MAX));
}

impl Control {
    pub fn new(
        config: Config,
        runtime: Arc<ArcSwap<Runtime>>,
        health: Arc<HealthSupervisor>,
        resolvers: Resolvers,
    ) -> Self {
        // Both series exist from the start at 0, so an alert on `increase()` sees the first
        // failed reload (a series that appears at 1 has no increase).
        for result in [RELOAD_OK, RELOAD_FAILED] {
            CONFIG_METRICS.reloads.with_label_values(&[result]);
        }
        Control {
            config_path: config.source.clone(),
            current: Mutex::new(config),
            runtime,
            health,
            resolvers,
        }
    }

    /// The routes and upstreams now in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The config now in force.
    pub fn current(&self) -> Config {
        self.current.lock().clone()
    }

    /// Loads and applies the config file again. On error nothing changes.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (config, hash) = match self.load() {
            Ok(loaded) => loaded,
            Err(e) => {
                CONFIG_METRICS
                    .reloads
                    .with_label_values(&[RELOAD_FAILED])
                    .inc();
                tracing::error!(error = %e, "config reload rejected; the running config stays");
                return Err(e);
            }
        };
        let mut current = self.current.lock();
        let note = listener_change_note(&current.listeners, &config.listeners);
        let old = self.runtime.load_full();
        let new = Runtime::build(&config, Some(&old));
        let upstreams: Vec<_> = new.upstreams.values().cloned().collect();
        forget_removed_servers(&old, &new);
        self.runtime.store(Arc::new(new));
        self.health.restart(&upstreams);
        self.replace_certificates(&config);
        *current = config;
        CONFIG_METRICS.reloads.with_label_values(&[RELOAD_OK]).inc();
        record_loaded(&hash);
        if let Some(note) = &note {
            tracing::warn!("{note}");
        }
        tracing::info!(config = %self.config_path.display(), hash = %hash, "config reloaded");
        Ok(ReloadReport {
            config_hash: hash,
            listeners_unchanged_note: note,
        })
    }
}

impl Control {
    /// The config file, read and validated, and its hash.
    fn load(&self) -> Result<(Config, String), ReloadError> {
        let text =
            std::fs::read_to_string(&self.config_path).map_err(|source| ReloadError::Read {
                path: self.config_path.clone(),
                source,
            })?;
        let config = Config::parse(&text, &self.config_path)?;
        config.log_warnings();
        Ok((config, config_hash(&text)))
    }

    /// New certificates for listeners that stay; a listener's TLS on/off needs an upgrade.
    fn replace_certificates(&self, config: &Config) {
        for listener in &config.listeners {
            if let Some(resolver) = self.resolvers.get(&listener.address) {
                if listener.is_tls() {
                    resolver.replace(listener.certificate_set());
                }
            }
        }
    }
}

fn listener_change_note(old: &[ListenerConfig], new: &[ListenerConfig]) -> Option<String> {
    let key = |l: &ListenerConfig| (l.address, l.http1, l.h2c, l.h2, l.h3, l.is_tls());
    let mut before: Vec<_> = old.iter().map(key).collect();
    let mut after: Vec<_> = new.iter().map(key).collect();
    before.sort();
    after.sort();
    (before != after).then(|| {
        "listener changes need a binary upgrade (SIGQUIT, then `parapet run --upgrade`); the listeners stay as they were"
            .to_string()
    })
}

fn forget_removed_servers(old: &Runtime, new: &Runtime) {
    for (name, upstream) in &old.upstreams {
        for server in &upstream.servers {
            let kept = new
                .upstreams
                .get(name)
                .is_some_and(|u| u.servers.iter().any(|s| Arc::ptr_eq(s, server)));
            if !kept {
                crate::upstream::metrics::ServerMetrics::forget(name, &server.address.to_string());
            }
        }
    }
}
