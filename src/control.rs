//! Reload: re-reads the config file, validates it whole, and swaps routes, upstreams, health
//! checks and certificates in one step while requests keep flowing. A bad file changes
//! nothing. Also the config's hash and the reload metrics.

use crate::config::start_only::{self, Pending};
use crate::config::{Config, ConfigError};
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
    /// Start-only settings the file changes, still at their running values.
    pub pending_upgrade: Vec<Pending>,
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
    /// The config in force: the file's as of the last reload, start-only settings as started.
    current: Mutex<InForce>,
    runtime: Arc<ArcSwap<Runtime>>,
    health: Arc<HealthSupervisor>,
    resolvers: Resolvers,
}

/// The config in force and what the file changed that waits for an upgrade.
#[derive(Clone)]
pub struct InForce {
    pub config: Config,
    pub pending_upgrade: Vec<Pending>,
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
            current: Mutex::new(InForce {
                config,
                pending_upgrade: Vec::new(),
            }),
            runtime,
            health,
            resolvers,
        }
    }

    /// The routes and upstreams now in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The `[admin]` settings now in force.
    pub fn admin(&self) -> Option<crate::config::AdminConfig> {
        self.current.lock().config.admin.clone()
    }

    /// The config now in force, with the file's changes that wait for an upgrade.
    pub fn in_force(&self) -> InForce {
        self.current.lock().clone()
    }

    /// Loads and applies the config file again. On error nothing changes.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (file_config, hash) = match self.load() {
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
        let (config, pending_upgrade) = start_only::apply_reload(&current.config, file_config);
        let old = self.runtime.load_full();
        let new = Runtime::build(&config, Some(&old));
        let upstreams: Vec<_> = new.upstreams.values().cloned().collect();
        forget_removed_servers(&old, &new);
        self.runtime.store(Arc::new(new));
        self.health.restart(&upstreams);
        self.replace_certificates(&config);
        *current = InForce {
            config,
            pending_upgrade: pending_upgrade.clone(),
        };
        CONFIG_METRICS.reloads.with_label_values(&[RELOAD_OK]).inc();
        record_loaded(&hash);
        for pending in &pending_upgrade {
            tracing::warn!("{}", pending.describe());
        }
        tracing::info!(config = %self.config_path.display(), hash = %hash, "config reloaded");
        Ok(ReloadReport {
            config_hash: hash,
            pending_upgrade,
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
